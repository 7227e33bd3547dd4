"""Levenberg-Marquardt refinement of the exact gradient model (:ref:`theory-f7`).

In span coordinates the gradient row of neuron ``j`` is exactly

    p_j = sum_i (a_j . u_i) sigma'(omega_j . v_i + b0) v_i

with ``v_i`` the ``i``-th sample (scaled, in the span), ``u_i`` its
back-propagated signal, ``omega_j`` the neuron's weights in the same
coordinates, ``a_j`` its output weights and ``b0`` a constant bias. This
module fits ``(V, U)`` to the observed ``P`` by Levenberg-Marquardt. The
normal matrix ``J^T J`` (``B (B + K)`` square) is assembled from structured
products, in chunks of neurons, never from the dense ``(m B, B (B + K))``
Jacobian.

``P``, ``Omega`` and ``A`` may be arrays of any Array API namespace (CuPy on
the GPU): every product over neurons runs there. The samples ``V``, the
signals ``U`` and the normal equations (``B (B + K)`` square) live on the
host, where the damped systems are solved by LAPACK.
"""

import numpy as np
from scipy import linalg

from ._array_api import get_namespace, to_host
from ._gradient_model import (check_finite_and_activation, derivative, flush_subnormal,
                              model_from_slopes, on_device, pre_activations,
                              signals_from_slopes, slopes_at)
from ._lm import lm_driver

__all__ = ["gradient_model", "fit_signals", "levenberg_marquardt", "lm_driver",
           "pattern_iteration", "RefinementResult", "better_rows"]

_CHUNK = 8192


def _check_fit(activation, V, U, Omega, A, P=None, fixed=None):
    """The arguments of the public fits (:func:`gradient_model`,
    :func:`fit_signals`, :func:`levenberg_marquardt`,
    :func:`pattern_iteration`): shapes that match, finite values, an
    Activation, a nonzero gradient and a valid constraint, or a ValueError
    that says what is wrong. ``U=None``: no signals given."""
    if Omega.ndim != 2 or A.ndim != 2 or A.shape[0] != Omega.shape[0]:
        raise ValueError(
            f"Omega and A must be 2-D arrays with one row per neuron, got shapes "
            f"{tuple(Omega.shape)} and {tuple(A.shape)}.")
    m, n_dims = Omega.shape
    if V.ndim != 2 or V.shape[1] != n_dims:
        raise ValueError(f"V must have shape (B, {n_dims}), got {tuple(V.shape)}.")
    if U is not None and tuple(U.shape) != (V.shape[0], A.shape[1]):
        raise ValueError(f"U must have shape ({V.shape[0]}, {A.shape[1]}) (one signal "
                         f"per sample and output), got {tuple(U.shape)}.")
    if P is not None and tuple(P.shape) != (m, n_dims):
        raise ValueError(f"P must have the shape of Omega, {(m, n_dims)}, got "
                         f"{tuple(P.shape)}.")
    arrays = dict(V=V, Omega=Omega, A=A)
    if U is not None:
        arrays["U"] = U
    if P is not None:
        arrays["P"] = P
    check_finite_and_activation(activation, **arrays)
    if P is not None:
        xp, _ = get_namespace(P)
        if not bool(xp.any(P != 0)):
            raise ValueError("P is zero everywhere: there is no gradient to fit.")
    if fixed is not None and (np.shape(fixed[0]) != (n_dims,)
                              or not np.any(np.asarray(fixed[0]) != 0)):
        raise ValueError(
            f"fixed must be (e, c) with e a nonzero vector of shape ({n_dims},).")


def gradient_model(V, U, Omega, A, activation, bias_mean=0.0):
    """Model gradient rows ``P_hat`` (``(m, B)``) for samples ``V`` and signals ``U``.

    Parameters
    ----------
    V : ndarray of shape (B, n_dims)
        Samples in span coordinates.
    U : ndarray of shape (B, K)
        Per-sample signals.
    Omega : ndarray of shape (m, n_dims)
        Neurons' weights in span coordinates.
    A : ndarray of shape (m, K)
        Output weights.
    activation : Activation
        The first layer's activation (``sigma'`` is evaluated).
    bias_mean : float
        Constant part of the pre-activation.

    Returns
    -------
    P_hat : ndarray of shape (m, n_dims)
        ``p_j = sum_i (a_j . u_i) sigma'(omega_j . v_i + b0) v_i``, one row
        per neuron.

    Raises
    ------
    ValueError
        If the shapes do not match, an input holds NaN or inf, ``activation``
        is not an :class:`~skrecon.activations.Activation`.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import gradient_model
    >>> rng = np.random.default_rng(0)
    >>> V, U = rng.standard_normal((2, 2)), rng.standard_normal((2, 1))
    >>> Omega, A = rng.standard_normal((500, 2)), rng.standard_normal((500, 1))
    >>> gradient_model(V, U, Omega, A, get_activation("tanh")).shape
    (500, 2)
    """
    _, (V, U) = on_device(Omega, V, U)
    _check_fit(activation, V, U, Omega, A)
    return model_from_slopes(slopes_at(Omega, V, activation, bias_mean), V, U, A)


def fit_signals(V, P, Omega, A, activation, bias_mean=0.0, ridge=1e-12):
    """Least-squares signals ``U`` for fixed samples ``V`` (the model is linear in ``U``).

    Parameters
    ----------
    V : ndarray of shape (B, n_dims)
        Samples in span coordinates.
    P : ndarray of shape (m, n_dims)
        Observed gradient rows in span coordinates.
    Omega, A, activation, bias_mean
        As for :func:`gradient_model`.
    ridge : float, default=1e-12
        Tikhonov term, relative to the mean diagonal of the normal matrix.

    Returns
    -------
    U : ndarray of shape (B, K)
        The signals minimising ``||P - gradient_model(V, U, ...)||_F``.

    Raises
    ------
    ValueError
        If the shapes do not match, an input holds NaN or inf, ``activation``
        is not an :class:`~skrecon.activations.Activation`, ``P`` is zero or ``ridge`` is negative.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import fit_signals, gradient_model
    >>> rng = np.random.default_rng(0)
    >>> tanh = get_activation("tanh")
    >>> V, U = rng.standard_normal((2, 2)), rng.standard_normal((2, 1))
    >>> Omega, A = rng.standard_normal((500, 2)), rng.standard_normal((500, 1))
    >>> P = gradient_model(V, U, Omega, A, tanh)
    >>> bool(np.allclose(fit_signals(V, P, Omega, A, tanh), U))
    True
    """
    _, (Vx,) = on_device(P, V)
    _check_fit(activation, Vx, None, Omega, A, P)
    if not ridge >= 0:
        raise ValueError(f"ridge must be non-negative, got {ridge!r}.")
    return signals_from_slopes(slopes_at(Omega, Vx, activation, bias_mean), Vx, P, A, ridge)


class RefinementResult:
    """Outcome of :func:`levenberg_marquardt`, in the style of ``scipy.optimize``.

    Parameters
    ----------
    V, U : ndarray of shape (B, n_dims) and (B, K)
        Fitted samples and signals.
    relative_residual : float
        Relative residual at the solution.
    n_iter : int
        Steps taken.
    status : int
        Stopping status (see ``status`` below).

    Attributes
    ----------
    V, U : ndarray
        Fitted samples ``(B, n_dims)`` and signals ``(B, K)``.
    relative_residual : float
        ``||P - P_hat||_F / ||P||_F`` at the solution.
    n_iter : int
        Number of accepted and rejected steps taken.
    converged : bool
    status : int
        1: relative step below ``xtol``; 2: relative decrease of the cost below
        ``ftol``; 3: residual below ``rtol``; 0: ``max_iter`` reached;
        -1: damping grew without bound (no descent direction); -2: the
        joint polish lost samples that the search had found, and the
        reconstructor kept their values before it (``V``, ``U`` and the
        residual are those).
    message : str
        ``status`` in words.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.refine import RefinementResult
    >>> RefinementResult(np.eye(2), np.ones((2, 1)), 1e-15, 4, 3)
    RefinementResult(relative_residual=1e-15, n_iter=4, status=3: the relative residual is below rtol)
    """

    _MESSAGES = {
        1: "the relative step is below xtol",
        2: "the relative decrease of the cost is below ftol",
        3: "the relative residual is below rtol",
        0: "the maximum number of iterations was reached",
        -1: "the damping grew without bound: no step decreases the cost",
        -2: "the joint polish lost samples the search had found: not kept",
        -3: "too few neurons for the search: nothing searched or polished",
    }

    def __init__(self, V, U, relative_residual, n_iter, status):
        self.V = V
        self.U = U
        self.relative_residual = float(relative_residual)
        self.n_iter = int(n_iter)
        self.status = int(status)
        self.converged = status > 0
        self.message = self._MESSAGES[status]

    def __repr__(self):
        return (f"RefinementResult(relative_residual={self.relative_residual:.3g}, "
                f"n_iter={self.n_iter}, status={self.status}: {self.message})")


def _normal_equations(V, U, P, Omega, A, activation, bias_mean):
    """``J^T J`` and ``J^T r`` for the parameters ``(v_i, u_i)`` stacked per sample."""
    n_samples, n_dims = V.shape
    K = A.shape[1]
    width = n_dims + K
    n_par = n_samples * width
    xp, (Vx, Ux) = on_device(P, V, U)
    # sums over neurons, accumulated on P's device
    jtj_alpha = 0.0  # (n_par, n_par)
    s2_beta_alpha = 0.0  # (B, B * width): [k, (i, :)] = sum_j beta_kj alpha_ij
    beta_beta = 0.0  # (B, B)
    grad_alpha = 0.0  # (B, width)
    grad_beta = 0.0  # (B, n_dims)
    cost = 0.0
    for start in range(0, P.shape[0], _CHUNK):
        stop = min(start + _CHUNK, P.shape[0])  # the Array API has no slices past the end
        om, a, p = (M[start:stop, :] for M in (Omega, A, P))
        mc = p.shape[0]
        t = pre_activations(om, Vx, bias_mean)
        s1 = derivative(activation, t, 1)
        s2 = derivative(activation, t, 2)
        c = a @ Ux.T  # (mc, B)
        beta = c * s1
        r = p - beta @ Vx  # residual (mc, n_dims)
        cost = cost + xp.sum(r * r)  # stays on the device until the end
        alpha = flush_subnormal(xp.concat([(c * s2)[:, :, None] * om[:, None, :],
                                  s1[:, :, None] * a[:, None, :]], axis=2))
        flat = xp.reshape(alpha, (mc, n_par))
        jtj_alpha = jtj_alpha + flat.T @ flat
        s2_beta_alpha = s2_beta_alpha + beta.T @ flat
        beta_beta = beta_beta + beta.T @ beta
        rv = r @ Vx.T  # (mc, B): v_i . r_j
        grad_alpha = grad_alpha + xp.sum(alpha * rv[:, :, None], axis=0)
        grad_beta = grad_beta + beta.T @ r
    cost = 0.5 * float(cost)
    # B-sized from here: assembled on the host
    jtj_alpha = to_host(jtj_alpha)
    s2_beta_alpha = to_host(s2_beta_alpha).reshape(n_samples, n_samples, width)
    beta_beta = to_host(beta_beta)
    grad = to_host(grad_alpha).copy()
    grad[:, :n_dims] += to_host(grad_beta)
    gram_v = V @ V.T
    jtj = jtj_alpha.reshape(n_samples, width, n_samples, width)
    jtj *= gram_v[:, None, :, None]
    v_tilde = np.zeros((n_samples, width))
    v_tilde[:, :n_dims] = V
    # (sum_j beta_kj alpha_ij) v~_i^T  +  v~_k (sum_j beta_ij alpha_kj)^T
    term2 = np.einsum("kia,ib->iakb", s2_beta_alpha, v_tilde)
    jtj += term2
    jtj += np.transpose(term2, (2, 3, 0, 1))
    eye = np.zeros((width, width))
    eye[:n_dims, :n_dims] = np.eye(n_dims)
    jtj += beta_beta[:, None, :, None] * eye[None, :, None, :]
    return jtj.reshape(n_par, n_par), grad.reshape(-1), cost


def _cost(V, U, P, Omega, A, activation, bias_mean):
    xp, (V, U) = on_device(P, V, U)
    total = 0.0
    for start in range(0, P.shape[0], _CHUNK):
        sl = slice(start, min(start + _CHUNK, P.shape[0]))
        r = P[sl, :] - model_from_slopes(slopes_at(Omega[sl, :], V, activation, bias_mean), V, U,
                              A[sl, :])
        total += 0.5 * float(xp.sum(r * r))
    return total


def _constraint_basis(n_dims, n_outputs, n_samples, fixed):
    """Map from free parameters to ``(v_i, u_i)`` steps under ``e . v_i = c``.

    Returns ``T`` of shape ``(B (n_dims + K), B (n_dims - 1 + K))`` (block
    diagonal, one block per sample), or ``None`` without a constraint.
    """
    if fixed is None:
        return None
    e = np.asarray(fixed[0], dtype=float)
    # orthonormal basis of the complement of e
    q = linalg.null_space(e[None, :])  # (n_dims, n_dims - 1)
    block = linalg.block_diag(q, np.eye(n_outputs))
    return linalg.block_diag(*([block] * n_samples))


def levenberg_marquardt(V, U, P, Omega, A, activation, bias_mean=0.0, *,
                        fixed=None, max_iter=100, ftol=1e-15, xtol=1e-13,
                        rtol=1e-14, verbose=0, callback=None):
    """Fit samples and signals to the projected gradient by Levenberg-Marquardt.

    The joint polish of the whole batch: its parameters are every sample
    and every signal, ``B (n_dims + K)`` numbers.

    Parameters
    ----------
    V : ndarray of shape (B, n_dims)
        Starting samples (span coordinates).
    U : ndarray of shape (B, K)
        Starting signals.
    P : ndarray of shape (m, n_dims)
        Observed gradient rows in span coordinates.
    Omega : ndarray of shape (m, n_dims)
        Neurons' weights in span coordinates.
    A : ndarray of shape (m, K)
        Output weights.
    activation : Activation
    bias_mean : float, default=0.0
    fixed : tuple (e, c) or None, default=None
        Affine constraint ``e . v_i = c`` for every sample: the bias
        coordinate of a bias-augmented sample is known (the input constant
        1). Steps are taken in the constraint's tangent space, which removes
        the sign symmetry and the spurious freedom of that coordinate.
    max_iter : int, default=100
        Maximum number of steps (accepted or rejected).
    ftol, xtol, rtol : float
        Stopping tolerances on the relative cost decrease, the relative step
        and the relative residual ``||P - P_hat|| / ||P||``.
    verbose : int, default=0
        Print one line per step when positive.
    callback : callable or None, default=None
        ``callback(n_iter, max_iter)`` after each step (a progress line).

    Returns
    -------
    result : RefinementResult

    Raises
    ------
    ValueError
        If the shapes do not match, an input holds NaN or inf, ``activation``
        is not an :class:`~skrecon.activations.Activation`, ``P`` is zero or ``fixed`` is not a nonzero vector and a constant.

    References
    ----------
    .. [1] J. J. More, "The Levenberg-Marquardt algorithm: implementation and
       theory", Numerical Analysis, Lecture Notes in Math. 630, 1978.
    .. [2] H. B. Nielsen, "Damping parameter in Marquardt's method",
       IMM-REP-1999-05, DTU, 1999.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import gradient_model, levenberg_marquardt
    >>> rng = np.random.default_rng(0)
    >>> tanh = get_activation("tanh")
    >>> V, U = rng.standard_normal((2, 2)), rng.standard_normal((2, 1))
    >>> Omega, A = rng.standard_normal((500, 2)), rng.standard_normal((500, 1))
    >>> P = gradient_model(V, U, Omega, A, tanh)
    >>> result = levenberg_marquardt(V + 0.05, U, P, Omega, A, tanh)
    >>> result.converged, bool(result.relative_residual < 1e-12)
    (True, True)
    """
    V = np.array(to_host(V), dtype=float)
    U = np.array(to_host(U), dtype=float)
    _check_fit(activation, V, U, Omega, A, P, fixed)
    xp, _ = get_namespace(P)
    p_norm2 = float(xp.sum(P * P))
    n_dims = V.shape[1]
    width = n_dims + U.shape[1]
    tangent = _constraint_basis(n_dims, U.shape[1], len(V), fixed)
    if fixed is not None:
        e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
        V = V + np.outer(c - V @ e, e) / (e @ e)  # onto the constraint
    base = np.hstack([V, U])

    def unpack(x):
        step = (x if tangent is None else tangent @ x).reshape(-1, width)
        params = base + step
        return params[:, :n_dims], params[:, n_dims:]

    def normal_equations(x):
        jtj, grad, cost = _normal_equations(*unpack(x), P, Omega, A, activation,
                                            bias_mean)
        if tangent is not None:
            jtj = tangent.T @ jtj @ tangent
            grad = tangent.T @ grad
        return jtj, grad, cost

    def cost(x):
        return _cost(*unpack(x), P, Omega, A, activation, bias_mean)

    n_free = base.size if tangent is None else tangent.shape[1]
    # an exact start needs no normal equations at all
    start_cost = cost(np.zeros(n_free))
    atol = 0.5 * rtol**2 * p_norm2
    if start_cost <= atol:
        return RefinementResult(V, U, np.sqrt(2 * start_cost / p_norm2), 0, 3)
    x, final, n_iter, status = lm_driver(
        np.zeros(n_free), normal_equations, cost, max_iter=max_iter, atol=atol,
        ftol=ftol, xtol=xtol, verbose=verbose, label="LM",
        scale=float(np.linalg.norm(base)), callback=callback)
    V, U = unpack(x)
    return RefinementResult(V, U, np.sqrt(2 * final / p_norm2), n_iter, status)


def better_rows(V_before, misfits_before, V_after, misfits_after):
    """Each sample from the fit where its own column-space misfit is lower.

    A sample's column-space misfit depends on that sample alone (its column
    against the span of the gradient), so the rows of two fits of the same
    batch can be mixed row by row. On a gradient exact to its round-off
    (float32) the joint polish of a batch with a few wrong rows (a search
    that missed samples and completed them with guesses) is a compromise:
    measured at trained weights (float32 sigmoid, 64 -> 1024 -> 10, B = 32,
    3 wrong rows) it moved the 29 right ones from errors 4e-7 to 9e-5 up to
    1e-5 to 2e-2 while it found one of the wrong ones; row by row, both gains
    are kept.

    Parameters
    ----------
    V_before, V_after : ndarray of shape (B, n_dims)
        The samples before and after the polish, row ``k`` the same sample.
    misfits_before, misfits_after : ndarray of shape (B,)
        Their column-space misfits.

    Returns
    -------
    V : ndarray of shape (B, n_dims)
    misfits : ndarray of shape (B,)
    from_after : ndarray of bool, shape (B,)
        The rows taken from ``V_after``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.refine import better_rows
    >>> V, misfits, after = better_rows(np.zeros((2, 2)), np.array([1e-9, 1e-2]),
    ...                                 np.ones((2, 2)), np.array([1e-6, 1e-7]))
    >>> V.tolist(), after.tolist()
    ([[0.0, 0.0], [1.0, 1.0]], [False, True])
    """
    misfits_before = np.asarray(misfits_before, dtype=float)
    misfits_after = np.asarray(misfits_after, dtype=float)
    from_after = misfits_after < misfits_before
    V = np.where(from_after[:, None], V_after, V_before)
    return V, np.where(from_after, misfits_after, misfits_before), from_after


def is_piecewise_linear(activation):
    """Whether ``sigma''`` vanishes away from the kinks (ReLU, leaky ReLU).

    For such an activation ``sigma'`` is piecewise constant: the Jacobian of
    the gradient model carries no information about which neurons a sample
    activates. The column-space search (:mod:`skrecon.search`) then smooths
    each jump of ``sigma'`` (a homotopy), and :func:`pattern_iteration`
    makes the samples exact before the Levenberg-Marquardt polish.

    Parameters
    ----------
    activation : Activation
        The activation to test (its ``kinks`` and ``sigma''`` on a grid).

    Returns
    -------
    piecewise_linear : bool

    Examples
    --------
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import is_piecewise_linear
    >>> is_piecewise_linear(get_activation("relu")), is_piecewise_linear(get_activation("gelu"))
    (True, False)
    """
    if not activation.kinks:
        return False
    grid = np.linspace(-8.0, 8.0, 1601)
    grid = grid[np.min(np.abs(grid[:, None] - np.asarray(activation.kinks)[None]),
                       axis=1) > 1e-6]
    return bool(np.all(activation.derivative(grid, 2) == 0))


def _pattern_step(V, P, Omega, A, activation, bias_mean, fixed, margin):
    """One margin-trimmed pattern step; ``None`` when the design is rank deficient."""
    n_samples, n_dims = V.shape
    K = A.shape[1]
    t = pre_activations(Omega, V, bias_mean)
    scale = np.linalg.norm(Omega, axis=1)[:, None] * np.linalg.norm(V, axis=1)[None, :]
    distance = np.full(t.shape, np.inf)
    for kink in activation.kinks:
        distance = np.minimum(distance, np.abs(t - kink))
    keep = np.all(distance > margin * scale, axis=1)
    if keep.sum() < n_samples * K:
        return None
    pattern = derivative(activation, t[keep], 1)
    design = (pattern[:, :, None] * A[keep][:, None, :]).reshape(-1, n_samples * K)
    Y, _, rank, _ = linalg.lstsq(design, P[keep], check_finite=False)
    if rank < n_samples * K:
        return None
    Y = Y.reshape(n_samples, K, n_dims)
    V_new = np.empty_like(V)
    for i in range(n_samples):
        direction = np.linalg.svd(Y[i], full_matrices=False)[2][0]
        if fixed is not None:
            last = direction @ fixed[0]
            if abs(last) < 1e-12 * np.linalg.norm(direction):
                return None
            V_new[i] = direction * (fixed[1] / last)
        else:
            sign = 1.0 if direction @ V[i] >= 0 else -1.0
            V_new[i] = sign * direction * np.linalg.norm(V[i])
    return V_new


def pattern_iteration(V, P, Omega, A, activation, bias_mean=0.0, *, fixed=None,
                      margins=(0.0, 0.01, 0.03, 0.1), tol=1e-10, max_iter=10):
    """Make an accurate start exact for a piecewise-linear activation.

    With ``sigma'`` piecewise constant the model gradient is, for a fixed
    pattern ``s_ij = sigma'(omega_j . v_i + b0)``, linear in the products
    ``Y_i = u_i v_i^T``: ``p_j = sum_i s_ij Y_i^T a_j``. A step solves that
    linear least-squares problem for ``Y`` and takes each ``v_i`` from the
    leading right singular vector of ``Y_i`` (scaled by the constraint
    ``e . v_i = c`` when there is one, else keeping the current norm and
    orientation).

    A neuron whose pattern is wrong enters the least squares with an error
    as large as a whole sample's term, and a few of them throw the solution
    out of the basin. A step therefore drops every neuron whose
    pre-activation lies within ``margin * |omega_j| |v_i|`` of a kink for
    some sample, i.e. whose pattern could change if ``v_i`` moved by a
    relative ``margin``: when the samples are that accurate, every remaining
    pattern is right and the step is exact. Each round takes one step per
    margin from the current samples and keeps the one with the lowest
    relative residual on all neurons; rounds stop when it falls below
    ``tol`` or stops decreasing.

    Parameters
    ----------
    V : ndarray of shape (B, n_dims)
        Starting samples (span coordinates).
    P, Omega, A, activation, bias_mean, fixed
        As for :func:`levenberg_marquardt`.
    margins : sequence of float, default=(0.0, 0.01, 0.03, 0.1)
        Relative margins tried in each round.
    tol : float, default=1e-10
        Relative residual at which the iteration stops.
    max_iter : int, default=10
        Maximum number of rounds.

    Returns
    -------
    result : RefinementResult
        The best samples met (the start included); ``n_iter`` counts the
        rounds; ``status`` 3 when the relative residual is below ``tol``,
        else 0.

    Raises
    ------
    ValueError
        If the shapes do not match, an input holds NaN or inf, ``activation``
        is not an :class:`~skrecon.activations.Activation`, ``P`` is zero or ``fixed`` is not a nonzero vector and a constant.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import gradient_model, pattern_iteration
    >>> rng = np.random.default_rng(0)
    >>> relu = get_activation("relu")
    >>> V, U = rng.standard_normal((2, 3)), rng.standard_normal((2, 1))
    >>> Omega, A = rng.standard_normal((2000, 3)), rng.standard_normal((2000, 1))
    >>> P = gradient_model(V, U, Omega, A, relu, bias_mean=0.5)
    >>> result = pattern_iteration(V + 0.001, P, Omega, A, relu, bias_mean=0.5)
    >>> bool(result.relative_residual < 1e-10)
    True
    """
    V = np.array(V, dtype=float)
    _check_fit(activation, V, None, Omega, A, P, fixed)
    p_norm = float(np.linalg.norm(P))

    def evaluate(V):
        _, (Vx,) = on_device(P, V)
        s1 = slopes_at(Omega, Vx, activation, bias_mean)
        U = signals_from_slopes(s1, Vx, P, A, ridge=1e-12)
        return float(np.linalg.norm(P - model_from_slopes(s1, Vx, U, A))) / p_norm, U

    res, U = evaluate(V)
    best = (res, V, U)
    n_iter = 0
    while n_iter < max_iter and not best[0] < tol:
        n_iter += 1
        current = best
        for margin in margins:
            trial = _pattern_step(current[1], P, Omega, A, activation, bias_mean, fixed,
                                  margin)
            if trial is None or not np.all(np.isfinite(trial)):
                continue
            res, U = evaluate(trial)
            if res < best[0]:
                best = (res, trial, U)
        if best is current:
            break
    return RefinementResult(best[1], best[2], best[0], n_iter, 3 if best[0] < tol else 0)
