"""The search of the batch in span coordinates: the first half of the core.

One plain function, :func:`reconstruct_in_span`, holds the orchestration
that the functional core (:func:`skrecon._batch.reconstruct_batch`) runs on
a projected query; it takes arrays, hyper-parameters and, for the moment
tensor's starts, a callable, and never sees an estimator:

    starts (moment-tensor factors, then random directions)
      -> per-sample column-space search with deflation (:mod:`skrecon.search`)
      -> signals by least squares
      -> exact finish of piecewise-linear activations (pattern iteration)
      -> joint Levenberg-Marquardt polish of the whole batch (:mod:`skrecon.refine`)

Every random draw comes from the generator passed in, so the result
depends on that seed only (not on ``n_jobs`` or the joblib backend).
"""

from dataclasses import replace

import numpy as np
from sklearn.utils import Bunch

from .decomposition import tensor_starts
from ._gradient_model import model_from_slopes, signals_from_slopes, slopes_at
from .refine import (RefinementResult, better_rows, is_piecewise_linear,
                     levenberg_marquardt, pattern_iteration)
from ._crossings import crossing_starts
from ._relu_patterns import ica_guesses, pattern_samples, two_slopes
from ._pattern_polish import span_fit
from ._certificate import row_error_bounds
from ._misfit import Slopes, is_repeat, onto_constraint, orth, sample_misfits
from .search import SearchResult, search_samples

# rows of the searches: for a few outputs, a thousand or 64 per unknown of
# one sample's column-space condition (B + K), whichever is more (fewer rows
# make each search cheaper; the samples found are polished on all rows);
# with many outputs each evaluation costs O(rows K^2), so a thousand or
# four per unknown. On a gradient exact to float64 the misfit's zero is
# exact on any subset: 16 per unknown (32x32x3 patches, m = 20 000, tanh,
# B = 128: 128 of 128 exact in 16.5 s against 64 s at 64 per unknown, 136
# starts against 128; B = 16 / 64 and digits B = 32 / 48, tanh, sigmoid,
# GELU: the same rows, to 1e-11). Noisy ones keep 64: eight digits at
# 1 % noise, 16 at 0.1 % and 32 at 0.01 %, seeds 0-2, gave the same rows at
# 16 and 64 per unknown but one (16 digits, seed 2: worst 0.43 at 16,
# 1.7e-3 at 64)
_MIN_SEARCH_ROWS = 1000
_ROWS_PER_UNKNOWN = 64
_ROWS_PER_UNKNOWN_EXACT = 16
_ROWS_PER_UNKNOWN_WIDE = 4
# the joint polish assembles a (B (B + K))^2 normal matrix: above this many
# parameters it is skipped (the per-sample polish already fits each sample)
_JOINT_MAX_PARAMS = 2500
# signals by one joint least-squares solve up to this many unknowns,
# sample by sample above
_JOINT_SIGNALS_MAX = 512
# the search finds samples from about 5 B live neurons: measured at
# trained weights (64 -> H -> 10 tanh, Adam 50 epochs, float64, held-out
# batch), B = 16 / 32 / 48 had every row exact from H = 72 / 144 / 240 and
# none found at H = 64 / 128 / 224 (after 18 / 45 / 10 s of search); and
# from twice the unknowns of one sample, 2 (B + K), for many outputs (B = 32,
# K = 128: exact at 512). Below it nothing is searched, no row counts as found
_NEURONS_PER_SAMPLE = 5
_NEURONS_PER_UNKNOWN = 2
# a piecewise-linear search is accepted at this smoothed misfit: about a
# degree from a sample, inside the basin of the exact pattern iteration
_PIECEWISE_ACCEPT = 1e-2
# a noisy piecewise-linear fit is confirmed on the neurons farther than
# this (a fraction of each sample's pre-activation std) from every kink
_KINK_MARGIN = 0.01
# an exact float64 search reaches ~1e-25; a sample counts as found below
_EXACT_ACCEPT = 1e-10
# searches of a noisy gradient from scratch while samples are missing
_NOISY_ATTEMPTS = 4
# a gradient whose in-span noise is at most this many times its dtype's eps
# is exact to round-off (a float32 model's gradient: 1e-8 at trained weights)
_ROUNDOFF_NOISE = 100
# the precision a float32 row flagged found is guaranteed to (relative
# error), and the factor between a row's error and the square root of its
# misfit (measured at trained weights, float32, 64 -> 1024 -> 10 tanh:
# 1.4 to 2.7, some rows above 10 (1.3e-4 at a misfit below 1e-10, softplus
# B = 48); squared loss, one dominant sample: 1.1 to 1.3; float64 rows at
# trained weights stay far below 1e-6)
_FLOAT32_PRECISION = 1e-4
_FLOAT64_PRECISION = 1e-6
_ERROR_PER_ROOT_MISFIT = {np.dtype(np.float32): 30.0, np.dtype(np.float64): 10.0}
# trials per sample of the exact-column route of a two-slope activation
# (ReLU, leaky ReLU; DESIGN F9): before the smoothed search, and after it
# from its guesses when it leaves samples missing (a count, not a time, so
# that the result depends on the seed only; about 2 000 trials a second on
# one core at B = 32 to 48)
_PATTERN_FIRST_TRIALS = 256
_PATTERN_TRIALS = 2048


def min_neurons(batch_size, n_outputs):
    """Live neurons the search needs for ``batch_size`` samples and
    ``n_outputs`` outputs: ``max(5 B, 2 (B + K))`` (measured frontier, see
    above)."""
    return max(_NEURONS_PER_SAMPLE * batch_size,
               _NEURONS_PER_UNKNOWN * (batch_size + n_outputs))


def _unit_scale(M, xp):
    """The power of two that brings the largest entry of ``M`` into
    ``[0.5, 1)`` (1.0 for a zero ``M``)."""
    largest = float(xp.max(xp.abs(M)))
    if not (largest > 0 and np.isfinite(largest)):
        return 1.0
    return float(np.ldexp(1.0, -int(np.frexp(largest)[1])))


def acceptance_level(noise_level, piecewise, conditioning=1.0):
    """Misfit below which a search has found a sample (noise-aware).

    A gradient with relative in-span noise ``eta`` (relative to the whole
    gradient) tilts the column space by up to ``eta * kappa``, with
    ``kappa = ||P||_F / s_B(P)`` (``conditioning``: a sample that carries a
    small share of the gradient sees relatively more noise), so the misfit
    at a sample is up to about ``(eta * kappa)**2``.
    """
    level = max(_EXACT_ACCEPT, (3.0 * noise_level * conditioning) ** 2)
    if piecewise:
        level = max(level, _PIECEWISE_ACCEPT)
    return min(level, 0.05)


def _signals(s1, V, P, A):
    """Least-squares signals ``U`` for the samples ``V`` with slopes ``s1``
    (``sigma'(Omega V^T + b0)``, ``(m, B)``).

    Jointly (one ``B K`` square solve) when that is small; otherwise sample
    by sample from the coefficients ``C = P V^{-1}``, whose column ``i`` is
    ``sigma'(Omega v_i + b0) * (A u_i)``.
    """
    n, K = V.shape[0], A.shape[1]
    if n * K <= _JOINT_SIGNALS_MAX or V.shape[0] != V.shape[1]:
        return signals_from_slopes(s1, V, P, A, ridge=0.0)
    C = np.linalg.solve(V.T, P.T).T  # P V^{-1}
    U = np.empty((n, K))
    for i in range(n):
        U[i] = np.linalg.lstsq(s1[:, i:i + 1] * A, C[:, i], rcond=None)[0]
    return U


def _relative_residual(V, U, P, Omega, A, activation, bias_mean, s1=None):
    """``||P - P_hat|| / ||P||`` (``s1``: the slopes of ``V``, if known)."""
    if s1 is None:
        s1 = slopes_at(Omega, V, activation, bias_mean)
    return float(np.linalg.norm(P - model_from_slopes(s1, V, U, A)) / np.linalg.norm(P))


def _residual_off_kinks(V, U, P, Omega, A, activation, bias_mean):
    """Relative residual of the fit on the neurons whose pre-activations lie
    off every kink of a piecewise-linear activation for every sample (by
    more than ``_KINK_MARGIN`` of that sample's pre-activation std).

    With a noisy gradient the samples carry an error of about the noise,
    and a neuron within that distance of a kink takes whichever slope the
    error decides: a whole gradient row of misfit (eight digits at 0.3 %
    noise: the fit's residual is 5 times the noise, on the other 98 % of
    the neurons it is the noise itself). On the other neurons the model is
    exact for the right samples, so their residual confirms them.
    """
    t = Omega @ V.T + bias_mean  # (m, B)
    width = _KINK_MARGIN * np.std(t, axis=0)
    near = np.zeros(t.shape[0], dtype=bool)
    for kink in activation.kinks:
        near |= np.any(np.abs(t - kink) <= width, axis=1)
    off = ~near
    if not np.any(P[off]):
        return np.inf
    return _relative_residual(V, U, P[off], Omega[off], A[off], activation, bias_mean)


def reconstruct_in_span(proj, activation, *, batch_size, init="auto",
                        moment_tensor=None, n_init=1, max_starts=None, max_iter=200,
                        tol=1e-13,
                        precision=np.float64, noise_level=0.0, n_resolved=None,
                        random_state=None, n_jobs=None, verbose=0, progress=None,
                        known_roundoff=False):
    """The batch in span coordinates, from a projected query.

    Parameters
    ----------
    proj : _Projection
        The query in span coordinates (``MomentTensorTransformer._fit``).
    activation : Activation
    batch_size : int
        Samples in the batch (``B``, the span's dimension).
    init : {"auto", "tensor", "random"}, default="auto"
        Starts of the search: the moment tensor's factors first (``"tensor"``
        and ``"auto"`` when ``moment_tensor`` gives a tensor), then random
        directions (``"random"`` and ``"auto"``).
    moment_tensor : callable or None
        ``moment_tensor(tensor)`` returns ``(T, T0, order, weight_std)``:
        the moment tensor (host, ``(B, K, n_bias_orders) + (B,) * (order -
        1)``), its order-0 moments, its order and the weights' std, computed
        now if need be (``tensor``: ``"auto"`` or ``True``, as
        :meth:`MomentTensorTransformer._fit_tensor`), or ``None`` where there
        is none; it may raise ``ValueError`` (a singular regression: no
        starts from the tensor). ``None``: no tensor.
    n_init, max_starts
        Starts per round, and in all (see :func:`skrecon.search.search_samples`).
    max_iter : int, default=200
        Levenberg-Marquardt steps of the joint polish.
    tol : float, default=1e-13
        Relative residual at which the joint polish stops.
    precision : dtype, default=numpy.float64
        The gradient's precision (its round-off bounds the residual).
    noise_level : float, default=0.0
        Relative in-span noise of the gradient (``noise_level_``).
    known_roundoff : bool, default=False
        Whether the in-span noise is a known round-off (a parameter
        update's, :mod:`skrecon._roundoff`): rows are then held to the
        dtype's per-row precision, as for a gradient exact to its round-off.
    n_resolved : int or None, default=None
        Samples the spectrum shows, where a ``batch_size`` given differs
        from it: when fewer than ``batch_size``, the acceptance level is set
        by the span's conditioning over that many directions, not by the
        noise directions beyond (which accepted rows fitting the noise).
    random_state : numpy.random.Generator
        Source of every random draw.
    n_jobs : int or None
        joblib jobs for the searches.
    verbose : int, default=0
        One line per stage and per sample found when positive.
    progress : callable or None
        ``progress(stage, done, total)`` at each stage and search round.

    Returns
    -------
    result : Bunch
        ``V`` ``(B, B)`` samples and ``U`` ``(B, K)`` signals (host, span
        coordinates); ``found`` (bool, ``(B,)``): whether each sample's
        misfit on all neurons is below the acceptance level; ``misfits``
        ``(B,)``; ``n_starts``; ``refinement`` (:class:`RefinementResult`);
        ``accept`` (the acceptance level of ``found``: for a float32
        gradient exact to round-off, that of a relative error of
        ``_FLOAT32_PRECISION``); ``fit_accept`` (the noise-aware level: a
        row below it but not found fits the gradient to its round-off or
        noise, but not to that precision); ``identifiable`` (False
        when there are fewer than :func:`min_neurons` live neurons: nothing
        is searched, no row is counted as found); ``n_live_neurons`` (neurons with a nonzero
        output weight, the ones that count); ``n_searched_found`` (samples
        the kept attempt's searches found).
    """
    rng = random_state
    # powers of two (exact in floating point) that bring the projected
    # gradient and the output weights to unit size: the searches do not
    # depend on scale, but sums of squares of a gradient scaled by 1e-170
    # underflow (and of 1e160 overflow); the signals are scaled back at the end
    p_unit, a_unit = _unit_scale(proj.P, proj.xp), _unit_scale(proj.A, proj.xp)
    if p_unit != 1.0 or a_unit != 1.0:
        proj = replace(proj, P=proj.P * p_unit, A=proj.A * a_unit)
    host = proj.to_host()
    P, Omega, A = host.P, host.Omega, host.A
    m, n = P.shape
    K = A.shape[1]
    b0 = proj.bias_mean
    fixed = (proj.bias_row, proj.column_scale[-1]) if proj.has_bias else None
    if fixed is not None and not np.any(fixed[0]):
        raise ValueError(
            "The bias column of the gradient lies outside the batch's span (it is "
            "zero, or the gradient has no bias column): with bias=True the last "
            "column must be the bias gradient. Fit with bias=False if the layer "
            "has no bias.")
    problem = (P, Omega, A, activation, b0)
    piecewise = is_piecewise_linear(activation)
    sv = np.linalg.svd(P, compute_uv=False)
    if n_resolved is not None and n_resolved < n:
        sv = sv[:n_resolved]
    kappa = float(np.linalg.norm(sv) / max(sv[-1], np.finfo(float).tiny))
    accept = acceptance_level(noise_level, piecewise, kappa)
    final_accept = acceptance_level(noise_level, False, kappa)  # unsmoothed misfits
    say = print if verbose else (lambda *args: None)

    # the stages of a second noisy attempt are labelled, so that a progress
    # bar that starts over says why
    attempt_label = [""]

    def report(stage, done=0, total=1):
        if progress is not None:
            progress(stage + attempt_label[0], done, total)

    def tensor_factors():
        """The moment tensor's factors as starts (the tensor computed now
        if the moment step did not), or none."""
        try:
            tensor = (None if moment_tensor is None
                      else moment_tensor("auto" if init == "auto" else True))
            if tensor is None:
                return np.empty((0, n))
            T, T0, order, weight_std = tensor
            with np.errstate(all="ignore"):
                factors, cp_error = tensor_starts(T, T0, activation, order, weight_std, rng,
                                                  fixed=fixed)
        except (np.linalg.LinAlgError, ValueError) as exc:
            # a degenerate tensor (a gradient scaled to 1e-300, constant
            # weights, a layer of a few neurons) gives no starts; the random
            # ones do not depend on it
            say(f"starts: none from the moment tensor ({exc})")
            return np.empty((0, n))
        factors = factors[np.all(np.isfinite(factors), axis=1)]
        say(f"starts: {len(factors)} from the moment tensor (order "
            f"{order}, CP relative error {cp_error:.2e})")
        return factors

    rtol = max(tol, 10 * np.finfo(precision).eps)
    success = max(1e-8, 100 * np.finfo(precision).eps, 1.5 * noise_level)
    # a float32 gradient is exact to its round-off: the noise-aware level
    # (3 kappa eta)**2 then passes rows that fit the round-off only (a
    # trained net's confident samples, whose signal is a few eps of the
    # gradient: errors up to 5e-2, flagged found); found rows must be within
    # _FLOAT32_PRECISION (float64: _FLOAT64_PRECISION)
    roundoff = known_roundoff or noise_level <= _ROUNDOFF_NOISE * np.finfo(precision).eps
    exact = final_accept <= _EXACT_ACCEPT
    row_accept, stated = final_accept, None
    if roundoff:
        single = np.finfo(precision).eps > np.finfo(np.float64).eps
        stated = _FLOAT32_PRECISION if single else _FLOAT64_PRECISION
        factor = _ERROR_PER_ROOT_MISFIT[np.dtype(np.float32 if single else np.float64)]
        row_accept = min(final_accept, (stated / factor) ** 2)
    # a noisy fit stops when a step gains less than 1e-7 of the cost: at
    # the noise floor the steps only creep (up to 200 steps otherwise)
    ftol = 1e-15 if exact else 1e-7

    # neurons with zero output weights carry no gradient: they do not count;
    # too few live neurons for the search: checked before it, not after it
    n_live = int(np.sum(np.any(A != 0, axis=1)))
    identifiable = n_live >= min_neurons(n, K)
    if not identifiable:
        say(f"search skipped: {n_live} live neurons, fewer than the "
            f"{min_neurons(n, K)} that {n} samples with {K} outputs need")

    per_unknown = (_ROWS_PER_UNKNOWN_WIDE if K > 16
                   else _ROWS_PER_UNKNOWN_EXACT if exact else _ROWS_PER_UNKNOWN)
    n_rows = min(m, max(_MIN_SEARCH_ROWS, per_unknown * (n + K)))

    # the exact-column route of two-slope activations on gradients exact to
    # their round-off (float32: the patterns are exact, the least-squares
    # steps carry the round-off, :mod:`skrecon._pattern_polish`)
    two_slope = ((exact or roundoff) and m > n + K + 2
                 and two_slopes(activation) is not None)
    pattern_noise = 0.0 if exact else noise_level
    basis = np.asarray(host.scaled_basis)
    n_inputs = basis.shape[0] - 1 if proj.has_bias else basis.shape[0]
    ica = None
    if two_slope and identifiable:
        ica = ica_guesses(basis, n_inputs, fixed, rng)

    def roundoff_result(V, pattern, n_starts):
        """The attempt's result on the two-slope route of a gradient exact to
        its round-off: the least-squares fit with the patterns fixed
        (:mod:`skrecon._pattern_polish`); ``slopes`` go with it, for the
        fit in input coordinates that certifies the rows."""
        fit = span_fit(P, Omega, A, activation, b0, V,
                       None if pattern is None else pattern.active,
                       None if pattern is None else pattern.known, fixed=fixed)
        # each row is certified by its standard error in input coordinates
        # (:func:`skrecon._batch.reconstruct_batch`) where its column fits
        # the span to round-off with its fitted slopes (a wrong sample's
        # does not)
        found_rows = fit.misfits <= final_accept
        say(f"patterns fixed: relative residual {fit.relative_residual:.2e} after "
            f"{fit.n_rounds} rounds")
        status = 3 if fit.relative_residual <= rtol else 2
        return Bunch(V=fit.V, U=fit.U, found=found_rows, misfits=fit.misfits,
                     n_starts=n_starts, slopes=fit.S, slope_rows=fit.rows,
                     n_found=0 if pattern is None else pattern.n_found,
                     refinement=RefinementResult(fit.V, fit.U, fit.relative_residual,
                                                 fit.n_rounds, status))

    def attempt():
        """One search of the batch and its joint polish, on a fresh row
        subset and fresh random starts."""
        rows = np.sort(rng.choice(m, n_rows, replace=False))
        # polish and misfits on all neurons; with many outputs (each evaluation
        # costs O(rows K^2)) on a subset four times the search's
        check = (None if K <= 16 or 4 * n_rows >= m
                 else np.sort(rng.choice(m, 4 * n_rows, replace=False)))

        starts = np.empty((0, n))
        if init == "auto" and piecewise and K == 1:
            starts = crossing_starts(P, Omega, A, Slopes(activation), b0, fixed,
                                     n_samples=batch_size, rows=rows, Q=orth(P[rows]),
                                     accept=final_accept, noise_level=noise_level,
                                     random_state=rng)
            say(f"starts: {len(starts)} samples from differences of neighbouring "
                "neurons' gradient rows")

        # On a gradient exact to the acceptance level every search from a random
        # direction ends at a sample (measured: B starts for B = 8, 16, 32
        # digits), so "auto" computes the tensor only if B random starts leave
        # samples missing; a noisy gradient flattens the misfit, and the
        # tensor's factors go first (1 % noise: median error 0.042 with them,
        # 0.077 without).
        late_tensor = init == "auto" and exact
        if identifiable and (init == "tensor" or (init == "auto" and not late_tensor)):
            starts = np.vstack([starts, tensor_factors()])
        report("starts")
        # random directions with the samples' typical scale: a unit
        # pre-activation std, or the first starts' median norm
        scale = float(np.median(np.linalg.norm(starts, axis=1))) if len(starts) else 1.0
        state = {"random": 0, "tensor_due": late_tensor}

        def more_starts(k):
            """Random directions; with a late tensor, its factors instead once
            ``batch_size`` random starts have been searched."""
            if state["tensor_due"] and state["random"] >= batch_size:
                state["tensor_due"] = False
                factors = tensor_factors()
                if len(factors):
                    return factors
            state["random"] += k
            return rng.standard_normal((k, n)) * (scale / np.sqrt(n))

        random_starts = more_starts if init in ("auto", "random") else None

        pattern = None
        if two_slope and identifiable:
            pattern = pattern_samples(*problem, n_samples=batch_size, basis=basis,
                                      n_inputs=n_inputs, fixed=fixed, ica=ica,
                                      max_trials=_PATTERN_FIRST_TRIALS * batch_size,
                                      random_state=rng, verbose=verbose,
                                      noise=pattern_noise)
            say(f"exact columns: {pattern.n_found} of {batch_size} in "
                f"{pattern.n_trials} trials")
        if pattern is not None and pattern.V is not None and not exact:
            # every column, or all but one (:func:`pattern_samples`)
            first = roundoff_result(pattern.V, pattern, 0)
            if np.all(first.found):
                return first
        if pattern is not None and pattern.n_found == batch_size:
            found = SearchResult(pattern.V, _misfits(pattern.V, problem, check),
                                 np.empty((0, n)), np.empty(0), 0)
        elif m > n + K and identifiable:
            found = search_samples(P, Omega, A, activation, b0, n_samples=batch_size,
                                   starts=starts, random_starts=random_starts, fixed=fixed,
                                   rows=rows if n_rows < m else None, polish_rows=check,
                                   accept=accept, exact_accept=final_accept, n_init=n_init,
                                   max_starts=max_starts, n_jobs=n_jobs, verbose=verbose,
                                   remaining=n_resolved is None or n_resolved >= n,
                                   progress=None if progress is None else report)
        else:
            # no more neurons than one sample's unknowns: every direction
            # fits them, so nothing is searched (best guesses, not found; the
            # reconstructor warns)
            found = SearchResult(np.empty((0, n)), np.empty(0), np.empty((0, n)),
                                 np.empty(0), 0)
        V = found.V
        if len(V) < batch_size:
            say(f"search: {len(V)} of {batch_size} samples found in {found.n_starts} "
                "starts; completing with the best rejected searches")
            V = _complete(V, found.candidates, batch_size, n, rng, scale, fixed)
        V0, U0, residual = _finish(V, problem, fixed, piecewise, say)
        if two_slope and identifiable and not exact:
            # the patterns the data show, from the search's guesses
            pattern = pattern_samples(*problem, n_samples=batch_size, basis=basis,
                                      n_inputs=n_inputs, fixed=fixed, guesses=V0, ica=ica,
                                      max_trials=_PATTERN_TRIALS * batch_size,
                                      random_state=rng, verbose=verbose,
                                      noise=pattern_noise)
            say(f"pattern columns from the search's guesses: {pattern.n_found} of "
                f"{batch_size} in {pattern.n_trials} trials")
            if pattern.V is None:
                return roundoff_result(V0, None, found.n_starts)
            return roundoff_result(pattern.V, pattern, found.n_starts)
        if two_slope and identifiable and residual > success:
            # the smoothed search left samples missing, or accepted some
            # inside the wrong activation cell: exact columns from its guesses
            pattern = pattern_samples(*problem, n_samples=batch_size, basis=basis,
                                      n_inputs=n_inputs, fixed=fixed, guesses=V0, ica=ica,
                                      max_trials=_PATTERN_TRIALS * batch_size,
                                      random_state=rng, verbose=verbose)
            say(f"exact columns from the search's guesses: {pattern.n_found} of "
                f"{batch_size} in {pattern.n_trials} trials")
            if pattern.V is not None:
                V1, U1, residual1 = _finish(pattern.V, problem, fixed, piecewise, say)
                if residual1 < residual:
                    V0, U0, residual = V1, U1, residual1
                    if pattern.n_found == batch_size:
                        found = SearchResult(V0, _misfits(V0, problem, check),
                                             np.empty((0, n)), np.empty(0),
                                             found.n_starts)
        report("polish")
        if not identifiable:  # guesses only: no polish (minutes, for nothing)
            return Bunch(V=V0, U=U0, found=np.zeros(batch_size, dtype=bool),
                         misfits=_misfits(V0, problem, check), n_starts=0, n_found=0,
                         refinement=RefinementResult(V0, U0, residual, 0, -3))
        V, U, refinement = _joint_polish(
            V0, U0, residual, proj, problem, fixed, rows if n_rows < m else None,
            all_found=found.n_found == batch_size, rtol=rtol, ftol=ftol, success=success,
            noise_level=noise_level, max_iter=max_iter, verbose=verbose, say=say,
            report=report)
        if V is found.V:  # the search's samples, unchanged: their misfits stand
            misfits = found.misfits
        else:
            misfits = _misfits(V, problem, check)
        if V is not V0 and roundoff and not exact and not piecewise:
            # float32: each row from the fit where it fits its column best
            # (a polish of a batch with wrong rows moves the right ones off)
            # (where the polish lost rows at the stated precision)
            before = found.misfits if V0 is found.V else _misfits(V0, problem, check)
            polished = np.ones(batch_size, dtype=bool)
            if np.sum(before < row_accept) > np.sum(misfits < row_accept):
                V, misfits, polished = better_rows(V0, before, V, misfits)
            if not np.all(polished):
                say(f"joint polish: {int(np.sum(~polished))} of {batch_size} rows fit "
                    "their columns better before it; those kept")
                V, U, residual_kept = _finish(V, problem, fixed, piecewise, say)
                refinement = RefinementResult(V, U, residual_kept, refinement.n_iter,
                                              refinement.status if np.any(polished) else -2)
        if V is not V0 and 0 < found.n_found < batch_size:
            # a polish of guesses beside found samples can lower the residual
            # by moving the found ones off (tanh, 7 of 8 found from the
            # tensor's starts: none left): the samples are kept, not the fit
            before = found.misfits if V0 is found.V else _misfits(V0, problem, check)
            if np.sum(misfits < final_accept) < np.sum(before < final_accept):
                say("joint polish: it lost samples the search had found; not kept")
                V, U, misfits = V0, U0, before
                refinement = RefinementResult(V, U, residual, refinement.n_iter, -2)
        found_rows = misfits < row_accept
        if piecewise and not (refinement.relative_residual <= success or
                              _residual_off_kinks(V, U, *problem) <= success):
            # sigma' is piecewise constant: the misfit vanishes anywhere in a
            # sample's activation cell, so only a fit of the whole gradient
            # (the pattern iteration) confirms the samples
            found_rows[:] = False
        return Bunch(V=V, U=U, found=found_rows, misfits=misfits,
                     n_starts=found.n_starts, n_found=found.n_found,
                     refinement=refinement)

    # A noisy gradient whose search ran out of starts with samples missing
    # is searched again from scratch (a new row subset, new starts), and the
    # attempt that fits the gradient best is kept: at 1 % noise the
    # completed rows land in one of several local minima of the joint fit
    # (eight digits: median errors 3.4e-3 to 0.19 over six seeds).
    # (the two-slope route of a float32 gradient searches once: a new search
    # costs 20 s at B = 16 and finds the same patterns)
    n_attempts = 1 if exact or (two_slope and identifiable) else _NOISY_ATTEMPTS
    best, n_starts = None, 0
    for number in range(n_attempts):
        attempt_label[0] = f" (attempt {number + 1} of {n_attempts})" if number else ""
        result = attempt()
        n_starts += result.n_starts
        if best is None or (result.refinement.relative_residual
                            < best.refinement.relative_residual):
            best = result
        if result.n_found == batch_size:
            break
        if number + 1 < n_attempts:
            say(f"attempt {number + 1}: {result.n_found} of {batch_size} samples "
                f"found, relative residual {result.refinement.relative_residual:.2e}; "
                "searching again")
    V, U, found_rows, misfits, refinement = (best.V, best.U, best.found, best.misfits,
                                             best.refinement)
    bounds = None
    if (stated is not None and identifiable and not piecewise
            and best.get("slopes") is None):
        # a gradient exact to its round-off: a row is found where it fits the
        # column space to the round-off and its first-order error bound is
        # within the stated precision (:mod:`skrecon._certificate`), not where
        # its misfit is small (near-duplicate blends have misfits at round-off)
        bounds = row_error_bounds(V, P, Omega, A, activation, b0, basis=basis,
                                  column_scale=proj.column_scale, bias=proj.has_bias,
                                  fixed=fixed,
                                  scale_free=activation.scale_free and not proj.has_bias,
                                  random_state=rng)
        found_rows = (misfits < final_accept) & (bounds <= stated)
        row_accept = final_accept
    if not identifiable:
        found_rows[:] = False
    say(f"done: {int(np.sum(found_rows))} of {batch_size} samples with misfit below "
        f"{row_accept:.1e}" + ("" if bounds is None else
                               f" and an error bound within {stated:.0e}")
        + f"; relative residual {refinement.relative_residual:.2e}")
    attempt_label[0] = ""
    report("done", 1, 1)
    # the signals in the gradient's units: P = (A U^T * s1) V, so scaling P
    # by p and A by a scales U by p / a
    U = U * (a_unit / p_unit)
    refinement = RefinementResult(V, U, refinement.relative_residual, refinement.n_iter,
                                  refinement.status)
    return Bunch(V=V, U=U, found=found_rows, misfits=misfits,
                 n_starts=n_starts, refinement=refinement, accept=row_accept,
                 fit_accept=final_accept, stated_precision=stated,
                 identifiable=identifiable, n_live_neurons=n_live,
                 n_searched_found=best.n_found, slopes=best.get("slopes"),
                 error_bounds=bounds,
                 slope_rows=best.get("slope_rows"))


def _finish(V, problem, fixed, piecewise, say):
    """The signals of the samples ``V`` by least squares, and the relative
    residual; for a piecewise-linear activation at the exact activation
    cells (the pattern iteration, which moves ``V`` too)."""
    P, Omega, A, activation, b0 = problem
    if piecewise:
        finish = pattern_iteration(V, P, Omega, A, activation, b0, fixed=fixed)
        say(f"pattern iteration: relative residual {finish.relative_residual:.2e}")
        return finish.V, finish.U, finish.relative_residual
    s1 = slopes_at(Omega, V, activation, b0)
    U = _signals(s1, V, P, A)
    return V, U, _relative_residual(V, U, P, Omega, A, activation, b0, s1)


def _joint_polish(V, U, residual, proj, problem, fixed, rows, *, all_found, rtol, ftol,
                  success, noise_level, max_iter, verbose, say, report):
    """The joint Levenberg-Marquardt polish of the whole batch.

    Above round-off (``rtol``) and for at most ``_JOINT_MAX_PARAMS``
    parameters: first on the search's ``rows`` (when it fell short of
    ``success``; kept only if it fits all neurons better), then on all
    neurons -- the least-squares fit of a noisy gradient -- when every
    sample was found or the subset fit reached about the noise floor (a
    failed subset fit would only fail again, at ``m / len(rows)`` times the
    cost). Returns ``V``, ``U`` and the :class:`RefinementResult`.
    """
    P, Omega, A, activation, b0 = problem
    refinement = RefinementResult(V, U, residual, 0, 3 if residual < rtol else 1)
    n_par = V.shape[0] * (V.shape[1] + A.shape[1])
    if residual <= rtol:
        return V, U, refinement
    if n_par > _JOINT_MAX_PARAMS:
        if residual > success:
            say(f"joint polish skipped ({n_par} parameters > {_JOINT_MAX_PARAMS})")
        return V, U, refinement
    say(f"joint polish: {n_par} parameters, relative residual {residual:.2e}")
    # (a subset of zero rows, e.g. a gradient with one nonzero row, has
    # nothing to fit)
    if residual > success and rows is not None and np.any(P[rows]):
        fit = levenberg_marquardt(V, U, *proj.take_rows(rows), activation, b0, fixed=fixed,
                                  max_iter=max_iter, rtol=rtol, ftol=ftol,
                                  callback=lambda k, n: report("polish (rows)", k, n))
        on_all = _relative_residual(fit.V, fit.U, P, Omega, A, activation, b0)
        if on_all < residual:
            V, U = fit.V, fit.U
            refinement = RefinementResult(V, U, on_all, fit.n_iter, fit.status)
    if (rows is None or all_found
            or refinement.relative_residual <= max(success, 10 * noise_level)):
        refinement = levenberg_marquardt(V, U, proj.P, proj.Omega, proj.A, activation, b0,
                                         fixed=fixed, max_iter=max_iter, rtol=rtol,
                                         ftol=ftol, verbose=verbose > 1,
                                         callback=lambda k, n: report("polish", k, n))
        V, U = refinement.V, refinement.U
    return V, U, refinement


def _misfits(V, problem, rows):
    """Each sample's column-space misfit on ``rows`` (all neurons for
    ``None``)."""
    P, Omega, A, activation, b0 = problem
    keep = slice(None) if rows is None else rows
    return sample_misfits(V, orth(P[keep]), Omega[keep], A[keep], Slopes(activation), b0)


def _complete(V, candidates, batch_size, n, rng, scale, fixed):
    """Fill up to ``batch_size`` rows with distinct rejected searches, then
    random directions (best guesses, flagged as not found). A search that
    ran off to more than ten times the samples' typical norm (tanh
    saturates: the misfit flattens far out) is no guess."""
    rows = list(V)
    typical = float(np.median(np.linalg.norm(V, axis=1))) if len(V) else scale
    for c in candidates:
        if len(rows) == batch_size:
            break
        if np.linalg.norm(c) <= 10 * typical and not is_repeat(c, rows, 0.999):
            rows.append(c)
    while len(rows) < batch_size:
        rows.append(onto_constraint(rng.standard_normal(n) * (scale / np.sqrt(n)), fixed))
    return np.array(rows)
