"""The span of the batch: basis, batch size and noise level from the spectrum.

A first-layer gradient ``X`` (one row per neuron) has the batch's span as
its row space (:ref:`theory-f1`): ``B`` singular values above round-off (or
above a white-noise bulk), the rest at round-off (or noise). This module
reads that span off a gradient, with the batch size ``B``, the gap
``s_B / s_{B+1}`` that shows it, and the relative noise in the span; wide
gradients get it from a random sketch (:mod:`skrecon._sketch`). The moment
step (:class:`~skrecon.MomentTensorTransformer`) and the blind estimate
(:func:`skrecon.blind.cocktail_party`) both start here.

References
----------
.. [1] M. Gavish and D. L. Donoho, "The optimal hard threshold for singular
   values is 4/sqrt(3)", IEEE Trans. Inf. Theory 60(8), 2014.
.. [2] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with
   randomness: probabilistic algorithms for constructing approximate matrix
   decompositions", SIAM Review 53(2), 2011.
"""

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from scipy import linalg

from ._array_api import (column_sum_squares, from_host, is_numpy_namespace,
                         namespace_name, to_host)
from ._roundoff import batch_size_above_floor
from ._sketch import sketched_span
from ._validation import one_row_prefix
from .exceptions import BatchSizeWarning

__all__ = ["Span", "fit_span", "svd_span", "estimate_batch_size", "effective_dtype",
           "noise_level", "triangular_factor", "distinct_columns"]

# a gradient with at least this many live columns (and rows) gets its span
# from a random sketch (skrecon._sketch) rather than a full factorisation
_SKETCH_MIN_COLUMNS = 256
# the sketch's first width (batch size "auto"), and the columns it keeps
# beyond the batch's rank (directions at round-off that show the rank)
_SKETCH_COLUMNS = 96
_SKETCH_SPARE = 16


@dataclass(frozen=True)
class Span:
    """The batch's span read off a gradient (:func:`fit_span`).

    Attributes
    ----------
    basis : array of shape (n_cols, batch_size)
        Orthonormal basis of the span (the gradient's top right singular
        vectors, each one's largest entry positive), in the gradient's
        namespace and on its device; zero rows at all-zero columns.
    singular_values : ndarray of shape (n_values,)
        The gradient's singular values (host, decreasing; the leading ones
        of a sketch for a wide gradient).
    batch_size : int
        ``B``, the span's dimension.
    gap : float
        ``s_B / s_{B+1}`` (inf when ``s_{B+1}`` is zero or absent).
    noise_level : float
        Relative in-span noise (:func:`noise_level`).
    precision : numpy dtype
        The precision the gradient was computed in (:func:`effective_dtype`).
    shown_batch_size : int or None
        The batch size the spectrum decisively shows, where a given
        ``batch_size`` differs from it; ``None`` otherwise.
    full_column_rank : bool
        Whether the gradient has full column rank without a white-noise bulk
        (``batch_size="auto"``): the batch may have as many samples as
        columns, or more.
    """

    basis: object
    singular_values: np.ndarray
    batch_size: int
    gap: float
    noise_level: float
    precision: np.dtype
    shown_batch_size: object = None
    full_column_rank: bool = False


def effective_dtype(X, xp):
    """float32 for float64 data that float32 holds exactly (a float32
    gradient cast to float64 keeps float32 round-off), else float64; a host
    NumPy dtype."""
    # (NumPy itself has no np.astype before 2.1; its arrays' method serves)
    astype = getattr(xp, "astype", None) or (lambda M, dtype: M.astype(dtype))

    def exact_in_float32(M):
        with np.errstate(over="ignore"):  # beyond float32's range: not exact
            return bool(xp.all(M == astype(astype(M, xp.float32), xp.float64)))

    # a float64 gradient shows it in its first rows: the whole only when they pass
    # (block by block: two copies of the whole of a 8192 x 12289 gradient
    # took 1.1 GiB)
    if exact_in_float32(X[:64, ...]) and all(
            exact_in_float32(X[start:min(start + 1024, X.shape[0]), ...])
            for start in range(64, X.shape[0], 1024)):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _gavish_donoho_omega(beta):
    """``omega(beta)``: optimal hard threshold over the median singular
    value for white noise of unknown level, aspect ratio ``beta <= 1``
    (Gavish & Donoho 2014, eq. (5))."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def estimate_batch_size(singular_values, dtype, *, n_rows=None):
    """Batch size from the spectrum of the gradient (:ref:`theory-f1`).

    The singular values of an exact gradient drop to round-off after the
    ``B``-th: values below ``10 eps(dtype) s_1`` are round-off, and among the
    rest are the batch's samples (a weak sample far above round-off behind a
    larger gap still counts), except a last group of them behind a ratio
    ``s_k / s_{k+1}`` of 1000 or more that stays within 100 times the
    floor: round-off of a long computation, or the flat bulk of it that a
    parameter update ``(θ - θ') / lr`` carries. A noisy gradient has no
    round-off values: its ``n - B`` noise singular values form a flat bulk,
    and (given ``n_rows``) ``B`` is the number of values above the optimal
    hard threshold ``omega(n / n_rows) * median(s)`` of Gavish & Donoho,
    which the signal must clear to be told from the noise at all (or the
    last ratio of 100 or more above that threshold, when the values below
    it stay within 3 times the threshold: noise that is not white, such as
    pruning, lifts a few of its values just over it).

    Parameters
    ----------
    singular_values : ndarray of shape (n,)
        In decreasing order, of a gradient with ``n`` columns (all-zero
        columns left out).
    dtype : numpy dtype
        The precision the gradient was computed in (float32 data stored as
        float64 counts as float32).
    n_rows : int or None, default=None
        Number of rows (neurons) of the gradient, for the noise threshold;
        ``None`` uses the largest ratio in the noisy case too.

    Returns
    -------
    batch_size : int
    gap : float
        The ratio ``s_B / s_{B+1}`` (inf when ``s_{B+1}`` is zero or absent).

    References
    ----------
    .. [1] M. Gavish and D. L. Donoho, "The optimal hard threshold for
       singular values is 4/sqrt(3)", IEEE Trans. Inf. Theory 60(8), 2014.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.moments import estimate_batch_size
    >>> B, gap = estimate_batch_size(np.array([5.0, 2.0, 1e-3, 1e-16]), np.float64)
    >>> B, f"{gap:.0e}"
    (3, '1e+13')
    >>> noisy = np.concatenate([[50.0, 9.0, 3.0], np.linspace(1.1, 0.9, 40)])
    >>> estimate_batch_size(noisy, np.float64, n_rows=2000)[0]
    3
    """
    return _estimate_batch_size(singular_values, dtype, n_rows)[:2]


# a ratio of consecutive singular values this large is a gap, not a spread
# of round-off (which stays within a factor of ten or so)
_DECISIVE_RATIO = 1e3
# round-off of a long computation spreads up to this factor above the
# ``10 eps s_1`` floor: a last group of values within it, behind a decisive
# gap, is round-off
_ROUNDOFF_SPREAD = 100.0
# noise that is not white lifts a few values over the noise threshold by at
# most this factor
_LIFTED_NOISE = 3.0
# a value below the round-off floor is a sample when it stands this far
# above the round-off bulk after it
_ABOVE_BULK = 3.0


# at most this many values at round-off: an exact batch leaves n - B of them
# (16 digits, 65 columns: 49), a quantised gradient without a zero level one
# per group of constant columns (16 digits, 4 bits, Gaussian bias: 1, read as
# 50 samples)
_FEW_ROUNDOFF = 2


def _warn_guessed_batch_size(singular_values, batch_size):
    """Warn where a batch size read in round-off mode is a guess: hardly
    any singular value is at round-off."""
    n, B = len(singular_values), batch_size
    if n - B > _FEW_ROUNDOFF:
        return
    why = (f"only {n - B} of its {n} singular values are at round-off, so "
           "either the batch nearly fills the gradient's columns (more samples "
           "than it can identify) or a noisy gradient has "
           f"{n - B} exactly dependent columns (quantisation without a zero "
           "level makes constant columns) and no sample gap at all")
    warnings.warn(
        f"The batch size read off the gradient ({B}) is a guess: {why}. Pass "
        "batch_size (GradientReconstructor) or n_components "
        "(MomentTensorTransformer) if you know it: fitting a guessed batch this "
        "large takes long.", BatchSizeWarning)


def _estimate_batch_size(singular_values, dtype, n_rows):
    """:func:`estimate_batch_size`, and how the batch size was read:
    ``"round-off"`` (the values after it are round-off), ``"noise threshold"``
    (above a white-noise bulk), or ``"largest ratio"`` among values that are
    all above round-off (neither: a noisy gradient without a clear bulk, or
    a batch at least as large as the number of columns)."""
    s = np.asarray(singular_values, dtype=float)
    if s.ndim != 1 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(
            "singular_values must be a 1-D array of finite, non-negative values, "
            f"got shape {s.shape}.")
    if np.any(np.diff(s) > 0):
        raise ValueError("singular_values must be in decreasing order.")
    if n_rows is not None and not (isinstance(n_rows, Integral) and n_rows >= 1):
        raise ValueError(f"n_rows must be a positive integer or None, got {n_rows!r}.")
    if s.size == 0 or not s[0] > 0:
        return 0, np.inf, "round-off"
    s = s / s[0]  # (10 s_1 overflows at 1e308; subnormal values become normal)
    floor = 10 * np.finfo(dtype).eps
    n_kept = int(np.sum(s > floor))
    if n_kept == len(s):
        if n_kept == 1:
            return 1, np.inf, "largest ratio"
        if n_rows is not None and len(s) >= 4:
            beta = min(len(s), n_rows) / max(len(s), n_rows)
            threshold = _gavish_donoho_omega(beta) * np.median(s)
            B = int(np.sum(s > threshold))
            if 1 <= B < len(s) / 2:
                # noise that is not white (pruning) lifts a few of its values
                # just over the threshold (up to 2x, measured); a decisive
                # gap above them (a ratio of 100 or more, and larger than the
                # ratio at the threshold) still marks the batch. Values
                # further above are samples (the weaker ones of a batch with
                # one dominant sample, behind a gap of 500)
                ratios = s[:B] / s[1:B + 1]
                decisive = np.flatnonzero((ratios[:-1] >= max(100.0, ratios[-1]))
                                          & (s[1:B] < _LIFTED_NOISE * threshold))
                if decisive.size:
                    B = int(decisive[-1]) + 1
                return B, float(s[B - 1] / s[B]), "noise threshold"
        ratios = s[:-1] / s[1:]
        how = "largest ratio"
    else:
        # every value above the floor is a sample -- a weak one (a sample
        # at 1e-5 x the others' scale, a near-duplicate) sits far above
        # round-off, behind a larger gap -- except a last group, behind a
        # ratio of 1000 or more, that stays within 100 x the floor: the
        # round-off of a long computation, or the flat bulk of it that a
        # parameter update (θ - θ') / lr carries
        B = n_kept
        decisive = np.flatnonzero(s[:n_kept - 1] / s[1:n_kept] >= _DECISIVE_RATIO)
        if decisive.size and s[decisive[-1] + 1] < _ROUNDOFF_SPREAD * floor:
            B = int(decisive[-1]) + 1
        elif n_rows is not None:
            # samples below 10 eps s_1: the round-off of an elementwise-exact
            # gradient is a flat bulk near eps ||G||_F (1/sqrt(m) + 1/sqrt(n))
            # (float32, 64 -> 1024 -> 10 trained tanh: 0.2 eps s_1); values
            # that stand above it by _ABOVE_BULK are samples (a trained net's
            # confident ones: 0.9 to 8 eps s_1 in float32), values within it
            # are not (the flat bulk of an update's round-off)
            low = np.finfo(dtype).eps * np.sqrt(np.sum(s**2)) * (
                1 / np.sqrt(n_rows) + 1 / np.sqrt(len(s)))
            # (only where the samples' values run on below the floor without
            # a decisive gap: behind one, the first round-off value of a
            # float64 gradient stands 4 times above the rest too)
            while (B < len(s) - 1 and s[B - 1] / s[B] < _DECISIVE_RATIO
                   and s[B] > _ABOVE_BULK * max(low, np.median(s[B + 1:]))):
                B += 1
        return B, float(s[B - 1] / s[B]) if s[B] > 0 else np.inf, "round-off"
    k = int(np.argmax(ratios))
    return k + 1, float(ratios[k]), how


def _white_noise_bulk(tail, n, m):
    """Whether singular values ``tail`` (decreasing) of an ``m x n``
    gradient form the flat bulk of white noise: within twice the
    Marchenko-Pastur spread ``(1 + sqrt(n / m)) / (1 - sqrt(n / m))`` of its
    singular values (and 1.5)."""
    if not tail[-1] > 0:
        return False
    root = np.sqrt(min(n, m) / max(n, m))
    edge = (1 + root) / (1 - root) if root < 1 else np.inf
    return bool(tail[0] / tail[-1] <= max(1.5, 2 * edge))


def noise_level(sv, B):
    """Relative in-span noise from the out-of-span singular values.

    White noise of the gradient puts the same energy in every direction; the
    ``n - B`` directions outside the span carry only noise, so the span's
    ``B`` directions carry ``B / (n - B)`` of that energy.
    """
    n = len(sv)
    if B >= n or not sv[0] > 0:
        return 0.0
    sv = np.asarray(sv) / sv[0]  # (squares of 1e160 overflow)
    tail = float(np.sum(sv[B:] ** 2)) * B / (n - B)
    return float(np.sqrt(tail / float(np.sum(sv[:B] ** 2))))


def triangular_factor(X, xp, overwrite=False):
    """``R`` of ``X = Q R`` (``X`` itself when it is not tall): same singular
    values and right singular vectors as ``X``. NumPy and CuPy skip ``Q``.
    ``overwrite``: ``X`` is a scratch copy that the factorisation may reuse."""
    m, n = X.shape
    if m <= 2 * n:
        return X
    lib = namespace_name(xp)
    if lib == "numpy":
        # LAPACK's geqrf through SciPy, with its optimal workspace: on a tall
        # thin gradient (20 000 x 65) half the time of np.linalg.qr
        geqrf, geqrf_lwork = linalg.get_lapack_funcs(("geqrf", "geqrf_lwork"), (X,))
        lwork, info = geqrf_lwork(*X.shape)
        work = np.array(X, order="F", copy=None if overwrite else True)
        factor, _, _, info = geqrf(work, lwork=int(lwork), overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK geqrf failed (info={info}).")
        return np.triu(factor[:n])
    if lib == "cupy":
        import cupy
        return cupy.linalg.qr(X, mode="r")
    return xp.linalg.qr(X)[1]


def distinct_columns(X, R, columns, xp, device):
    """Positions in ``columns`` (host indices of columns of ``X``) of those
    that do not repeat an earlier one, in order.

    ``R`` is the triangular factor of ``X[:, columns]`` (or those columns
    themselves): equal columns of ``X`` have equal columns of ``R`` up to
    round-off. The Array API has no ``unique`` over columns: two random
    projections of ``R``'s columns (drawn on the host) flag candidate
    repeats, and each candidate is compared exactly on the device.
    """
    rows = R.shape[0]
    probes = np.random.default_rng(0).standard_normal((2, rows))
    prints = to_host(from_host(probes, xp, device) @ R)  # (2, n_columns)
    norms = np.sqrt(to_host(column_sum_squares(R, xp)))
    tol = 1e-9 * np.sqrt(rows) * norms  # far above the round-off of equal columns
    order = np.argsort(prints[0], kind="stable")
    repeated = np.zeros(len(columns), dtype=bool)
    start = 0
    while start < len(order):
        stop = start + 1
        while (stop < len(order) and prints[0, order[stop]] - prints[0, order[stop - 1]]
               <= tol[order[stop]] + tol[order[stop - 1]]):
            stop += 1
        kept = []
        for j in np.sort(order[start:stop]):
            if any(abs(prints[1, j] - prints[1, i]) <= tol[i] + tol[j]
                   and bool(xp.all(X[:, int(columns[i])] == X[:, int(columns[j])]))
                   for i in kept):
                repeated[j] = True
            else:
                kept.append(j)
        start = stop
    return np.flatnonzero(~repeated)


def fit_span(X, batch_size, xp, device, noise_floor=None, streamed=None):
    """The batch's span from the gradient's spectrum.

    Parameters
    ----------
    X : array of shape (n_neurons, n_cols)
        The validated float64 gradient, in namespace ``xp`` on ``device``.
    batch_size : "auto" or int
        The batch size, or ``"auto"`` to read it off the spectrum
        (:func:`estimate_batch_size`).
    xp, device
        The namespace and device of ``X``.
    noise_floor : float or None, default=None
        The largest singular value a known noise (a parameter update's
        round-off, :mod:`skrecon._roundoff`) can give: the batch size is then
        the count of singular values above it. ``None``: the spectrum alone.
    streamed : tuple or None, default=None
        ``(live, vectors, singular_values, shape)`` of a gradient streamed
        over chunks of neurons (:meth:`skrecon._streaming.NeuronStream.spectrum`):
        its span, spectrum and shape as a whole, ``X`` only a subset of its
        rows. ``None``: the span of ``X``.

    Returns
    -------
    span : Span

    Raises
    ------
    ValueError
        If ``X`` is zero, or cannot identify the batch (as many independent
        rows as neurons, a ``batch_size`` above its rank).
    """
    precision = effective_dtype(X, xp)
    # A column that is zero in every row (a pixel that is 0 in every
    # sample), or equal to an earlier one (two pixels that only one
    # sample lights, at the same value, after quantisation), carries
    # nothing new; left in, it adds exact zeros to the spectrum, and with
    # a noisy gradient the step from noise to those zeros would pass for
    # the batch's gap.
    nonzero = np.flatnonzero(to_host(xp.any(X != 0, axis=0)))
    if len(nonzero) == 0:
        raise ValueError(
            "The gradient X is zero everywhere: it carries no information "
            "about the batch (was the loss already minimal, or the wrong "
            "layer's gradient passed?).")
    # the span itself, from every nonzero column (a zero column, e.g. a
    # pixel dark in every sample, adds nothing to the factorisation but
    # its cost); one factorisation when every column is live, as for
    # natural images
    n_cols = X.shape[1]
    if len(nonzero) < n_cols:
        if is_numpy_namespace(xp):
            # rows of X.T: one copy, in the column-major order that
            # LAPACK factors in place
            columns = X.T[nonzero].T
        else:
            columns = xp.take(X, from_host(nonzero, xp, device, dtype=xp.int64),
                              axis=1)
    else:
        columns = X
    vectors, sv, live = None, None, None
    shape = X.shape
    if streamed is not None:
        # a gradient streamed over chunks of neurons (skrecon._streaming):
        # its span, spectrum and shape as a whole, X a subset of its rows
        nonzero, vectors, sv, shape = streamed
        live = nonzero
    elif min(X.shape[0], len(nonzero)) >= _SKETCH_MIN_COLUMNS:
        # a wide gradient: its span from a random sketch (two thin
        # products), unless its spectrum shows no round-off floor
        vectors, sv, live = _sketched_span(columns, batch_size, precision, xp, device)
    if vectors is None:
        # the full factorisation: QR first (the SVD of the small
        # triangular factor has the same singular values and right
        # singular vectors, at a fraction of the cost)
        R = triangular_factor(columns, xp, overwrite=columns is not X)
        _, sv_all, vt = xp.linalg.svd(R, full_matrices=False)
        vectors = vt.T
        live = distinct_columns(X, R, nonzero, xp, device)  # positions in nonzero
        if len(live) == len(nonzero):
            sv = to_host(sv_all)
        else:
            # X[:, live] = Q R[:, live]: the same singular values, no second
            # factorisation of the tall gradient
            sv = to_host(xp.linalg.svdvals(
                xp.take(R, from_host(live, xp, device, dtype=xp.int64), axis=1)))
    B, gap, shown, full_column_rank = _read_batch_size(sv, shape, len(live),
                                                       batch_size, precision,
                                                       noise_floor)
    if gap < 10 and batch_size == "auto" and not full_column_rank:
        warnings.warn(
            f"The singular values of the gradient show no clear gap "
            f"(s_B / s_B+1 = {gap:.3g} at B = {B}): the batch size is "
            "uncertain, e.g. because of noise, or because the batch is "
            "larger than the gradient can identify. Pass batch_size "
            "(GradientReconstructor) or n_components (MomentTensorTransformer) "
            "if you know it.",
            BatchSizeWarning,
        )
    # (n_cols, B) orthonormal, original coordinates; each direction's
    # largest entry positive (as scikit-learn's svd_flip), so that the
    # signs do not depend on the library's SVD
    top = to_host(vectors[:, :B])
    signs = np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(B)])
    signs[signs == 0] = 1.0
    basis = vectors[:, :B] * from_host(signs, xp, device)[None, :]
    if len(nonzero) < n_cols:
        # back to every column: zero rows at the zero columns
        if is_numpy_namespace(xp):
            full = np.zeros((n_cols, B), dtype=basis.dtype)
            full[nonzero] = basis
            basis = full
        else:
            embed = from_host(np.eye(n_cols)[:, nonzero], xp, device)
            basis = embed @ basis
    return Span(basis, sv, B, gap, noise_level(sv, B), precision, shown,
                full_column_rank)

def _sketched_span(columns, batch_size, precision, xp, device):
    """``(vectors, singular_values, live)`` of the live columns of a
    wide gradient from a random sketch (:mod:`skrecon._sketch`): the
    right singular vectors ``(n, k)`` and the leading ``k`` singular
    values, ``k`` a few more than the batch; ``(None, None, None)``
    when no sketch of at most half the columns shows a
    round-off floor (a noisy gradient), or the Rayleigh-Ritz values do
    not confirm it."""
    m, n = columns.shape
    given = None if batch_size == "auto" else int(batch_size)
    first = _SKETCH_COLUMNS if given is None else given + _SKETCH_SPARE
    limit = min(m, n) // 2
    if first > limit:
        return None, None, None

    def captured(s):
        if not s[0] > 0:
            return False
        rank, _, how = _estimate_batch_size(s, precision, None)
        return how == "round-off" and rank + _SKETCH_SPARE <= len(s)

    vectors, sv = sketched_span(columns, first, limit, captured, xp, device)
    if vectors is None or not captured(sv):
        return None, None, None
    # the sketch's spectrum has no repeated column's zero: every
    # nonzero column is reported as live
    return vectors, sv, np.arange(n)

def _check_rows_below_columns(rank, n_columns, shape, remedy):
    """A clear error where every row of an ``(m, n)`` gradient is independent
    and ``m < n_columns``: the batch size cannot be read off. ``remedy``
    follows "cannot be read off" in the message."""
    m = shape[0]
    if rank == m and m < n_columns:
        raise ValueError(
            f"{one_row_prefix(m)}The gradient has as many independent rows as "
            f"neurons ({m}, shape {shape}): the batch size cannot be read off"
            f"{remedy}")


def _read_batch_size(sv, shape, n_live, batch_size, precision, noise_floor=None):
    """``(B, gap, shown, full_column_rank)`` from the spectrum, or a clear
    error where the gradient cannot identify the batch. ``shown``: the
    batch size the spectrum decisively shows, where a given one differs
    from it (``None`` otherwise); ``full_column_rank``: whether the
    gradient has full column rank without a white-noise bulk (the batch may
    have as many samples as columns, or more)."""
    m = shape[0]
    n_rank = int(np.sum(sv > 10 * sv[0] * np.finfo(precision).eps))
    shown_batch_size, full_column_rank = None, False
    if batch_size == "auto":
        _check_rows_below_columns(
            n_rank, n_live, shape, ", and the batch may be larger than this layer "
            "can identify. Query a layer with many more neurons than samples.")
        B, gap, how = _estimate_batch_size(sv, precision, m)
        if noise_floor is not None:  # known round-off
            B, gap, how = batch_size_above_floor(sv, B, how, noise_floor, precision)
        if how == "round-off":
            _warn_guessed_batch_size(sv, B)
        # every distinct column independent, and no white-noise bulk
        # below the batch size read off: the batch may have as many
        # samples as columns, or more
        # (a tail of one value says nothing about its flatness)
        full_column_rank = (
            how != "round-off" and n_rank == len(sv) == n_live < m
            and B <= n_live - 2 and not _white_noise_bulk(sv[B:], n_live, m))
        if full_column_rank:
            spread = sv[B] / sv[-1]
            warnings.warn(
                f"The gradient has full column rank: all {n_live} singular "
                f"values of its distinct nonzero columns are above round-off, "
                f"and the {n_live - B} below the batch size read off ({B}) "
                f"spread over a factor {spread:.3g}, not the flat bulk of white "
                f"noise. Unless its noise is not white (pruning, quantisation), "
                f"the batch has at least {n_live} samples, as many as the "
                f"gradient's columns (the inputs, with the bias): its samples "
                "are then linearly dependent, their span is the whole input "
                f"space, and it identifies none of them, so the {B} samples "
                "reconstructed are not the batch's. A wider layer cannot help: "
                f"the rank is bounded by the {n_live} columns, not by the "
                "neurons. Given the batch size, "
                "skrecon.overcomplete.reconstruct_overcomplete reaches batches a "
                "few samples beyond the rank.", BatchSizeWarning)
        elif how == "largest ratio" and gap >= 10:
            # (below 10 the no-gap warning says that B is uncertain)
            warnings.warn(
                f"All {len(sv)} singular values of the gradient are above "
                f"round-off and show no noise floor: either the gradient is "
                f"noisy, or the batch has at least {len(sv)} samples (as many "
                "as the gradient's distinct columns), more than it can "
                f"identify. The batch size read off the largest ratio ({B}, "
                f"s_B / s_B+1 = {gap:.3g}) is uncertain; pass batch_size "
                "(GradientReconstructor) or n_components "
                "(MomentTensorTransformer) if you know it.", BatchSizeWarning)
        return B, gap, None, full_column_rank
    B = int(batch_size)
    if n_live < B < m:
        raise ValueError(
            f"n_components (batch_size)={B} exceeds the {n_live} distinct "
            f"nonzero columns of the gradient (shape {shape}): its rank is at "
            f"most {n_live}, so a batch of {B} samples is linearly dependent "
            "and its span identifies none of them. A wider layer cannot help "
            f"(the rank is bounded by the {n_live} columns, the inputs with "
            "the bias, not by the neurons); only a batch of fewer samples than "
            "columns is identifiable from its span.")
    if B >= m or B > len(sv):
        raise ValueError(
            f"{one_row_prefix(m)}"
            f"n_components (batch_size)={B} cannot be identified from a "
            f"gradient of shape {shape} with {n_live} distinct nonzero columns: "
            f"its rank is at most {min(m, n_live)}, and the moment method "
            "needs many more neurons than samples. Query a wider layer."
        )
    if B > n_rank:
        warnings.warn(
            f"n_components (batch_size)={B} exceeds the numerical rank "
            f"{n_rank} of the gradient: the per-sample search separates at "
            f"most {n_rank} samples (duplicated samples merge into one and "
            "cannot be told apart; distinct but linearly dependent samples, "
            "e.g. more samples than features, are reached by "
            "skrecon.overcomplete.reconstruct_overcomplete). Reconstructing "
            f"{n_rank} samples.",
            BatchSizeWarning,
        )
        B = n_rank
    shown, shown_gap = estimate_batch_size(sv, precision, n_rows=m)
    if noise_floor is not None:  # known round-off
        with warnings.catch_warnings():  # (said once, for B)
            warnings.simplefilter("ignore", BatchSizeWarning)
            shown, shown_gap, _ = batch_size_above_floor(sv, shown, "round-off",
                                                         noise_floor, precision)
    gap = float(sv[B - 1] / sv[B]) if B < len(sv) and sv[B] > 0 else np.inf
    if B < shown and shown_gap >= 100:
        shown_batch_size = shown
        warnings.warn(
            f"n_components (batch_size)={B} is below the batch size the "
            f"gradient's spectrum shows ({shown}, s_B / s_B+1 = {shown_gap:.3g}): "
            f"{B} samples cannot explain this gradient, and what is "
            "reconstructed will not be exact (GradientReconstructor flags no "
            "row as found). Use batch_size='auto' unless you know better.",
            BatchSizeWarning)
    elif B > shown and shown_gap >= 100:
        shown_batch_size = shown
        warnings.warn(
            f"n_components (batch_size)={B} exceeds the batch size the "
            f"gradient's spectrum shows ({shown}, s_B / s_B+1 = {shown_gap:.3g}): "
            f"its {B - shown} weakest directions are noise or round-off, and a "
            "row found there fits that (GradientReconstructor flags as found "
            f"only rows that fit the gradient as well as {shown} samples can). "
            "Use batch_size='auto' unless you know better.", BatchSizeWarning)
    elif gap < 10:
        warnings.warn(
            f"The singular values of the gradient show no clear gap at the "
            f"given batch size (s_B / s_B+1 = {gap:.3g} at B = {B}): the "
            "weakest samples are at the noise floor, and their "
            "reconstructions will carry large errors.",
            BatchSizeWarning,
        )
    return B, gap, shown_batch_size, False


def svd_span(X, batch_size):
    """``(basis (n_cols, B), B, gap)`` of a host gradient from its full SVD:
    the top right singular vectors and the batch size, read off the spectrum
    for ``"auto"`` (the blind estimate's span: every column, no sketch)."""
    m, n_cols = X.shape
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    precision = effective_dtype(X, np)
    rank = int(np.sum(s > 10 * s[0] * np.finfo(precision).eps))
    if batch_size == "auto":
        _check_rows_below_columns(
            rank, n_cols, X.shape, ". Pass batch_size, or query a layer with more "
            "neurons than samples.")
        B, gap = estimate_batch_size(s, precision, n_rows=m)
    else:
        B = int(batch_size)
        if B > len(s):
            raise ValueError(
                f"batch_size={B} exceeds the rank a gradient of shape {X.shape} "
                f"can have ({len(s)}).")
        if B > rank:
            warnings.warn(
                f"batch_size={B} exceeds the numerical rank {rank} of the "
                f"gradient: only {rank} samples can be separated. Separating "
                f"{rank} samples.", BatchSizeWarning)
            B = rank
        gap = float(s[B - 1] / s[B]) if B < len(s) and s[B] > 0 else np.inf
    return vt[:B].T, B, gap
