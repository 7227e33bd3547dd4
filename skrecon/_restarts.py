"""From the moment tensor to refined samples: restarts and re-seeding.

One restart draws random Jennrich contractions, polishes the factors by
CP-ALS, turns them into a start (scale and sign from the bias coordinate, or
from the moment ratio without bias) and refines it by Levenberg-Marquardt on
a subset of neurons. For a piecewise-linear activation (ReLU) the start only
seeds a sample-by-sample hyperplane search, made exact by the margin-trimmed
pattern iteration, before that refinement. Restarts run under joblib with
seeds spawned from the estimator's ``random_state``, so results do not
depend on ``n_jobs`` or on the backend.

When the refinement stalls in a local minimum - typically two nearly
parallel fitted samples with large opposite signals standing in for a sample
that the start missed - the residual gradient still carries the missing
samples: its own moment tensor, decomposed at a small rank, proposes
replacements, and the replacement that lowers the residual most is kept
(re-seeding).

The tensor work (Jennrich, CP-ALS, the starts) is ``B``-sized and runs on the
host; the refinement's products over neurons run in the query's namespace
(:mod:`skrecon.refine`). The hyperplane search and the pattern iteration
(piecewise-linear activations) and the variable-projection fit (many
outputs) run on the host, on a copy of the projected query (``m x B``).
"""

import numpy as np

from ._piecewise import search_samples
from ._varpro import output_range_refinement
from .decomposition import cp_als, jennrich
from .refine import (fit_signals, gradient_model, is_piecewise_linear,
                     levenberg_marquardt, pattern_iteration)

# ALS sweeps per restart, LM steps per restart / per re-seeding trial
_ALS_ITER = 300
_RESTART_LM_ITER = 60
_RESEED_LM_ITER = 30
# from this many outputs on (a deeper net's first layer feeds a wide layer)
# new starts are refined with the signals projected out first
_VARPRO_MIN_OUTPUTS = 16
_VARPRO_ITER = 60
_RESEED_RANK = 2
_RESEED_TRIALS = 2
_RESEED_MAX_REPLACED = 8


def _contract_extra_modes(tensor, rng, return_vectors=False):
    """Contract Hermite modes beyond the third with random unit vectors.

    Component ``i`` of the result carries the factor ``prod_eta eta . h_i``;
    ``return_vectors`` also returns the vectors ``eta`` (to divide it out).
    """
    etas = []
    while tensor.ndim > 3:
        eta = rng.standard_normal(tensor.shape[-1])
        eta /= np.linalg.norm(eta)
        etas.append(eta)
        tensor = tensor @ eta
    return (tensor, etas) if return_vectors else tensor


def _fold(tensor):
    """``(B, K, L, B, ...)`` -> ``(B * K * L, B, ...)``: slices into the first mode."""
    return tensor.reshape((-1,) + tensor.shape[3:])


def _first_mode_vectors(first, n_dims):
    """Leading direction of each first-mode factor ``(n_dims * n_slices,)``.

    The first mode folds the gradient coordinates with the output (and bias
    order) slices: each component is ``v_i (x) w_i``; the best rank-one
    approximation recovers ``v_i`` up to scale and sign.
    """
    out = np.empty((first.shape[1], n_dims))
    for i, col in enumerate(first.T):
        u, s, _ = np.linalg.svd(col.reshape(n_dims, -1), full_matrices=False)
        out[i] = u[:, 0] * s[0]
    return out


def bias_constraint(proj):
    """``(e, c)``: every scaled sample has ``e . v = c`` (its bias input is 1)."""
    if not proj.has_bias:
        return None
    return proj.bias_row, proj.column_scale[-1]


def _scale_by_bias(v, proj):
    """Scale first-mode vectors so that their bias coordinate is exact."""
    e, c = bias_constraint(proj)
    last = v @ e
    last = np.where(np.abs(last) > 1e-300, last, 1e-300)
    return v * (c / last)[:, None]


def moment_ratio_norms(h, factors, lower_t0, order, activation, weight_std, etas=()):
    """Signed norms ``r_i`` of the samples ``r_i h_i`` without a bias.

    The degree-0 moment is ``T_0 = sum_i mu_1(|r_i|) r_i w_i h_i`` and the
    moment tensor ``sum_i mu_{p+1}(|r_i|) r_i^(p+1) w_i h_i^(p+1)``; their
    per-sample ratio ``r^p mu_{p+1}(|r|) / mu_1(|r|)`` is a known function of
    ``r`` alone, inverted on a grid. It is even in ``r`` for ``p = 2`` (the
    sign is left to the refinement, and is not identifiable for an even
    ``sigma'``). For scale-free activations (ReLU) it is constant: the norm
    is not identifiable and unit input norms are returned. ``etas`` are the
    vectors that contracted the Hermite modes beyond the third: they
    multiplied each component by ``eta . h_i``, which is divided out.
    """
    n = h.shape[0]
    p = order - 1
    if activation.scale_free:
        return np.full(n, weight_std)  # |x| = 1 in input units
    kappa = np.linalg.lstsq(h.T, lower_t0.reshape(n, -1), rcond=None)[0]
    lam = np.empty_like(kappa)
    for i in range(n):
        sign = 1.0
        for f in factors[2:]:
            sign *= np.sign(f[:, i] @ h[i]) or 1.0
        lam[i] = sign * (h[i] @ factors[0][:, i].reshape(n, -1)) * np.prod(
            [np.linalg.norm(f[:, i]) for f in factors[1:]])
        for eta in etas:
            lam[i] /= eta @ h[i]
    rho = np.sum(lam * kappa, axis=1) / np.maximum(np.sum(kappa * kappa, axis=1), 1e-300)
    grid = np.geomspace(1e-2, 1e2, 400)
    ratio = grid**p * activation.mu(order, grid) / activation.mu(1, grid)
    signed_grid = np.concatenate([-grid[::-1], grid])
    signed_ratio = np.concatenate([(-1) ** p * ratio[::-1], ratio])
    idx = np.argmin(np.abs(signed_ratio[None, :] - rho[:, None]), axis=1)
    return signed_grid[idx]


def start_from_factors(factors, proj, activation, lower_t0, order, weight_std, etas=()):
    """Samples ``V`` (scaled span coordinates) from CP factors.

    With a bias, the bias coordinate of each first-mode vector pins its scale
    and sign exactly (DESIGN F6). Without one, the direction comes from the
    Hermite mode and the norm from :func:`moment_ratio_norms`.
    """
    if proj.has_bias:
        return _scale_by_bias(_first_mode_vectors(factors[0], proj.P.shape[1]), proj)
    h = factors[1].T / np.linalg.norm(factors[1].T, axis=1, keepdims=True)
    norms = moment_ratio_norms(h, factors, lower_t0, order, activation, weight_std, etas)
    return h * norms[:, None]


def _wide_outputs(proj, activation):
    """Whether new starts go through :func:`output_range_refinement` first:
    many outputs (the joint normal matrix is ``B (B + K)`` square) and a
    smooth activation (its slope divides the coefficients)."""
    return (proj.A.shape[1] >= _VARPRO_MIN_OUTPUTS
            and not is_piecewise_linear(activation)
            and proj.P.shape[1] == proj.Omega.shape[1])


def _refine(V, proj, rows, activation, max_iter, U=None, **kwargs):
    """Refine samples ``V`` by Levenberg-Marquardt on ``rows``.

    For a piecewise-linear activation a new start (``U`` None) is first
    searched sample by sample and made exact by the trimmed pattern
    iteration, both on all neurons (the boundaries of nearly parallel
    samples are told apart by few neurons).
    """
    fixed = bias_constraint(proj)
    if U is None and _wide_outputs(proj, activation):
        host = proj.to_host()
        start = output_range_refinement(V, host.P, host.Omega, host.A, activation,
                                        proj.bias_mean, fixed=fixed,
                                        max_iter=_VARPRO_ITER)
        if np.all(np.isfinite(start.V)) and np.all(np.isfinite(start.U)):
            V, U = start.V, start.U
    elif U is None and is_piecewise_linear(activation):
        host = proj.to_host()
        full = (host.P, host.Omega, host.A, activation, proj.bias_mean)
        found, _ = search_samples(V, *full, fixed=fixed, rows=rows)
        if found.shape == V.shape:
            start = pattern_iteration(found, *full, fixed=fixed)
            V, U = start.V, start.U
    args = proj.take_rows(rows) + (activation, proj.bias_mean)
    if U is None:
        U = fit_signals(V, *args)
    return levenberg_marquardt(V, U, *args, fixed=fixed, max_iter=max_iter, **kwargs)


def run_restart(seed, tensor, proj, activation, lower_t0, order, weight_std, rows):
    """One restart: Jennrich, CP-ALS, start, short refinement on ``rows``.

    Returns
    -------
    result : RefinementResult
    cp_error : float
        Relative error of the CP fit of the moment tensor.
    """
    rng = np.random.default_rng(seed)
    n = proj.P.shape[1]
    folded, etas = _contract_extra_modes(_fold(tensor), rng, return_vectors=True)
    factors = jennrich(folded, n, rng)
    factors, cp_error = cp_als(folded, factors, max_iter=_ALS_ITER)
    V = start_from_factors(factors, proj, activation, lower_t0, order, weight_std, etas)
    if not np.all(np.isfinite(V)):
        return None, cp_error
    with np.errstate(all="ignore"):
        result = _refine(V, proj, rows, activation, _RESTART_LM_ITER)
    if not (np.isfinite(result.relative_residual) and np.all(np.isfinite(result.V))):
        return None, cp_error
    return result, cp_error


def _reseed_candidates(V, U, proj, activation, rng):
    """Candidate samples from the moment tensor of the residual gradient."""
    n = V.shape[0]
    residual = proj.P - gradient_model(V, U, proj.Omega, proj.A, activation, proj.bias_mean)
    tensor = _contract_extra_modes(_fold(proj.residual_moment_tensor(residual)), rng)
    candidates = []
    for _ in range(_RESEED_TRIALS):
        init = [rng.standard_normal((dim, _RESEED_RANK)) for dim in tensor.shape]
        factors, _ = cp_als(tensor, init, max_iter=_ALS_ITER)
        if proj.has_bias:
            cand = _scale_by_bias(_first_mode_vectors(factors[0], n), proj)
        else:
            cand = factors[1].T / np.linalg.norm(factors[1].T, axis=1, keepdims=True)
            cand = cand * np.median(np.linalg.norm(V, axis=1))
        candidates.extend(c for c in cand if np.all(np.isfinite(c)))
    return candidates


def reseed(result, proj, activation, rows, seed, success=1e-8):
    """Replace one sample by a candidate from the residual; keep the best.

    The samples tried for replacement are those with the largest signals
    (a degenerate pair of fitted samples has large opposite signals), at
    most ``8`` of them, in that order; the trials stop at the first whose
    relative residual falls below ``success``. Returns the best trial's
    ``RefinementResult`` if it improves on ``result``, else ``result``.
    """
    rng = np.random.default_rng(seed)
    V, U = result.V, result.U
    candidates = _reseed_candidates(V, U, proj, activation, rng)
    order = np.argsort(-np.linalg.norm(U, axis=1) * np.linalg.norm(V, axis=1))
    best = result
    for cand in candidates:
        for k in order[:_RESEED_MAX_REPLACED]:
            trial_V = V.copy()
            trial_V[k] = cand
            with np.errstate(all="ignore"):
                trial = _refine(trial_V, proj, rows, activation, _RESEED_LM_ITER)
            if (np.isfinite(trial.relative_residual)
                    and trial.relative_residual < best.relative_residual):
                best = trial
                if best.relative_residual < success:
                    return best
    return best


def refine(result, proj, activation, rows, max_iter, **kwargs):
    """Continue a refinement from a previous result."""
    return _refine(result.V, proj, rows, activation, max_iter, U=result.U, **kwargs)
