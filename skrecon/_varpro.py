"""Refinement with the signals projected out, for wide output weights.

In span coordinates the gradient is ``P = C V`` with ``C[j, i] = (a_j . u_i)
s_ij`` and ``s_ij = sigma'(omega_j . v_i + b0)``. For square, invertible
``V`` (``B`` samples in a ``B``-dimensional span) the coefficients are
``C = P V^{-1}`` exactly, and each sample's column divided by its slopes,
``y_i = (P z_i) / s_i`` with ``z_i = V^{-1} e_i``, must equal ``A u_i``: it lies
in the ``K``-dimensional range of the output weights ``A``. The residual

    r_i(V) = (I - Q Q^T) y_i,      A = Q R,

depends on ``V`` alone (``B^2`` numbers) and vanishes at the batch, so a
Levenberg-Marquardt fit of ``r`` eliminates the ``B K`` signals (variable
projection, Golub & Pereyra 1973). Its normal matrix is ``B^2`` square
instead of ``B (B + K)``: for a deeper net whose first layer feeds ``K =
256`` units this is the difference between seconds and hours. The signals
follow at the end as ``u_i = R^{-1} Q^T y_i``.

Neurons with a vanishing slope for some sample carry ``y_i`` values blown up
by the division; they are left out (with ``Q`` computed on the rest).
"""

import numpy as np
from scipy import linalg

from .refine import (_MAX_DAMPING, RefinementResult, _derivative, _next_damping,
                     _solve_spd, gradient_model)

# neurons whose slope for some sample is below this fraction of the largest
# are left out of the projected residual
_MIN_SLOPE = 1e-3


def _residual(V, P, Omega, Q, activation, bias_mean):
    Z = np.linalg.inv(V)
    C = P @ Z  # (m, B): column i is s_i * (A u_i)
    t = Omega @ V.T + bias_mean
    S = _derivative(activation, t, 1)
    Y = C / S
    return Y - Q @ (Q.T @ Y), (Z, C, S, Y, t)


def _jacobian(V, Omega, Q, activation, parts):
    """``d r / d V`` of shape ``(m, B, B, n_dims)`` ([j, i] residual, [k, l] entry)."""
    Z, C, S, Y, t = parts
    S2 = _derivative(activation, t, 2)
    m, B = C.shape
    d = V.shape[1]
    # through Z = V^-1: dZ[:, i] = -Z[:, k] Z[l, i]
    dY = -(C[:, None, :, None] * Z.T[None, :, None, :]) / S[:, :, None, None]
    # through the slopes of sample k itself
    own = -(Y * S2 / S)[:, :, None] * Omega[:, None, :]  # (m, B, d)
    idx = np.arange(B)
    dY[:, idx, idx, :] += own
    flat = dY.reshape(m, -1)
    flat -= Q @ (Q.T @ flat)
    return flat.reshape(m, B, B, d)


def output_range_refinement(V, P, Omega, A, activation, bias_mean=0.0, *, fixed=None,
                            max_iter=50, rtol=1e-14):
    """Fit the samples ``V`` with the signals projected out (see module doc).

    Parameters
    ----------
    V : ndarray of shape (B, B)
        Starting samples in span coordinates (square: ``B`` samples in a
        ``B``-dimensional span).
    P, Omega, A, activation, bias_mean, fixed
        As for :func:`skrecon.refine.levenberg_marquardt`.
    max_iter : int, default=50
        Maximum Levenberg-Marquardt steps.
    rtol : float, default=1e-14
        Relative projected residual at which the fit stops.

    Returns
    -------
    result : RefinementResult
        ``V``, the signals ``U = R^{-1} Q^T y`` and the relative residual of
        the full gradient model on all neurons.
    """
    V = np.array(V, dtype=float)
    n, d = V.shape
    t0 = Omega @ V.T + bias_mean
    slopes = np.abs(_derivative(activation, t0, 1))
    keep = np.all(slopes >= _MIN_SLOPE * slopes.max(), axis=1)
    P_k, Omega_k, A_k = P[keep], Omega[keep], A[keep]
    Q, R = linalg.qr(A_k, mode="economic")
    if fixed is not None:
        e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
        V = V + np.outer(c - V @ e, e) / (e @ e)
        tangent = linalg.null_space(e[None, :])  # (d, d - 1)
    else:
        tangent = np.eye(d)

    def cost_of(V):
        r, parts = _residual(V, P_k, Omega_k, Q, activation, bias_mean)
        return 0.5 * float(np.sum(r * r)), r, parts

    cost, r, parts = cost_of(V)
    scale = 0.5 * float(np.sum(parts[3] ** 2))  # |y|^2: the residual's reference
    damping, nu, status, n_iter = 1e-3, 2.0, 0, 0
    for n_iter in range(1, max_iter + 1):
        if not np.isfinite(cost):
            status = -1
            break
        if np.sqrt(cost / scale) < rtol:
            status = 3
            break
        J = _jacobian(V, Omega_k, Q, activation, parts) @ tangent  # (m, B, B, d-1)
        J = J.reshape(-1, n * tangent.shape[1])
        jtj = J.T @ J
        grad = -J.T @ r.reshape(-1)
        diag = np.maximum(np.diag(jtj), 1e-12 * np.diag(jtj).max())
        step = _solve_spd(jtj + damping * np.diag(diag), grad)
        V_new = V + step.reshape(n, -1) @ tangent.T
        try:
            new_cost, new_r, new_parts = cost_of(V_new)
        except np.linalg.LinAlgError:
            new_cost = np.inf
        predicted = float(step @ grad) - 0.5 * float(step @ (jtj @ step))
        gain = (cost - new_cost) / predicted if predicted > 0 else -1.0
        if np.isfinite(new_cost) and gain > 0:
            rel_step = np.linalg.norm(step) / max(np.linalg.norm(V), 1e-300)
            V, cost, r, parts = V_new, new_cost, new_r, new_parts
            damping, nu = _next_damping(damping, nu, gain)
            if rel_step < 1e-15:
                status = 1
                break
        else:
            damping, nu = _next_damping(damping, nu, gain)
            if damping > _MAX_DAMPING:
                status = -1
                break
    Y = parts[3]
    U = linalg.solve_triangular(R, Q.T @ Y).T  # (B, K)
    residual = P - gradient_model(V, U, Omega, A, activation, bias_mean)
    relative = float(np.linalg.norm(residual) / np.linalg.norm(P))
    if status == 0 and relative < rtol:
        status = 3
    return RefinementResult(V, U, relative, n_iter, status)
