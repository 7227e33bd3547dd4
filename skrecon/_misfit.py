"""The column-space misfit of a candidate sample, and the helpers it shares.

For a candidate ``v`` (span coordinates) the slope family ``S(v) = diag(
sigma'(Omega v + b0)) A`` has a vector in the gradient's column space
``col(Q)`` exactly at the batch's samples; ``phi(v) = min_u ||(I - Q Q^T)
S(v) u||^2 / ||S(v) u||^2`` measures how far it is (:ref:`theory-f8`). The
per-sample search (:mod:`skrecon.search`), the functional core
(:mod:`skrecon._core`) and the starts read off neighbouring neurons
(:mod:`skrecon._crossings`) share these pieces: ``sigma'`` smoothed at the
kinks of a piecewise-linear activation (:class:`Slopes`), the best signal,
the residual and its Jacobian, ``phi`` of one or many candidates, an
orthonormal basis, the bias constraint, and the test for a repeated sample.
Everything here is host NumPy.
"""

import numpy as np
from scipy import linalg
from scipy.special import expit

from ._gradient_model import derivative

__all__ = ["DUPLICATE_ANGLE", "DUPLICATE_ANGLE_PIECEWISE", "Slopes", "best_signal",
           "misfit_and_jacobian", "sample_misfits", "sample_misfit", "orth",
           "onto_constraint", "is_repeat"]

# a start that ends within this angle (degrees) of a sample found is a
# repeat (deflation removed that zero, so only an inexact sample's remnant
# can draw a search back: wider for the smoothed piecewise-linear search)
DUPLICATE_ANGLE = 0.05
DUPLICATE_ANGLE_PIECEWISE = 0.5


class Slopes:
    """``sigma'`` and ``sigma''`` of an activation, smoothed at its kinks.

    ``width=0`` is the activation itself. For a piecewise-linear activation
    and ``width > 0`` each jump of ``sigma'`` becomes a logistic step of that
    width (in pre-activation units), whose derivative is the smoothed
    ``sigma''``.
    """

    def __init__(self, activation, width=0.0):
        self.activation = activation
        self.width = float(width)
        self.jumps = None
        if width > 0:
            kinks = np.sort(np.asarray(activation.kinks, dtype=float))
            left = np.array([kinks[0] - 1.0])
            self.base = float(activation.derivative(left, 1)[0])
            self.jumps = [(k, float(activation.derivative(np.array([k + 1e-9]), 1)[0]
                                    - activation.derivative(np.array([k - 1e-9]), 1)[0]))
                          for k in kinks]

    def __call__(self, t, second=True):
        """``(sigma'(t), sigma''(t))``; ``sigma''`` is ``None`` unless
        ``second``."""
        if self.jumps is None:
            return (derivative(self.activation, t, 1),
                    derivative(self.activation, t, 2) if second else None)
        s1 = np.full_like(t, self.base)
        s2 = np.zeros_like(t) if second else None
        for kink, jump in self.jumps:
            step = expit((t - kink) / self.width)
            s1 += jump * step
            if second:
                s2 += (jump / self.width) * step * (1.0 - step)
        return s1, s2


def best_signal(v, Q, Omega, A, slopes, bias_mean):
    """The signal ``u`` (``(K,)``) whose ``S(v) u`` is closest in angle to
    ``col(Q)``, scaled so that ``||S(v) u|| = 1``; ``None`` where ``S(v)``
    is singular.

    It solves ``(S^T Q Q^T S) u = mu (S^T S) u``: with ``S^T S = L L^T``,
    ``u = L^{-T} w`` with ``w`` the top right singular vector of
    ``Q^T S L^{-T}``.
    """
    if A.shape[1] == 1:
        y = A[:, 0] * slopes(Omega @ v + bias_mean, second=False)[0]
        norm = float(np.sqrt(y @ y))
        return np.array([1.0 / norm]) if norm > 0 and np.isfinite(norm) else None
    S = slopes(Omega @ v + bias_mean, second=False)[0][:, None] * A
    try:
        L = linalg.cholesky(S.T @ S, lower=True, check_finite=False)
        M = linalg.solve_triangular(L, (Q.T @ S).T, lower=True, check_finite=False).T
        w = np.linalg.svd(M, full_matrices=False)[2][0]
        u = linalg.solve_triangular(L, w, lower=True, trans="T", check_finite=False)
    except (linalg.LinAlgError, ValueError):
        return None
    return u if np.all(np.isfinite(u)) else None


def misfit_and_jacobian(v, u, Q, Omega, A, slopes, bias_mean, jacobian=True):
    """Residual ``r = (I - Q Q^T) g``, ``g = S(v) u / ||S(v) u||`` (``(m,)``),
    and its Jacobian in ``(v, u)`` (``(m, n_dims + K)``).

    The residual is scale-free in ``u`` (its Jacobian is zero along ``u``);
    for ``K = 1`` the ``u`` columns are unused. Returns ``None`` where
    ``S(v) u`` vanishes (every unit saturated).
    """
    t = Omega @ v + bias_mean
    s1, s2 = slopes(t, second=jacobian)
    Au = A @ u
    y = s1 * Au
    norm = float(np.sqrt(y @ y))
    if not norm > 0 or not np.isfinite(norm):
        return None
    g = y / norm
    r = g - Q @ (Q.T @ g)
    if not jacobian:
        return r, None
    J = (s2 * Au / norm)[:, None] * Omega
    if A.shape[1] > 1:
        J = np.hstack([J, (s1 / norm)[:, None] * A])
    J -= np.outer(g, g @ J)
    J -= Q @ (Q.T @ J)
    return r, J


def sample_misfits(V, Q, Omega, A, slopes, bias_mean):
    """:func:`_phi` of every row of ``V`` (one product for all, one output)."""
    if A.shape[1] > 1:
        return np.array([sample_misfit(v, Q, Omega, A, slopes, bias_mean) for v in V])
    Y = slopes(Omega @ V.T + bias_mean, second=False)[0] * A
    norms = np.sqrt(np.sum(Y * Y, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        G = Y / norms
    R = G - Q @ (Q.T @ G)
    phi = np.sum(R * R, axis=0)
    return np.where((norms > 0) & np.isfinite(phi), phi, 1.0)


def sample_misfit(v, Q, Omega, A, slopes, bias_mean):
    """:func:`skrecon.search.column_space_misfit` of checked arrays (the
    engine's own calls)."""
    # one output: the signal is a scale, and the misfit does not depend on it
    u = (np.ones(1) if A.shape[1] == 1
         else best_signal(v, Q, Omega, A, slopes, bias_mean))
    out = None if u is None else misfit_and_jacobian(v, u, Q, Omega, A, slopes, bias_mean,
                                         jacobian=False)
    return 1.0 if out is None else float(out[0] @ out[0])


def orth(M):
    """Orthonormal basis of ``col(M)`` (``M`` tall, of full column rank).

    CholeskyQR2 (two Cholesky-QR passes: orthogonal to round-off for
    condition numbers up to ~1e7), several times faster than Householder QR
    on tall thin matrices; Householder QR where a Cholesky factor fails.
    """
    Q = M
    try:
        for _ in range(2):
            R = linalg.cholesky(Q.T @ Q, lower=False, check_finite=False)
            Q = linalg.solve_triangular(R, Q.T, trans="T", check_finite=False).T
    except linalg.LinAlgError:
        return np.linalg.qr(M)[0]
    if not np.all(np.isfinite(Q)):
        return np.linalg.qr(M)[0]
    return Q


def onto_constraint(v, fixed):
    """``v`` (one sample) moved onto ``e . v = c`` along ``e``."""
    if fixed is None:
        return v
    e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
    return v + (c - v @ e) * e / (e @ e)


def is_repeat(v, found, cos_min):
    """Whether ``v`` lies within the duplicate angle of a sample in ``found``."""
    if not found:
        return False
    F = np.array(found)
    cos = np.abs(F @ v) / (np.linalg.norm(F, axis=1) * np.linalg.norm(v))
    return bool(np.max(cos) > cos_min)
