"""Sample-by-sample hyperplane search for piecewise-linear activations.

For ReLU or leaky ReLU ``sigma'`` is piecewise constant, so the Jacobian of
the gradient model carries no information about where a sample's activation
boundary lies and a joint Gauss-Newton refinement stalls far from the
solution. This module finds the samples one at a time instead, through a
property that holds for each sample separately.

With ``z_i`` the ``i``-th column of ``V^{-1}`` (so ``v_k . z_i = delta_ki``)
the model ``P = sum_k diag(s_k) A u_k v_k^T`` gives

    P z_i = s_i * (A u_i),    s_i = sigma'(Omega v_i + b0)  (elementwise),

so the column space of ``P`` contains ``diag(s(v)) A u`` for ``v = v_i``. The
search minimises over ``v`` the misfit

    f(v) = 1 - max_u cos^2(angle(diag(s(v)) A u, col(P))),

whose zeros are exactly the samples (generically). Each sample is a global
minimum, and its basin is wide once ``sigma'`` is replaced by a smoothed
``sigma'_h`` (each jump a logistic step of width ``h``); ``h`` shrinks
geometrically from a fraction of the pre-activation's spread, and BFGS
minimises at each width. A sample found is deflated by restricting ``z`` to
``{z : v . z = 0}`` for the samples already found (the other columns of
``V^{-1}`` satisfy this), which removes its zero from the next searches.

The samples come out accurate to about 0.1 degree; the margin-trimmed
:func:`skrecon.refine.pattern_iteration` then makes them exact (it also
recovers a sample that the search missed, from the others).
"""

import numpy as np
from scipy import linalg, optimize
from scipy.special import expit

# smoothing widths, as fractions of each sample's pre-activation std;
# the coarse stages (width >= _COARSE) run on the row subset
_WIDTHS = (0.3, 0.1, 0.03, 0.01, 0.003)
_COARSE = 0.03
_BFGS_ITER = 100
# a search that ends this close (degrees) to a sample found is dropped
_DUPLICATE_ANGLE = 1.0
# a search is accepted when its (undeflated, unsmoothed) misfit is below
# this: about a degree from a sample, inside the basin of the finishing step
_ACCEPT = 1e-2


def _jumps(activation):
    """``sigma'`` left of the first kink, and the jump of ``sigma'`` at each kink."""
    kinks = np.sort(np.asarray(activation.kinks, dtype=float))
    base = float(activation.derivative(np.array([kinks[0] - 1.0]), 1)[0])
    jumps = [float(activation.derivative(np.array([k + 1e-9]), 1)[0]
                   - activation.derivative(np.array([k - 1e-9]), 1)[0]) for k in kinks]
    return base, kinks, np.array(jumps)


def _smoothed_slope(t, h, jumps):
    """``sigma'_h(t)`` and its derivative (``h = 0``: the exact step, derivative 0).

    Each jump of ``sigma'`` is smoothed by a logistic step of width ``h``.
    """
    base, kinks, heights = jumps
    s = np.full_like(t, base)
    ds = np.zeros_like(t)
    for kink, jump in zip(kinks, heights):
        if h > 0:
            step = expit((t - kink) / h)
            s += jump * step
            ds += (jump / h) * step * (1.0 - step)
        else:
            s += jump * (t > kink)
    return s, ds


def _misfit(v, h, Q, Omega, A, bias_mean, jumps):
    """``f(v)`` and its gradient in ``v`` (envelope theorem for the best ``u``)."""
    s, ds = _smoothed_slope(Omega @ v + bias_mean, h, jumps)
    As = s[:, None] * A
    Qs, R = np.linalg.qr(As)
    _, sv, right_t = np.linalg.svd(Q.T @ Qs, full_matrices=False)
    rho = sv[0] ** 2
    g = Qs @ right_t[0]  # unit vector s * (A u*), the best fit
    try:
        Au = A @ linalg.solve_triangular(R, right_t[0], check_finite=False)
    except (linalg.LinAlgError, ValueError):
        return 1.0, np.zeros_like(v)
    proj = Q @ (Q.T @ g)
    grad = -2.0 * Omega.T @ (ds * Au * (proj - rho * g))
    return 1.0 - rho, grad


def _search_one(v, Q_all, Q_sub, proj, sub, jumps, tangent, widths):
    """Minimise the misfit from ``v``, smoothed at each of the ``widths`` in turn."""
    Omega, A, b0 = proj
    for width in widths if tangent.shape[1] else ():
        if width >= _COARSE:
            Q, om, a = Q_sub, Omega[sub], A[sub]
        else:
            Q, om, a = Q_all, Omega, A
        h = width * np.std(om @ v + b0)
        if not (np.isfinite(h) and h > 0):
            break
        v0 = v

        def fun(w):
            value, grad = _misfit(v0 + tangent @ w, h, Q, om, a, b0, jumps)
            return value, tangent.T @ grad

        res = optimize.minimize(fun, np.zeros(tangent.shape[1]), jac=True,
                                method="BFGS", options={"maxiter": _BFGS_ITER})
        v = v0 + tangent @ res.x
    return v


def _column_basis(P, found):
    """Orthonormal basis of ``{P z : v . z = 0 for v in found}``."""
    Z = linalg.null_space(np.array(found)) if found else np.eye(P.shape[1])
    Q, _ = np.linalg.qr(P @ Z)
    return Q


def search_samples(starts, P, Omega, A, activation, bias_mean=0.0, *, fixed=None,
                   rows=None):
    """Samples of a piecewise-linear network, found one at a time.

    Starts whose misfit is already below the acceptance level (the samples
    kept from an earlier refinement, when one of them is re-seeded) are
    only polished at the fine widths, and deflated first; the other starts
    are searched over the whole schedule, in order, until ``n_dims``
    samples are found.

    Parameters
    ----------
    starts : ndarray of shape (n_starts, n_dims)
        Starting points (e.g. the rows of a tensor estimate).
    P, Omega, A, activation, bias_mean, fixed
        As for :func:`skrecon.refine.levenberg_marquardt`.
    rows : ndarray of int or None, default=None
        Neurons used by the coarse (wide-smoothing) stages; all neurons are
        used by the fine stages.

    Returns
    -------
    V : ndarray of shape (n_dims, n_dims)
        The samples found, completed (when fewer than ``n_dims`` searches
        succeed, or there are fewer starts) by the starts farthest from them.
    misfits : ndarray of shape (n_dims,)
        ``f(v)`` of each returned row, at the exact activation and without
        deflation (for a completing start: its value at the start).
    """
    n_dims = P.shape[1]
    jumps = _jumps(activation)
    sub = np.arange(len(P)) if rows is None else np.asarray(rows)
    starts = np.array(starts, dtype=float)
    if fixed is not None:
        e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
        tangent = linalg.null_space(e[None, :])
        starts += np.outer(c - starts @ e, e) / (e @ e)
    else:
        tangent = np.eye(n_dims)
    Q_full = _column_basis(P, [])

    def misfit(v):
        return _misfit(v, 0.0, Q_full, Omega, A, bias_mean, jumps)[0]

    initial = np.array([misfit(v) if np.all(np.isfinite(v)) else np.inf
                        for v in starts])
    order = np.argsort(initial, kind="stable")
    accurate = order[initial[order] < _ACCEPT]
    rest = np.sort(order[~(initial[order] < _ACCEPT)])
    found, misfits = [], []
    for idx in np.concatenate([accurate, rest]).astype(int):
        if len(found) == n_dims:
            break
        widths = [w for w in _WIDTHS if initial[idx] >= _ACCEPT or w < _COARSE]
        v = _search_one(starts[idx], _column_basis(P, found),
                        _column_basis(P[sub], found), (Omega, A, bias_mean), sub,
                        jumps, tangent, widths)
        if not np.all(np.isfinite(v)):
            continue
        value = misfit(v)
        if not value < _ACCEPT:
            continue
        if found:
            cos = (np.array(found) @ v / np.linalg.norm(found, axis=1)
                   / np.linalg.norm(v))
            if np.max(cos) > np.cos(np.radians(_DUPLICATE_ANGLE)):
                continue
        found.append(v)
        misfits.append(value)
    if len(found) < n_dims and len(starts):
        unit = starts / np.linalg.norm(starts, axis=1, keepdims=True)
        closeness = (np.max(np.abs(unit @ np.array(found).T
                                   / np.linalg.norm(found, axis=1)), axis=1)
                     if found else np.zeros(len(starts)))
        for idx in np.argsort(closeness, kind="stable")[:n_dims - len(found)]:
            found.append(starts[idx])
            misfits.append(initial[idx])
    return np.array(found).reshape(-1, n_dims), np.array(misfits)
