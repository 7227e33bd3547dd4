"""Exact columns of a piecewise-linear layer from its zero pattern (F9).

For ReLU and leaky ReLU ``sigma'`` takes two values, ``hi`` above the kink
and ``lo`` below it, so in span coordinates (``P = sum_k beta_k v_k^T``)
each sample ``k`` has a dual vector ``c_k`` (column ``k`` of ``V^{-1}``)
and a signal ``w_k`` (``hi u_k``) with

    (P c_k)_j = (A w_k)_j          on the neurons ``j`` that ``k`` activates,
    (P c_k)_j = rho (A w_k)_j      on the others (``rho = lo / hi``: 0 for ReLU).

A set ``R`` of neurons that sample ``k`` activates, one fewer than the
unknowns ``(c, w)``, makes ``[P_R, -A_R] z = 0`` a one-dimensional null
space: ``z = (c_k, w_k)``. Nothing about the weights is assumed (trained,
default-initialised or Gaussian): only that the pattern of ``k`` is
constant on ``R``. A trial draws ``R``, takes the null vector, and tests it
on every neuron at once (one product for a whole batch of trials): the
true column fits every row to round-off, a wrong one almost none. A hit is
polished by one null vector over all neurons with the pattern it implies.

Hits cost about ``activity ** len(R)`` per trial at random rows (SPEAR's
exponential sampling, Dimitrov et al. 2024); here the rows come from the
largest pre-activations of an approximate batch (the smoothed search's
best guesses, the cocktail-party estimate of the span), where the pattern
is almost surely "active", and each trial's rows include, for every other
sample, one it does not activate (predicted for the guesses, exact for the
samples found): otherwise that sample is a second null vector. Found
samples also deflate the guesses: the unfound samples are orthogonal to
every found ``c`` (``V C = I``), so the guesses are projected onto that
complement (with ``B - 1`` found, the last one is exact). With softmax
cross-entropy the signals sum to zero (``K - 1`` unknowns); whether they
do is learnt from the first hit.

The samples follow from the columns: ``V = C^{-1}`` when all are found.
"""

import time

import numpy as np

from ._pattern_columns import ROW_TOL, ColumnSet

# a candidate is a column when its pattern equation holds on this share of
# the neurons (the true one: all of them to round-off; a random one: about
# the rows of its trial)
_FIT_SHARE = 0.98
# on a gradient exact to its round-off (float32: relative in-span noise
# eta of a few 1e-8), a true column's rows and polished null vector fit to
# about eta over the sample's share of the gradient: the row tolerance and
# the acceptance rise to this many times eta (the exact test of the found
# rows follows in the core, held to the dtype's precision)
_NOISE_TOL = 1e5
# on a gradient exact to its round-off, a polished column is also accepted
# at up to this many times the misfit its own share of the round-off
# explains (:meth:`ColumnSet.noise_misfit`), and never above _NOISE_CAP:
# measured (float32 ReLU at trained weights, B = 32, every column polished
# while the route ran): true columns at 1.0 to 1.9 times it, the weakest
# samples' (shares 2e-5 to 5e-5 of the gradient, 10 to 30 times its
# round-off) at 5 to 40 times it with 2 % of their slopes wrong (misfits 1e-2
# to 3e-2, above _NOISE_TOL times the noise: whether they were found was
# luck, and each one missing left its guessed pattern, wrong on 15 % of the
# neurons, to pull every other row off), strong samples' columns with a few
# wrong slopes at 90 to 3000 times it
_NOISE_RATIO = 10.0
_NOISE_CAP = 0.1
# on a gradient exact to its round-off, the trials fitting at least this
# share of the neurons (but not _FIT_SHARE) start pattern iterations, the
# best _NOISY_POLISHES of each batch
_NOISY_FIT_SHARE = 0.8
_NOISY_POLISHES = 8
# trials per batched QR
_BATCH = 512
# with at most this many samples left and no column found in _STALL
# batches, _ENDGAME_POINTS points of the space where they lie are tried
# (measured, float32 ReLU at trained weights, B = 32: the trials stalled at
# 24 columns for 48 000 trials; with the weak columns accepted at their own
# round-off, the points of the 8 dimensions left gave the last 8 at once;
# at most 4 left, it found 6 rows; leaky ReLU stalled at 21 of 32 columns
# for 20 000 trials, and the points of the 11 dimensions left gave the last
# 11: 22 rows found instead of 7)
_ENDGAME = 16
_STALL = 4
_ENDGAME_POINTS = 128


def two_slopes(activation):
    """``(kink, hi, lo)`` of an activation whose ``sigma'`` takes one value
    above its only kink and another below (ReLU, leaky ReLU), else ``None``."""
    if len(activation.kinks) != 1:
        return None
    kink = float(activation.kinks[0])
    grid = kink + np.array([-4.0, -1.0, -1e-3, 1e-3, 1.0, 4.0])
    d1 = np.asarray(activation.derivative(grid, 1), dtype=float)
    lo, hi = d1[:3], d1[3:]
    if not (np.all(lo == lo[0]) and np.all(hi == hi[0])) or hi[0] == 0 or hi[0] == lo[0]:
        return None
    return kink, float(hi[0]), float(lo[0])


def _row_sets(rng, Omega, b0, kink, guesses, targets, n_rows, n_trials, usable, cols):
    """Row sets of the trials.

    For each trial a target guess ``k`` and the neurons it activates with a
    margin (a random quantile of its positive pre-activations); among them
    rows drawn with a preference for those that few other guesses activate,
    then, for each other guess active on all of them, a row where that
    guess is least active swapped in (the null space is one-dimensional
    only if no other sample is active on every row). At random without
    guesses.
    """
    candidates = np.flatnonzero(usable)
    sets = []
    if guesses is None or not len(targets):
        for _ in range(n_trials):
            rows = rng.choice(len(candidates), n_rows, replace=False)
            sets.append(candidates[cols.cover(rows, candidates, rng)])
        return sets
    t = Omega[candidates] @ guesses[targets].T + (b0 - kink)  # (m', n_targets)
    on = t > 0
    n_on = np.sum(on, axis=1)
    n_t = len(targets)
    for _ in range(n_trials):
        k = rng.integers(n_t)
        positive = np.flatnonzero(on[:, k])
        if len(positive) <= n_rows:
            sets.append(rng.choice(candidates, n_rows, replace=False))
            continue
        level = np.quantile(t[positive, k], rng.uniform(0.0, 0.7))
        pool = positive[t[positive, k] >= level]
        if len(pool) <= n_rows:
            pool = positive[np.argsort(-t[positive, k])[:n_rows + 1]]
        weight = (n_t + 1.0 - n_on[pool]) ** 2
        pick = rng.choice(len(pool), n_rows, replace=False, p=weight / weight.sum())
        rows = pool[pick]
        for _ in range(n_rows // 2):
            all_on = np.all(on[rows], axis=0)
            all_on[k] = False
            if not np.any(all_on):
                break
            l = rng.choice(np.flatnonzero(all_on))
            j = positive[np.argmin(t[positive, l])]
            if j in rows:
                break
            rows[rng.integers(n_rows)] = j
        sets.append(candidates[cols.cover(rows, candidates, rng, on[:, k])])
    return sets


def _project_guesses(guesses, targets, C, fixed):
    """The guesses ``targets`` projected onto the complement of the found
    dual vectors ``C`` ``(B, n_found)`` (where the unfound samples lie),
    rescaled onto the bias constraint when there is one."""
    guesses = guesses.copy()
    if not len(targets) or C.shape[1] >= C.shape[0]:
        return guesses
    Q = np.linalg.qr(C)[0]
    G = guesses[targets]
    G = G - (G @ Q) @ Q.T
    if fixed is not None:
        dots = G @ fixed[0]
        ok = np.abs(dots) > 1e-12 * np.linalg.norm(G, axis=1) * np.linalg.norm(fixed[0])
        G[ok] *= (fixed[1] / dots[ok])[:, None]
    guesses[targets] = G
    return guesses


def find_columns(P, Omega, A, activation, bias_mean=0.0, *, n_samples, guesses=None,
                 fixed=None,
                 accept=1e-10, max_trials=200_000, time_limit=30.0, random_state=None,
                 verbose=0, noise=0.0):
    """Exact columns ``(c_k, u_k)`` of a piecewise-linear layer (see the module).

    Parameters
    ----------
    P, Omega : ndarray of shape (m, B)
        Projected gradient and weights (span coordinates).
    A : ndarray of shape (m, K)
        Output weights.
    activation : Activation
        Two-slope activation (:func:`two_slopes` is not ``None``).
    bias_mean : float
        Constant part of the pre-activations.
    n_samples : int
        ``B``: stop when this many columns are found.
    guesses : ndarray of shape (n_guesses, B) or None
        Approximate samples whose largest pre-activations choose the rows.
    accept : float
        Relative misfit of the polished null vector below which a column
        counts as found.
    max_trials, time_limit : int, float
        Budget.
    random_state : numpy.random.Generator
    noise : float
        Relative in-span noise of a gradient exact to its round-off
        (float32): the row tolerance and ``accept`` rise to ``_NOISE_TOL``
        times it.

    Returns
    -------
    C : ndarray of shape (B, n_found)
        Dual vectors ``c_k`` (``P c_k = beta_k``), unit norm.
    W : ndarray of shape (n_found, K)
        Signals with the same scale (``beta_k = A w_k`` where active).
    active : ndarray of bool, shape (n_found, m)
        Each column's pattern.
    n_trials : int
    """
    rng = random_state if random_state is not None else np.random.default_rng()
    kink, hi, lo = two_slopes(activation)
    ratio = lo / hi
    m, n = P.shape
    K = A.shape[1]
    say = print if verbose else (lambda *a: None)
    # the signals' parametrisation: zero-sum (cross-entropy, K - 1 unknowns)
    # and general are tried alternately until one of them gives a column
    row_tol = max(ROW_TOL, _NOISE_TOL * noise)
    accept = max(accept, _NOISE_TOL * noise)
    modes = ([ColumnSet(P, A, ratio, True, row_tol), ColumnSet(P, A, ratio, False, row_tol)]
             if K > 1 else [ColumnSet(P, A, ratio, False, row_tol)])
    state = {"guesses": guesses, "modes": modes,
             "targets": np.arange(len(guesses)) if guesses is not None else np.arange(0)}
    start = time.perf_counter()
    n_trials, batch = 0, 0

    def fits(cols, z, misfit):
        """Whether a polished column is exact: below ``accept``, or on a
        gradient exact to its round-off within ``_NOISE_RATIO`` times the
        misfit its share of the round-off explains (a weak sample's)."""
        if misfit <= accept:
            return True
        return (cols.noisy and misfit <= _NOISE_CAP
                and misfit <= _NOISE_RATIO * cols.noise_misfit(z, noise))

    def keep(cols, pattern):
        """Polish a candidate pattern; keep the column if it is exact and new."""
        if len(cols.Z) and np.any(np.all(cols.active == pattern, axis=1)):
            return False  # a column already found (two samples' patterns
            # can differ in one neuron of 512: compared exactly)
        z, misfit = cols.polish(pattern)
        if not fits(cols, z, misfit):
            return False
        if cols.noisy and cols.ratio != 0 and not cols.repeats(z):
            z, pattern, misfit = cols.refine(z, pattern, misfit)
        if not cols.add(z, pattern, misfit):
            return False
        say(f"pattern columns: {len(cols.Z)} of {n_samples} after {n_trials} "
            f"trials ({time.perf_counter() - start:.1f} s), misfit {misfit:.1e}")
        state["modes"] = [cols]  # the signals' parametrisation is settled
        targets, guesses = state["targets"], state["guesses"]
        if guesses is not None and len(targets):
            # the guess whose pattern agrees best is done; the others are
            # orthogonal to every found c (V C = I)
            t_g = Omega @ guesses[targets].T + bias_mean - kink > 0
            agree = np.mean(t_g == cols.active[-1][:, None], axis=0)
            targets = np.delete(targets, int(np.argmax(agree)))
            state["guesses"] = _project_guesses(guesses, targets, cols.duals(), fixed)
            state["targets"] = targets
        return True

    def from_points(cols, points):
        """:func:`from_guesses` for explicit points ``(k, B)``."""
        for g in points:
            if len(cols.Z) >= n_samples:
                return
            pattern = Omega @ g + bias_mean - kink > 0
            for _ in range(4):
                z, misfit = cols.polish(pattern)
                if fits(cols, z, misfit):
                    keep(cols, pattern)
                    break
                new = cols.test(z[None])[1][:, 0]
                if np.array_equal(new, pattern):
                    break
                pattern = new

    def endgame(cols):
        """Few samples left: they lie in the complement of the found ``c``
        (``V C = I``), a space of that many dimensions; points drawn in it
        (onto the bias constraint) start one-column pattern iterations."""
        left = n_samples - len(cols.Z)
        if not len(cols.Z) or left > _ENDGAME:
            return
        Q = np.linalg.qr(cols.duals(), mode="complete")[0][:, len(cols.Z):]  # (B, left)
        if left == 2 and fixed is not None:
            # the samples left lie on a line of the bias constraint: every
            # activation cell along it, once
            e = Q.T @ fixed[0]
            if np.linalg.norm(e) > 1e-12 * np.linalg.norm(fixed[0]):
                p0 = Q @ (e * fixed[1] / (e @ e))
                d = Q @ np.array([-e[1], e[0]])
                slope = Omega @ d
                ok = np.abs(slope) > 1e-14 * np.abs(slope).max()
                cuts = np.sort(-(Omega[ok] @ p0 + bias_mean - kink) / slope[ok])
                mids = np.concatenate([[cuts[0] - 1.0], (cuts[1:] + cuts[:-1]) / 2,
                                       [cuts[-1] + 1.0]])
                from_points(cols, p0[None] + mids[:, None] * d[None])
                return
        points = rng.standard_normal((_ENDGAME_POINTS, left)) @ Q.T
        if fixed is not None:
            dots = points @ fixed[0]
            points = points[np.abs(dots) > 1e-8 * np.linalg.norm(fixed[0])]
            points *= (fixed[1] / (points @ fixed[0]))[:, None]
        from_points(cols, points)

    def iterate(cols, pattern):
        """The pattern iteration of one column from ``pattern``: the null
        vector over all neurons, the pattern it fits best, until it
        repeats or fits; whether a column was kept."""
        for _ in range(4):
            z, misfit = cols.polish(pattern)
            if fits(cols, z, misfit):
                return keep(cols, pattern)
            new = cols.test(z[None])[1][:, 0]
            if np.array_equal(new, pattern):
                return False
            pattern = new
        return False

    def from_guesses(cols):
        """The pattern iteration of one column from each guess: the pattern
        it predicts, the null vector over all neurons, the pattern that
        vector fits best, until it repeats (exact from a guess that
        mis-signs only a few neurons, e.g. the last sample, whose guess
        is exact once the others are found)."""
        found_any = False
        for g in state["targets"].copy():
            if len(cols.Z) >= n_samples or state["guesses"] is None:
                break
            pattern = Omega @ state["guesses"][g] + bias_mean - kink > 0
            for _ in range(4):
                z, misfit = cols.polish(pattern)
                if fits(cols, z, misfit):
                    found_any |= keep(cols, pattern)
                    break
                new = cols.test(z[None])[1][:, 0]
                if np.array_equal(new, pattern):
                    break
                pattern = new
        return found_any

    refresh, stalled = True, 0
    while n_trials < max_trials and time.perf_counter() - start < time_limit:
        modes = state["modes"]
        cols = modes[batch % len(modes)]
        batch += 1
        if len(cols.Z) >= n_samples:
            break
        n_u = cols.n_unknowns
        if np.sum(cols.usable) < n_u + 2:
            break
        if refresh and state["guesses"] is not None:
            from_guesses(cols)
            if len(cols.Z) >= n_samples:
                break
        sets = _row_sets(rng, Omega, bias_mean, kink, state["guesses"], state["targets"],
                         n_u - 1, _BATCH, cols.usable, cols)
        M = cols.trial_matrices(sets)
        Z = np.linalg.qr(np.swapaxes(M, 1, 2), mode="complete")[0][:, :, -1]
        n_trials += len(sets)
        share, patterns = cols.test(Z)
        refresh = False
        for t in np.flatnonzero(share >= _FIT_SHARE):
            refresh |= keep(cols, patterns[:, t])
        if cols.noisy:
            # a weak sample's trial (a null vector of a few rows) carries
            # its round-off many times over, and fits fewer rows than the
            # exact test asks: its pattern is iterated over all rows
            near = np.flatnonzero((share >= _NOISY_FIT_SHARE) & (share < _FIT_SHARE))
            for t in near[np.argsort(-share[near])][:_NOISY_POLISHES]:
                if len(cols.Z) >= n_samples:
                    break
                refresh |= iterate(cols, patterns[:, t])
        stalled = 0 if refresh else stalled + 1
        if stalled and stalled % _STALL == 0:
            endgame(cols)
        refresh |= batch <= len(modes)  # each parametrisation once from the guesses
    modes = state["modes"]
    cols = modes[0] if len(modes) == 1 else max(modes, key=lambda c: len(c.Z))
    C = cols.duals()
    C /= np.linalg.norm(C, axis=0)
    W = cols.Z[:, n:] @ cols.N.T
    return C, W, cols.active, n_trials


def ica_guesses(basis, n_inputs, fixed, random_state):
    """Rough samples from the span alone (the cocktail-party estimate):
    FastICA over the input coordinates of the basis ``(n_cols, B)`` of the
    batch's (scaled) span. Rows ``(n_guesses, B)`` in span coordinates; both
    signs without a bias (nothing fixes them), none when there are fewer
    input coordinates than ``B + 1``."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning
    import warnings

    B = basis.shape[1]
    if n_inputs < B + 1 or B < 2:
        return np.empty((0, B))
    ica = FastICA(n_components=B, whiten="unit-variance", fun="logcosh", max_iter=400,
                  tol=1e-6, random_state=int(random_state.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(basis[:n_inputs])
    G = ica.components_
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    if fixed is None:
        return np.vstack([G, -G])
    dots = G @ fixed[0]
    ok = np.abs(dots) > 1e-8 * np.linalg.norm(fixed[0])
    return G[ok] * (fixed[1] / dots[ok])[:, None]


def samples_from_columns(C, active, guesses, Omega, bias_mean, kink, fixed):
    """Samples ``(B, B)`` from found dual vectors ``C`` ``(B, n_found)``,
    and for each row the found column it comes from (``-1``: a guess).

    All found: ``V = C^{-1}``, each row rescaled onto the bias constraint
    (or, without one, signed so that it activates the neurons of its
    pattern). Some found: the guesses' duals ``guesses^{-1}`` with the
    columns that match a found pattern best replaced by the found ones,
    inverted (a start for the pattern iteration). ``(None, None)`` where
    that fails.
    """
    B = C.shape[0]
    n_found = C.shape[1]
    source = np.arange(B)
    if n_found < B:
        if guesses is None or len(guesses) != B:
            return None, None
        try:
            Chat = np.linalg.inv(guesses)
        except np.linalg.LinAlgError:
            return None, None
        t = Omega @ guesses.T + bias_mean - kink > 0
        agree = (active.astype(float) @ t + (~active).astype(float) @ ~t) / Omega.shape[0]
        from scipy.optimize import linear_sum_assignment
        rows, cols = linear_sum_assignment(-agree)
        source = np.full(B, -1)
        for f, g in zip(rows, cols):
            c = C[:, f] * np.sign(C[:, f] @ Chat[:, g]) * np.linalg.norm(Chat[:, g])
            Chat[:, g] = c
            source[g] = f
        C, active_of = Chat, None
    else:
        active_of = active
    try:
        V = np.linalg.inv(C)
    except np.linalg.LinAlgError:
        return None, None
    if fixed is not None:
        dots = V @ fixed[0]
        ok = np.abs(dots) > 1e-12 * np.linalg.norm(V, axis=1) * np.linalg.norm(fixed[0])
        V[ok] *= (fixed[1] / dots[ok])[:, None]
    elif active_of is not None:
        t = Omega @ V.T + bias_mean - kink > 0  # (m, B)
        agree = np.mean(t == active_of.T, axis=0)
        V[agree < 0.5] *= -1.0
    return (V, source) if np.all(np.isfinite(V)) else (None, None)


def _rows_by_regression(P, C, V, source, fixed):
    """Samples from some found dual vectors on a gradient exact to its
    round-off: each found sample's row by regressing ``P`` on the found
    columns ``beta_f = P c_f`` (``P = sum_k beta_k v_k^T``, and ``P c_f`` is
    ``beta_f`` times ``v_f . c_f``: the other samples are orthogonal to
    ``c_f``), the rows of the guesses (``source < 0``) projected onto the
    complement of the found duals, where the unfound samples lie; all onto
    the bias constraint ``fixed``.

    ``V = inv(C)`` with guesses in place of the missing duals (what
    :func:`samples_from_columns` returns) makes every row orthogonal to the
    wrong guessed duals too: measured (float32 leaky ReLU at trained
    weights, B = 32, 24 exact columns), every row came out wrong (errors
    0.05 to 300), the strongest samples' included. Regressed, a found row
    is off by the unfound samples' share of ``P`` only.
    """
    V = V.copy()
    found = source >= 0
    cols = source[found]
    beta = P @ C[:, cols]
    V[found] = np.linalg.lstsq(beta, P, rcond=None)[0]
    if np.any(~found):
        Q = np.linalg.qr(C)[0]
        G = V[~found]
        V[~found] = G - (G @ Q) @ Q.T
    dots = V @ fixed[0]
    ok = np.abs(dots) > 1e-12 * np.linalg.norm(V, axis=1) * np.linalg.norm(fixed[0])
    V[ok] *= (fixed[1] / dots[ok])[:, None]
    return V


class PatternResult:
    """Outcome of :func:`pattern_samples`: ``V`` ``(B, B)`` or ``None``,
    ``n_found`` columns, ``n_trials``; ``active`` ``(B, m)`` bool, the
    pattern each row of ``V`` has on the data (its found column's), and
    ``known`` ``(B,)`` whether the row has one (else a guess's row, whose
    ``active`` is ``False``)."""

    def __init__(self, V, n_found, n_trials, active=None, known=None):
        self.V, self.n_found, self.n_trials = V, int(n_found), int(n_trials)
        self.active, self.known = active, known


def pattern_samples(P, Omega, A, activation, bias_mean=0.0, *, n_samples, basis,
                    n_inputs, fixed=None, guesses=None, ica=None, accept=1e-8,
                    max_trials=10_000, random_state=None, verbose=0, noise=0.0):
    """The batch from exact columns (see the module), in span coordinates.

    The trials' rows come from ``guesses`` (``(B, B)``, e.g. the smoothed
    search's best guesses) and from the cocktail-party estimate of the span
    (``ica``, computed by :func:`ica_guesses` when ``None``). Returns a
    :class:`PatternResult`: ``V`` exact when every column is found; with
    some found and ``guesses`` given, the guesses corrected by the found
    columns (a start for the pattern iteration); else ``None``.
    """
    rng = random_state
    kink = two_slopes(activation)[0]
    if ica is None:
        ica = ica_guesses(basis, n_inputs, fixed, rng)
    pool = ica if guesses is None else np.vstack([guesses, ica])
    C, _, active, n_trials = find_columns(
        P, Omega, A, activation, bias_mean, n_samples=n_samples,
        guesses=pool if len(pool) else None, fixed=fixed, accept=accept,
        max_trials=max_trials, time_limit=np.inf, random_state=rng, verbose=verbose,
        noise=noise)
    V = known = rows_active = None
    if (noise > 0 and guesses is None and C.shape[1] == n_samples - 1
            and fixed is not None):
        # one sample missing from a gradient exact to its round-off: it is
        # the direction orthogonal to every found dual (V C = I), on the
        # bias constraint; the found samples' rows are placeholders (the
        # fit with the patterns fixed reads them off their patterns)
        last = np.linalg.svd(C.T)[2][-1]
        dot = float(last @ fixed[0])
        if abs(dot) > 1e-8 * np.linalg.norm(fixed[0]):
            V = np.linalg.pinv(C).copy()
            dots = V @ fixed[0]
            ok = np.abs(dots) > 1e-12 * np.linalg.norm(V, axis=1) * np.linalg.norm(fixed[0])
            V[ok] *= (fixed[1] / dots[ok])[:, None]
            V = np.vstack([V, last * (fixed[1] / dot)])
            known = np.arange(n_samples) < n_samples - 1
            rows_active = np.zeros((n_samples, P.shape[0]), dtype=bool)
            rows_active[:-1] = active
            return PatternResult(V, C.shape[1], n_trials, rows_active, known)
    if C.shape[1] == n_samples or (C.shape[1] and guesses is not None):
        V, source = samples_from_columns(C, active, guesses, Omega, bias_mean, kink, fixed)
        if V is not None and noise > 0 and C.shape[1] < n_samples and fixed is not None:
            V = _rows_by_regression(P, C, V, source, fixed)
        if V is not None:
            known = source >= 0
            rows_active = np.zeros((n_samples, P.shape[0]), dtype=bool)
            rows_active[known] = active[source[known]]
    return PatternResult(V, C.shape[1], n_trials, rows_active, known)
