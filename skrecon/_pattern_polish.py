"""Joint least squares of a piecewise-linear layer with its patterns fixed.

For ReLU and leaky ReLU ``sigma'`` takes two values, so once the pattern
``S`` (``S[j, k] = sigma'`` of sample ``k`` at neuron ``j``) is known the
gradient model

    p_j = sum_k S[j, k] (a_j . w_k) v_k

is bilinear in the samples ``v_k`` and their signals ``w_k``, and smooth:
Gauss-Newton converges in a few steps from a start near the samples, to
the least-squares fit of the whole gradient. On a gradient exact to its
round-off (float32) that fit is what round-off allows for each sample: a
sample's error is about the round-off over its share of the gradient,
whereas ``V = C^{-1}`` from separately found columns spreads the error of
the weakest sample's column over every row.

The patterns of a float32 gradient are exact too (an inactive neuron's
entry is an exact 0), but a pattern read off approximate samples (the sign
of ``omega_j . v_k + b0``) is wrong near the kink; the data decide those
entries (:func:`pattern_flips`): an entry flips where the other slope fits
the gradient row better by more than its noise.

The fit also gives each sample's standard error (``sigma^2 (J^T J)^{-1}``,
``sigma`` the residual's level), the certificate of a float32 row.
"""

import numpy as np
from scipy import linalg

from ._lm import solve_spd

__all__ = ["fixed_pattern_fit", "pattern_flips", "polish_with_patterns", "span_fit",
           "input_fit"]

# a row whose residual exceeds this many times the typical row's (over their
# round-off) is outlying: a wrong slope moves a row by its sample's whole
# term, orders of magnitude above round-off, whose own spread over the rows
# is heavy-tailed (a tenth of a float32 gradient's rows beyond the
# chi-square level's 10 standard deviations, every slope right)
_OUTLIER = 30.0
# while slopes are being corrected, rows beyond the chi-square level by this
# many of its standard deviations are left out of the next fit (the fit
# tightens round by round, from a start whose wrong slopes spread their
# error over every row)
_TIGHT = 10.0
# a slope flips only where that explains this share of its row's residual
_EXPLAINED = 0.5
# pattern iterations of the rows whose pattern is not known
_REPATTERN_ROUNDS = 8


class _Tangent:
    """The steps ``Q z`` that keep ``e . v = c``: the other coordinates where
    ``e`` is a coordinate vector (a bias input in input coordinates),
    else an orthonormal basis of ``e``'s complement; all steps without a
    constraint."""

    def __init__(self, n_dims, fixed):
        self.n_dims, self.Q, self.free = n_dims, None, np.arange(n_dims)
        if fixed is not None:
            e = np.asarray(fixed[0], dtype=float)
            nonzero = np.flatnonzero(e)
            if len(nonzero) == 1:
                self.free = np.delete(np.arange(n_dims), nonzero[0])
            else:
                self.Q = linalg.null_space(e[None, :])

    def reduce(self, M):
        """``M Q`` for rows ``M`` ``(.., n_dims)``."""
        return M[..., self.free] if self.Q is None else M @ self.Q

    def expand(self, Z):
        """``Z Q^T``: steps ``(B, n_free)`` in ``n_dims`` coordinates."""
        if self.Q is not None:
            return Z @ self.Q.T
        out = np.zeros((Z.shape[0], self.n_dims))
        out[:, self.free] = Z
        return out


def _model(V, U, A, S):
    """``beta`` ``(m, B)`` and the model rows ``beta V``."""
    beta = S * (A @ U.T)
    return beta, beta @ V


class _Normal:
    """The normal equations of the fixed-pattern model at ``(V, U)``, kept
    in their structure: ``J^T J = [[G (x) I, H_vw], [H_vw^T, H_ww]]`` with
    ``G = beta^T beta``, ``H_vw[(k, i), (l, d)] = (Q^T v_l)_i N[k, l, d]``
    and ``H_ww[(k, c), (l, d)] = (v_k . v_l) M[k, c, l, d]``; the damped
    system is solved through the Schur complement of the ``v`` block, whose
    cost does not grow with the number of coordinates."""

    def __init__(self, V, U, P, A, S, tangent):
        B, K = U.shape
        beta, model = _model(V, U, A, S)
        r = P - model
        SA = (S[:, :, None] * A[:, None, :]).reshape(len(A), B * K)
        self.G = beta.T @ beta
        self.N = (beta.T @ SA).reshape(B, B, K)
        self.M = (SA.T @ SA).reshape(B, K, B, K)
        self.Y = tangent.reduce(V)  # (B, n_free)
        self.gram = V @ V.T
        self.gram_free = self.Y @ self.Y.T
        self.gv = tangent.reduce(beta.T @ r)  # (B, n_free)
        self.gw = np.einsum("jk,jd->kd", S * (r @ V.T), A)
        self.cost = 0.5 * float(np.sum(r * r))
        self.B, self.K = B, K

    def hww(self):
        B, K = self.B, self.K
        return (self.M * self.gram[:, None, :, None]).reshape(B * K, B * K)

    def solve(self, damping):
        """The damped step ``(dz (B, n_free), dy (B, K))`` and its predicted
        decrease of the cost."""
        B, K = self.B, self.K
        Gd = self.G + damping * np.diag(np.diag(self.G))
        d = np.sqrt(np.maximum(np.diag(Gd), np.finfo(float).tiny))
        Ginv = linalg.pinvh(Gd / d[:, None] / d[None, :]) / d[:, None] / d[None, :]
        N2 = self.N.reshape(B, B * K)
        Hww = self.hww()
        Hww = Hww + damping * np.diag(np.diag(Hww))
        schur = Hww - (N2.T @ Ginv @ N2) * np.kron(self.gram_free, np.ones((K, K)))
        u = Ginv @ self.gv  # (B, n_free)
        T = u @ self.Y.T  # T[k, l] = u_k . Y_l
        rhs = self.gw.reshape(-1) - np.einsum("kld,kl->ld", self.N, T).reshape(-1)
        dy = solve_spd(schur, rhs).reshape(B, K)
        R = np.einsum("kld,ld->kl", self.N, dy)
        dz = Ginv @ (self.gv - R @ self.Y)
        # with (H + damping D) s = g: s^T H s = s^T g - damping s^T D s
        g_s = float(np.sum(dz * self.gv) + np.sum(dy * self.gw))
        d_s = float(np.sum(np.diag(self.G)[:, None] * dz**2)
                    + np.sum(np.diag(self.hww()).reshape(B, K) * dy**2))
        return dz, dy, 0.5 * (g_s + damping * d_s)

    def error_traces(self, sigma2, directions=None):
        """Each sample's ``trace Cov(z_k)`` at the fit: ``sigma2 (J^T J)^{-1}``
        by blocks, ``sigma2 (G^{-1}_kk I + X_k S^{-1} X_k^T)`` with ``S`` the
        Schur complement and ``X_k`` the ``(n_free, B K)`` coupling of ``z_k``
        (no ``n_free``-square matrix: ``n_free`` may be in the thousands).
        With ``directions`` ``(B, n_free)`` (unit rows), the variance along
        each is left out (a sample known up to its scale)."""
        B, K = self.B, self.K
        d = np.sqrt(np.maximum(np.diag(self.G), np.finfo(float).tiny))
        Ginv = linalg.pinvh(self.G / d[:, None] / d[None, :]) / d[:, None] / d[None, :]
        N2 = self.N.reshape(B, B * K)
        schur = self.hww() - (N2.T @ Ginv @ N2) * np.kron(self.gram_free, np.ones((K, K)))
        ds = np.sqrt(np.maximum(np.diag(schur), np.finfo(float).tiny))
        Sinv = linalg.pinvh(schur / ds[:, None] / ds[None, :]) / ds[:, None] / ds[None, :]
        GN = np.einsum("kq,qld->kld", Ginv, self.N)  # (B, B, K)
        n_free = self.Y.shape[1]
        traces = np.empty(B)
        for k in range(B):
            Xk = (self.Y.T[:, :, None] * GN[k][None, :, :]).reshape(n_free, B * K)
            traces[k] = Ginv[k, k] * n_free + np.sum((Xk @ Sinv) * Xk)
            if directions is not None:
                x = directions[k] @ Xk
                traces[k] -= Ginv[k, k] + x @ Sinv @ x
        return sigma2 * np.maximum(traces, 0.0)


def fixed_pattern_fit(V, U, P, A, S, *, fixed=None, max_iter=30, ftol=1e-10):
    """Levenberg-Marquardt fit of ``(V, U)`` to ``P`` with the pattern ``S``
    fixed (the normal equations in their structure, :class:`_Normal`).

    Parameters
    ----------
    V : ndarray of shape (B, n_dims)
        Starting samples.
    U : ndarray of shape (B, K)
        Starting signals.
    P : ndarray of shape (m, n_dims)
        Gradient rows (weighted rows: ``P`` and ``A`` scaled alike).
    A : ndarray of shape (m, K)
        Output weights.
    S : ndarray of shape (m, B)
        ``sigma'`` of each sample at each neuron (``hi`` or ``lo``).
    fixed : tuple (e, c) or None
        The constraint ``e . v_k = c`` (a bias input).
    max_iter : int
    ftol : float
        Relative decrease of the cost at which the fit stops.

    Returns
    -------
    V, U : ndarray
    normal : _Normal
        The normal equations at the result.
    n_iter : int
    """
    V = np.array(V, dtype=float)
    U = np.array(U, dtype=float)
    if fixed is not None:
        e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
        V = V + np.outer(c - V @ e, e) / (e @ e)
    tangent = _Tangent(V.shape[1], fixed)
    normal = _Normal(V, U, P, A, S, tangent)
    damping, nu, n_iter = 1e-3, 2.0, 0
    for n_iter in range(1, max_iter + 1):
        dz, dy, predicted = normal.solve(damping)
        V_new, U_new = V + tangent.expand(dz), U + dy
        r = P - _model(V_new, U_new, A, S)[1]
        new_cost = 0.5 * float(np.sum(r * r))
        gain = (normal.cost - new_cost) / predicted if predicted > 0 else -1.0
        if gain > 0:
            decrease = (normal.cost - new_cost) / max(normal.cost, np.finfo(float).tiny)
            V, U = V_new, U_new
            normal = _Normal(V, U, P, A, S, tangent)
            damping *= max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
            nu = 2.0
            if decrease < ftol or predicted < ftol * normal.cost:
                break
        else:
            damping *= nu
            nu *= 2.0
            if damping > 1e16:
                break
    return V, U, normal, n_iter


def pattern_flips(V, U, P, A, S, lo, hi, noise):
    """The pattern with the entries flipped whose other slope fits their
    gradient row better by more than its noise allows, and their number.

    ``noise`` ``(m,)``: the standard deviation of one entry of each row.
    Changing entry ``(j, k)`` moves row ``j``'s model by ``d = (s' - s)
    (a_j . w_k) v_k``; its squared residual falls by ``2 r_j . d - |d|^2``,
    which on a right entry exceeds ``6 noise_j |d|`` with the odds of a
    3-sigma draw (``r_j . d`` is then noise), and it must remove at least
    ``_EXPLAINED`` of the row's squared residual. One entry per row (the
    best) per call: entries of one row interact."""
    beta, model = _model(V, U, A, S)
    r = P - model
    a = A @ U.T  # (m, B)
    other = np.where(S == hi, lo, hi)
    # r_j - (other - S) a_jk v_k: the squared norm, expanded
    delta = (other - S) * a  # (m, B)
    rv = r @ V.T  # (m, B)
    vv = np.sum(V * V, axis=1)
    gain = 2 * delta * rv - delta**2 * vv[None, :]  # decrease of ||r_j||^2
    k = np.argmax(gain, axis=1)
    pick = np.arange(len(k)), k
    # (and the flip must explain most of the row's residual: while the fit
    # is off, every row's residual has a systematic part that some flip
    # would reduce a little)
    rows = np.flatnonzero((gain[pick] > 6 * noise * np.abs(delta[pick]) * np.sqrt(vv[k]))
                          & (gain[pick] > _EXPLAINED * np.sum(r * r, axis=1)))
    S = S.copy()
    S[rows, k[rows]] = other[rows, k[rows]]
    return S, len(rows)


def _row_weights(P):
    """``1 / ||p_j||`` (a row's round-off grows with its size), 0 for the
    zero rows, capped at 1e6 over the largest row's."""
    norms = np.linalg.norm(P, axis=1)
    top = float(norms.max()) if len(norms) else 0.0
    return np.where(norms > 0, 1.0 / np.maximum(norms, 1e-6 * top), 0.0)


def _entry_noise(r_weighted, n_dims):
    """The standard deviation of one entry of the weighted residual, robust
    to a few rows of wrong pattern: from the median row (chi-square with
    ``n_dims`` degrees of freedom)."""
    sq = np.sum(r_weighted**2, axis=1)
    sq = sq[sq > 0]
    if not len(sq):
        return 0.0
    median_chi2 = n_dims * (1 - 2 / (9 * n_dims)) ** 3
    return float(np.sqrt(np.median(sq) / median_chi2))


def polish_with_patterns(P, A, S, V, U, hi, lo, *, fixed=None, weighted=False,
                         trim=False, max_rounds=8):
    """Fit ``(V, U)`` with the pattern ``S`` fixed, let the data flip the
    entries they contradict (:func:`pattern_flips`), until none flips.

    ``weighted``: rows weighted by their round-off (``1 / ||p_j||``), the
    least-squares fit of a float32 gradient; a wrong slope in a small row
    then weighs as much as a whole sample, so start unweighted. ``trim``:
    rows whose residual (over their round-off) is ``_TIGHT`` standard
    deviations above the chi-square level after a round are left out of
    the next fit (robust while slopes are wrong); at the end, only those
    ``_OUTLIER`` times above the typical row stay out.

    Returns a Bunch: ``V``, ``U``, ``S``, ``sigma2`` (the variance of one
    entry of the weighted residual over the rows kept), ``weights`` ``(m,)``
    (0 for the rows left out), ``normal`` (the normal equations at the
    result, :class:`_Normal`) and ``n_rounds``.
    """
    from sklearn.utils import Bunch

    # the rows' round-off is proportional to their size: the noise of each
    # row (for the flips and the outliers) is read through these weights,
    # whether the fit is weighted or not
    base = _row_weights(P)
    fit_base = base if weighted else (base > 0).astype(float)
    weights = fit_base
    n_dims = V.shape[1]
    n_rounds, changed = 0, False
    for n_rounds in range(1, max_rounds + 1):
        Pw, Aw = P * weights[:, None], A * weights[:, None]
        V, U, normal, _ = fixed_pattern_fit(V, U, Pw, Aw, S, fixed=fixed)
        r = (P - _model(V, U, A, S)[1]) * base[:, None]
        sigma = _entry_noise(r[weights > 0], n_dims)
        noise = np.where(base > 0, sigma / np.where(base > 0, base, 1.0), np.inf)
        level = sigma**2 * (n_dims + _TIGHT * np.sqrt(2 * n_dims))
        # a wrong slope shows as an outlying row: only those are flipped
        # (while the fit is still off, every row's residual has its
        # systematic part, which flips elsewhere would chase)
        outlying = np.sum(r * r, axis=1) > level
        S, n_flipped = pattern_flips(V, U, P, A, S, lo, hi,
                                     np.where(outlying, noise, np.inf))
        keep = weights
        if trim:
            r = (P - _model(V, U, A, S)[1]) * base[:, None]
            keep = np.where(np.sum(r * r, axis=1) <= level, fit_base, 0.0)
        changed = n_flipped or np.any((keep > 0) != (weights > 0))
        weights = keep
        if not changed:
            break
    if trim:
        # the rows left out at the chi-square level come back unless they
        # are outlying by far: round-off itself is heavier-tailed
        r = (P - _model(V, U, A, S)[1]) * base[:, None]
        sigma = _entry_noise(r[weights > 0], n_dims)
        keep = np.where(np.sum(r * r, axis=1) <= n_dims * (_OUTLIER * sigma) ** 2,
                        fit_base, 0.0)
        changed = changed or np.any((keep > 0) != (weights > 0))
        weights = keep
    if changed:
        Pw, Aw = P * weights[:, None], A * weights[:, None]
        V, U, normal, _ = fixed_pattern_fit(V, U, Pw, Aw, S, fixed=fixed)
    r = (P - _model(V, U, A, S)[1]) * np.where(weights > 0, base, 0.0)[:, None]
    n_kept = int(np.sum(weights > 0))
    n_free = n_dims - (fixed is not None)
    dof = max(1, n_kept * n_dims - V.shape[0] * (n_free + A.shape[1]))
    return Bunch(V=V, U=U, S=S, sigma2=float(np.sum(r * r)) / dof, weights=weights,
                 normal=normal, n_rounds=n_rounds)


def _relaxed_start(P, A, S, fixed, V):
    """Samples and signals from the linear relaxation of the fixed-pattern
    model (``Y_k = w_k v_k^T`` free: one least-squares solve), each ``Y_k``
    cut to its leading singular pair; ``(V, None)`` where it is not
    determined (``m < 2 B K``) or a row cannot meet the constraint."""
    m, K = A.shape
    B = S.shape[1]
    if m < 2 * B * K:
        return V, None
    design = (S[:, :, None] * A[:, None, :]).reshape(m, B * K)
    Y = linalg.lstsq(design, P, check_finite=False)[0].reshape(B, K, -1)
    V_new, U_new = V.copy(), np.zeros((B, K))
    for k in range(B):
        u, sv, vt = np.linalg.svd(Y[k], full_matrices=False)
        v, w = vt[0], u[:, 0] * sv[0]
        if fixed is not None:
            dot = float(v @ fixed[0])
            if abs(dot) < 1e-8 * np.linalg.norm(fixed[0]):
                return V, None
            scale = fixed[1] / dot
        else:
            scale = np.sign(v @ V[k]) or 1.0
        V_new[k], U_new[k] = v * scale, w / scale
    return V_new, U_new


def _repattern(P, Omega, A, bias_mean, kink, hi, lo, fit, unknown, fixed, misfits_of):
    """The pattern iteration of the rows whose pattern the data did not
    give (``unknown``): their slopes from the signs of their fitted
    pre-activations, the fit again, while that lowers the residual.

    Their slopes came from the start's signs (a guess, or the complement of
    the found duals), wrong on a tenth to a half of the neurons; a weak
    sample's wrong slopes leave a residual of its share of the gradient,
    far above round-off, that moves the strong samples off too (measured,
    float32 leaky ReLU at trained weights, B = 32, 10 weak samples left:
    strong rows 7 times their round-off bound)."""
    def residual(f):
        return float(np.linalg.norm(P - _model(f.V, f.U, A, f.S)[1]))

    current = residual(fit)
    for _ in range(_REPATTERN_ROUNDS):
        on = Omega @ fit.V.T + bias_mean - kink > 0
        S = fit.S.copy()
        S[:, unknown] = np.where(on[:, unknown], hi, lo)
        if np.array_equal(S, fit.S):
            break
        trial = polish_with_patterns(P, A, S, fit.V, fit.U, hi, lo, fixed=fixed, trim=True)
        new = residual(trial)
        if not new < current:
            break
        trial.misfits = misfits_of(trial)
        fit, current = trial, new
    return fit


def span_fit(P, Omega, A, activation, bias_mean, V, active, known, *, fixed):
    """The batch of a two-slope layer from a gradient exact to its round-off
    (float32), in span coordinates, given approximate samples and the
    patterns found on the data.

    Parameters
    ----------
    P, Omega, A : ndarray of shape (m, B), (m, B), (m, K)
        The query in span coordinates.
    activation : Activation
        ReLU or leaky ReLU (:func:`skrecon._relu_patterns.two_slopes`).
    bias_mean : float
    V : ndarray of shape (B, B)
        Start.
    active : ndarray of bool, shape (B, m), or None
        Each row's pattern on the data where ``known``; elsewhere the sign
        of its pre-activations at ``V`` starts it.
    known : ndarray of bool, shape (B,), or None
    fixed : tuple (e, c) or None

    Returns
    -------
    fit : Bunch
        ``V``, ``U``, ``S`` (``(m, B)``, the slopes fitted), ``misfits``
        ``(B,)`` each sample's column-space misfit with its fitted slopes,
        ``relative_residual``, ``n_rounds`` and ``rows`` (bool ``(m,)``: the
        neurons the fit kept, the others' residuals outlying).
    """
    from sklearn.utils import Bunch

    from ._gradient_model import signals_from_slopes
    from ._misfit import orth
    from ._relu_patterns import two_slopes

    kink, hi, lo = two_slopes(activation)
    on = Omega @ V.T + bias_mean - kink > 0  # (m, B)
    if active is not None:
        on = np.where(known[None, :], active.T, on)
    S = np.where(on, hi, lo)
    Q = orth(P)

    def misfits_of(fit):
        beta = _model(fit.V, fit.U, A, fit.S)[0]
        inside = Q @ (Q.T @ beta)
        return (np.sum((beta - inside) ** 2, axis=0)
                / np.maximum(np.sum(beta**2, axis=0), np.finfo(float).tiny))

    # two starts: the given samples, and the relaxation's (which does not
    # depend on them: better where they are poor, e.g. V = C^{-1} of noisy
    # duals; worse for a weak sample beside wrong slopes of strong ones);
    # the fit with more samples whose columns fit the span is kept
    best = None
    V1, U1 = _relaxed_start(P, A, S, fixed, V)
    for start, signals in [(V, None), (V1, U1)]:
        if signals is None:
            if start is not V and U1 is None:
                continue
            signals = signals_from_slopes(S, start, P, A, ridge=1e-12)
        fit = polish_with_patterns(P, A, S, start, signals, hi, lo, fixed=fixed, trim=True)
        fit.misfits = misfits_of(fit)
        score = np.sort(np.log10(np.maximum(fit.misfits, 1e-300)))
        if best is None or tuple(score[::-1]) < tuple(best[0][::-1]):
            best = (score, fit)
    fit = best[1]
    unknown = np.ones(V.shape[0], dtype=bool) if active is None else ~known
    if np.any(unknown):
        fit = _repattern(P, Omega, A, bias_mean, kink, hi, lo, fit, unknown, fixed,
                         misfits_of)
    model = _model(fit.V, fit.U, A, fit.S)[1]
    misfits = fit.misfits
    residual = float(np.linalg.norm(P - model) / np.linalg.norm(P))
    return Bunch(V=fit.V, U=fit.U, S=fit.S, misfits=misfits, relative_residual=residual,
                 n_rounds=fit.n_rounds, rows=fit.weights > 0)


def input_fit(X, A, S, samples, U, activation, *, bias, rows):
    """The span fit carried to input coordinates: the least-squares fit of
    the whole gradient ``X`` (``(m, n_cols)``, the bias column last when
    ``bias``) on the neurons ``rows`` (bool ``(m,)``, those the span fit
    kept) with the slopes ``S`` fixed, rows weighted by their round-off;
    the span of a float32 gradient is itself off by its round-off in the
    weak samples' directions, which a fit inside it cannot see.

    Returns a Bunch: ``samples`` ``(B, n_inputs)``, ``U``, ``errors``
    ``(B,)`` (each sample's standard error over its norm; the angle for a
    sample known up to scale) and ``relative_residual`` (on all neurons).
    """
    from sklearn.utils import Bunch

    B = samples.shape[0]
    V = np.hstack([samples, np.ones((B, 1))]) if bias else samples.copy()
    fixed = None
    if bias:
        e = np.zeros(V.shape[1])
        e[-1] = 1.0
        fixed = (e, 1.0)
    weights = _row_weights(X) * rows
    Xw, Aw = X * weights[:, None], A * weights[:, None]
    V, U, normal, _ = fixed_pattern_fit(V, U, Xw, Aw, S, fixed=fixed)
    r = Xw - _model(V, U, Aw, S)[1]
    n_free = V.shape[1] - (fixed is not None)
    dof = max(1, int(np.sum(weights > 0)) * V.shape[1] - B * (n_free + A.shape[1]))
    x = V[:, :-1] if bias else V
    norms = np.maximum(np.linalg.norm(x, axis=1), np.finfo(float).tiny)
    directions = None if bias or not activation.scale_free else x / norms[:, None]
    traces = normal.error_traces(float(np.sum(r * r)) / dof, directions)
    residual = float(np.linalg.norm(X - _model(V, U, A, S)[1]) / np.linalg.norm(X))
    return Bunch(samples=x, U=U, errors=np.sqrt(traces) / norms,
                 relative_residual=residual)
