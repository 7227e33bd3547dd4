"""Each recovered row's first-order error bound: the certificate of ``found_``.

A row's column-space misfit (:mod:`skrecon._misfit`) vanishes at a sample,
but its size does not bound the row's error: a row that blends two
near-duplicate samples (1e-4 apart) has a misfit of order (error x
separation)^2, at round-off for errors of 1e-5 (16 digits and 4
near-duplicates, float64, tanh: 3 to 4 rows 2e-5 to 1.1e-4 off at misfits
below 1e-20, flagged found). What bounds the error is the misfit's
*Jacobian*: along the directions it barely sees (the difference of a
near-duplicate pair: singular value of order separation^2) the residual
still to be explained and the residual's own scatter move the row by
``(u_k . r) / sigma_k`` and ``s / sigma_k``.

For the row ``v`` (span coordinates) with its own best signal ``u``
(:func:`skrecon._misfit.best_signal`, not the joint fit's: a batch fit with
a wrong row spreads the missing sample's signal over every row's ``u``, and
float32 sigmoid at trained weights, B = 32, certified none of the 28 rows
within 1e-4 from the joint signals, 14 from their own, none wrong), the
residual ``r = (I - Q Q^T) g``, ``g = S(v) u / ||S(v) u||``, and its
Jacobian ``J`` (``m x
(B + K)``, restricted to the directions that change the row: the bias
coordinate held, and ``u`` off its own scale) have singular triplets
``(u_k, sigma_k, w_k)``; each ``sigma_k`` is floored at ``n eps sigma_1`` (a
direction ``J`` does not see is as loose as the round-off allows, not
dropped as a pseudo-inverse would). With ``M`` the first-order map from span
to input coordinates and ``c_k = ||M w_k||^2 / sigma_k^2``, the row's bound
is ``sqrt(sum_k c_k (u_k . r)^2) + 5 s sqrt(sum_k c_k)`` over its norm: the
Gauss-Newton step still to go (to the row's own least-squares point) and
five standard errors of a residual of ``r``'s scatter, ``s^2 = ||r||^2 /
(m - B - n_unknowns)``. Measured (float64 tanh, 16 digits and 4
near-duplicates 1e-4 apart, seeds 0 and 2): on exact rows the step still to
go equals the error (1e-10 to 3e-8; the standard error is 0.1-0.2 of it),
on the blended rows (errors 1.8e-5 to 1.1e-4) it is 0.7 to 3.8 times the
error; float32 sigmoid at trained weights (B = 16): the standard error is
0.6 to 2.2 times the error, the step 0.5 to 5.7 times (the fit of the whole
gradient is closer to the samples than each row's own least-squares point),
bounds 3.5 to 17 times the errors. The FedAvg reconstruction certifies its
rows from the same triplets (:func:`skrecon.fedavg.reconstruct_update`).

The bound of the whole gradient model (all samples and signals at once,
one ``B (B + K)`` square normal matrix) was tried first: on the same
near-duplicate batch it bounded the blended rows by 3e-9 (a wrong basin of
the whole fit is pinned locally; each row's own misfit is not), and it
costs ``(B (B + K))^3``; per row this costs ``m (B + K)^2`` (B = 64, K = 10,
1024 neurons: 0.3 s for all rows; B = 128: 1.3 s, on a loaded machine).

The misfit treats the gradient's column space as exact; its scatter, a
round-off or noise that tilts it, shows in ``r`` (its part that no step of
the row explains), so ``s`` carries it. A piecewise-linear activation has
``sigma'' = 0``: its rows are pinned by the linear part of the model, not
by the misfit, and are certified elsewhere (:mod:`skrecon._pattern_polish`).
"""

import numpy as np
from scipy import linalg

from ._misfit import Slopes, best_signal, misfit_and_jacobian, orth

__all__ = ["STANDARD_ERRORS", "row_error_bounds"]

# a row is pinned when the step still to go and this many standard errors
# lie within the stated precision (five, as the FedAvg rows and the float32
# two-slope rows)
STANDARD_ERRORS = 5.0
# the certificate's neurons: all of them up to this many, or 16 per unknown
# of a row (a subset only widens the bounds, by about the square root of
# the ratio; the cost grows as neurons x (B + K)^2 per row)
_MAX_ROWS = 2048
_ROWS_PER_UNKNOWN = 16


def _complement(e):
    """Orthonormal basis ``(n, n - 1)`` of the complement of the vector ``e``."""
    q = linalg.qr(e.reshape(-1, 1), mode="full")[0]
    return q[:, 1:]


def _input_grams(V, basis, column_scale, bias):
    """Per row, ``M_i^T M_i`` (``(B, n, n)``) for the first-order map ``M_i``
    from a step of row ``i`` (span coordinates) to its step in input
    coordinates, and the rows' norms in input coordinates."""
    L = basis / column_scale[:, None]  # x_aug = L v
    x_aug = V @ L.T
    if not bias:
        G = L.T @ L
        return np.broadcast_to(G, (len(V),) + G.shape), np.linalg.norm(x_aug, axis=1)
    Lp, l = L[:-1], L[-1]
    a = x_aug[:, -1]
    with np.errstate(all="ignore"):
        X = x_aug[:, :-1] / a[:, None]
    # x = x_aug[:-1] / a: M = (L' - x l^T) / a
    C = X @ Lp  # (B, n): L'^T x_i
    G = (Lp.T @ Lp)[None] - C[:, :, None] * l[None, None, :] \
        - l[None, :, None] * C[:, None, :] \
        + np.sum(X * X, axis=1)[:, None, None] * np.outer(l, l)[None]
    return G / (a ** 2)[:, None, None], np.linalg.norm(X, axis=1)


def _triplets(J, T, r):
    """Singular values ``sigma_k`` (decreasing) of ``J T``, its right
    singular vectors (columns) and ``u_k . r``; ``None``s for a zero ``J``.

    From the Gram matrix ``T^T J^T J T`` (its eigenvalues carry an error of
    about ``eps sigma_1^2``): several times cheaper than a singular value
    decomposition of the ``m x n`` matrix, and as accurate where ``sigma_min /
    sigma_1 > 1e-4``; below, the decomposition itself (near-duplicate rows)."""
    H = T.T @ (J.T @ J) @ T
    lam, vec = linalg.eigh(H, check_finite=False)
    lam, vec = lam[::-1], vec[:, ::-1]
    if not lam[0] > 0:
        return None, None, None
    if lam[-1] > 1e-8 * lam[0]:
        sigma = np.sqrt(lam)
        return sigma, vec, (vec.T @ (T.T @ (J.T @ r))) / sigma
    left, sigma, right_t = np.linalg.svd(J @ T, full_matrices=False)
    return sigma, right_t.T, left.T @ r


def row_error_bounds(V, P, Omega, A, activation, bias_mean, *, basis, column_scale, bias,
                     fixed, scale_free=False, random_state=None):
    """Each row's first-order relative error bound (the step still to go and
    five standard errors).

    Parameters
    ----------
    V : ndarray of shape (B, n)
        The rows in span coordinates (each row's signal is its own best one
        given the row).
    P, Omega, A : ndarray of shape (m, n), (m, n) and (m, K)
        The projected gradient, weights and output weights (host).
    activation : Activation
        A smooth activation (``sigma''`` nonzero).
    bias_mean : float
    basis, column_scale : ndarray of shape (n_aug, n) and (n_aug,)
        The span's scaled basis and the column scales: ``x_aug = basis v /
        column_scale``.
    bias : bool
        Whether the last input coordinate is the bias input (held at 1).
    fixed : tuple or None
        ``(e, c)``: every row meets ``e . v = c`` (the bias input).
    scale_free : bool, default=False
        Without a bias, whether a row's norm is unidentified (scale-free
        ``sigma'``): its error is then measured off its own direction.
    random_state : numpy.random.Generator or None
        Draws the neuron subset above ``max(2048, 16 (n + K))`` neurons.

    Returns
    -------
    bounds : ndarray of shape (B,)
        Relative error bounds in input coordinates, ``(step still to go +
        5 standard errors) / ||x_i||`` (``inf`` where the row's slopes
        vanish).
    """
    B, n = V.shape
    m, K = A.shape
    n_rows = max(_MAX_ROWS, _ROWS_PER_UNKNOWN * (n + K))
    if m > n_rows:
        rng = np.random.default_rng(0) if random_state is None else random_state
        keep = np.sort(rng.choice(m, n_rows, replace=False))
        P, Omega, A, m = P[keep], Omega[keep], A[keep], n_rows
    Q = orth(P)
    slopes = Slopes(activation)
    Tv_fixed = None if fixed is None else _complement(np.asarray(fixed[0], dtype=float))
    grams, norms = _input_grams(V, basis, column_scale, bias)
    eps = np.finfo(float).eps
    bounds = np.full(B, np.inf)
    for i in range(B):
        v = V[i]
        u = np.ones(1) if K == 1 else best_signal(v, Q, Omega, A, slopes, bias_mean)
        if u is None:
            continue
        out = misfit_and_jacobian(v, u, Q, Omega, A, slopes, bias_mean)
        if out is None or not (norms[i] > 0 and np.isfinite(norms[i])):
            continue
        r, J = out
        if Tv_fixed is not None:
            Tv = Tv_fixed
        elif scale_free:
            Tv = _complement(v)
        else:
            Tv = np.eye(n)
        T = Tv if K == 1 else linalg.block_diag(Tv, _complement(u))
        if not np.all(np.isfinite(J)):
            continue
        if Tv.shape[1] == 0:  # one span dimension, held by the bias input
            bounds[i] = 0.0
            continue
        sigma, right, step = _triplets(J, T, r)
        if sigma is None:
            continue
        sigma = np.maximum(sigma, len(sigma) * eps * sigma[0])
        # per direction k, in the row's input coordinates (weight ||M w_k||^2):
        # the Gauss-Newton step still to go, (u_k . r) / sigma_k, and the
        # standard error of a residual of r's scatter, s / sigma_k
        s2 = float(r @ r) / max(m - Q.shape[1] - len(sigma), 1)
        W = Tv @ right[:Tv.shape[1]]  # (n, n_dirs): the v part of each w_k
        weight = np.sum(W * (grams[i] @ W), axis=0) / sigma ** 2
        to_go = np.sqrt(max(float(np.sum(weight * step ** 2)), 0.0))
        standard_error = np.sqrt(max(float(np.sum(weight)) * s2, 0.0))
        bounds[i] = (to_go + STANDARD_ERRORS * standard_error) / norms[i]
    return bounds
