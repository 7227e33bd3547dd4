"""The span of the batch and the Hermite moment tensor in it.

A gradient query is the first layer's gradient ``X`` (one row per neuron),
the weights the server chose (same layout) and the output weights. This
module turns it into the batch's span (facts F1, F4 of the theory page,
:ref:`theory-f1`, :ref:`theory-f4`) and the
Hermite moment tensor in that span (F2, F4b): the input of the tensor
decomposition.
"""

import warnings
from math import factorial
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._hermite import (
    coefficients_to_tensor,
    hermite_features,
    hermite_multi_indices,
    n_hermite_features,
)
from ._array_api import (column_sum_squares, from_host, get_namespace, host_state,
                         is_numpy_namespace, namespace_name, to_host)
from ._validation import (check_coefficients, check_query, one_row_prefix,
                          transform_namespace)
from .activations import Activation, get_activation, select_tensor_order
from ._sketch import sketched_span
from ._threads import blas_threads
from .exceptions import BatchSizeWarning, BlindFitWarning, NonGaussianWeightsWarning

__all__ = ["MomentTensorTransformer", "estimate_batch_size", "BatchSizeWarning",
           "NonGaussianWeightsWarning"]


# the largest batch whose moment tensor "auto" starts compute
_AUTO_TENSOR_MAX_BATCH = 16
# a gradient with at least this many live columns (and rows) gets its span
# from a random sketch (skrecon._sketch) rather than a full factorisation
_SKETCH_MIN_COLUMNS = 256
# the sketch's first width (batch size "auto"), and the columns it keeps
# beyond the batch's rank (directions at round-off that show the rank)
_SKETCH_COLUMNS = 96
_SKETCH_SPARE = 16






def _non_gaussian_message(w_in):
    """Why the input weights clearly are not i.i.d. Gaussian, or ``None``.

    The moment tensor is the Stein identity of a Gaussian (:ref:`theory-f2`): with
    other weights (PyTorch's default ``nn.Linear`` init is uniform, excess
    kurtosis -1.2; a trained layer) it is biased. The test is the sample
    excess kurtosis and the mean, against ``6`` standard errors (and at
    least ``0.2`` and ``0.05 std``). Only the tensor's starts need it: the
    warning is issued where the tensor is computed (:meth:`_fit_tensor`).
    """
    xp, _ = get_namespace(w_in)
    # the entries of every k-th row, at most ~100 000 (strided rows, not a
    # copy of the whole): the standard error (0.016) stays far below the
    # kurtosis threshold (0.2)
    step = max(1, -(-(w_in.shape[0] * w_in.shape[1]) // 100_000))
    w = xp.reshape(w_in[::step, ...], (-1,))
    n = w.shape[0]
    if n < 50:
        return None
    mean, std = float(xp.mean(w)), float(xp.std(w))
    if not std > 0:
        return None
    z = (w - mean) / std
    z = z * z
    kurtosis = float(xp.mean(z * z)) - 3.0
    se = np.sqrt(24.0 / n)
    if abs(kurtosis) > max(0.2, 6 * se) or abs(mean) > max(0.05, 6 / np.sqrt(n)) * std:
        return (
            f"The first-layer weights do not look like i.i.d. Gaussian draws "
            f"(mean {mean:.3g}, std {std:.3g}, excess kurtosis {kurtosis:.3g}; a "
            "centred Gaussian has mean 0 and excess kurtosis 0, PyTorch's "
            "default uniform init -1.2), and the moment tensor is being computed: "
            "it assumes Gaussian weights (Stein's identity) and is biased here, so "
            "its factors are poorer starts. Nothing else needs Gaussian weights: "
            "the per-sample search is exact at any known weights (a trained "
            "model's, PyTorch's default init), from random starts too "
            "(init='random' skips the tensor).")
    return None


def _effective_dtype(X, xp):
    """float32 for float64 data that float32 holds exactly (a float32
    gradient cast to float64 keeps float32 round-off), else float64; a host
    NumPy dtype."""
    def exact_in_float32(M):
        with np.errstate(over="ignore"):  # beyond float32's range: not exact
            return bool(xp.all(M == xp.astype(xp.astype(M, xp.float32), xp.float64)))

    # a float64 gradient shows it in its first rows: the whole only when they
    # pass, block by block (two copies of the whole of a 8192 x 12289
    # gradient took 1.1 GiB)
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


@dataclass
class _Projection:
    """A gradient query in span coordinates: what the decomposition and the
    refinement work on. ``P`` and ``Omega`` are ``(m, B)``, ``Z`` the Hermite
    coordinates ``(m, B)``, ``A`` the output weights ``(m, K)``: arrays of the
    input's namespace ``xp``, on its ``device``. ``column_scale`` and
    ``bias_row`` are small host (NumPy) arrays."""

    P: object
    Omega: object
    Z: object
    A: object
    scaled_basis: object  # (n_inputs_aug, B): orthonormal basis of span{D x~_i}
    hermite_basis: object  # (n_random, B): basis of the random coordinates' span
    column_scale: np.ndarray  # D, (n_inputs_aug,), host
    bias_mean: float
    regressors: object  # (m, K * n_bias_orders): known factors of the moments
    degree: int  # Hermite degree p of the moment tensor (order p + 1)
    max_features: int
    xp: object = None
    device: object = None

    @property
    def has_bias(self):
        return self.column_scale.shape[0] > self.hermite_basis.shape[0]

    @property
    def bias_row(self):
        """The scaled basis's bias coordinates ``(B,)`` (host), or ``None``."""
        if not self.has_bias:
            return None
        return to_host(self.scaled_basis[-1, :])

    def take_rows(self, rows):
        """``(P, Omega, A)`` of the neurons ``rows`` (host indices; ``None``: all)."""
        if rows is None:
            return self.P, self.Omega, self.A
        idx = from_host(rows, self.xp, self.device, dtype=self.xp.int64)
        return tuple(self.xp.take(a, idx, axis=0) for a in (self.P, self.Omega, self.A))

    def to_host(self):
        """This projection with every array in NumPy (for the host-only steps)."""
        if is_numpy_namespace(self.xp):
            return self
        if getattr(self, "_host_copy", None) is not None:
            return self._host_copy
        moved = {name: to_host(getattr(self, name))
                 for name in ("P", "Omega", "Z", "A", "scaled_basis", "hermite_basis",
                              "regressors")}
        self._host_copy = _Projection(
            column_scale=self.column_scale, bias_mean=self.bias_mean,
            degree=self.degree, max_features=self.max_features,
            xp=get_namespace()[0], device="cpu", **moved)
        return self._host_copy


def _noise_level(sv, B):
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


def _weight_statistics(weights, bias, weight_std):
    """Input-weight std, and the bias's mean and std (0 for a constant bias)."""
    xp, _ = get_namespace(weights)
    w_in = weights[:, :-1] if bias else weights
    size = w_in.shape[0] * w_in.shape[1]
    with np.errstate(under="ignore", over="ignore"):
        squares = float(xp.sum(column_sum_squares(w_in, xp))) if size else 0.0
    largest = 1.0
    if not 1e-290 < squares < 1e290:
        # scaled by the largest first (squares of 1e-200 underflow)
        largest = float(xp.max(xp.abs(w_in))) if size else 0.0
        if not largest > 0:
            raise ValueError(
                "The first-layer weights are all zero: the weight std must be "
                "positive for the moment method."
            )
        squares = float(xp.sum(column_sum_squares(w_in / largest, xp)))
    rms = largest * float(np.sqrt(squares / size))
    s = rms if weight_std == "auto" else float(weight_std)
    if not 1e-3 <= s / rms <= 1e3:
        raise ValueError(
            f"weight_std={s:.3g} is far from the RMS of the weights ({rms:.3g}): "
            "pass the standard deviation the server drew the weights with, or "
            "weight_std='auto'.")
    if bias:
        b = weights[:, -1]
        bias_mean = float(xp.mean(b))
        bias_std = float(xp.std(b))
        if bias_std <= 1e-12 * max(abs(bias_mean), s):
            bias_std = 0.0
    else:
        bias_mean, bias_std = 0.0, 0.0
    return s, bias_mean, bias_std


def _hermite_regression(Z, P, R, degree, max_features):
    """Coefficient tensors ``T_0 ... T_degree`` of ``p_j`` on Hermite features.

    The model is ``p_j = sum_o R_jo h_o(z_j)`` with known regressors ``R``
    (the output weights, times Hermite polynomials of a Gaussian bias when
    there is one). Returns a list whose entry ``k`` has shape
    ``(B, n_regressors) + (B,) * k`` with ``T_k[:, o] = E[d^k h_o]``: the
    known regressors enter the design, so no division by a small output
    weight occurs. When ``n_regressors * n_features`` exceeds
    ``max_features`` (or ``m / 2``), the response ``p_j (x) R_j`` is
    regressed on the features instead (its tensors then carry
    ``E[R R^T] u_i`` in the second mode); when even ``n_features`` does, the
    top degree is a plain average of the residual of the lower-degree
    regression.
    """
    xp, device = get_namespace(Z)
    m, n_dims = Z.shape
    n_resp = P.shape[1]
    K = R.shape[1]
    n_feat = n_hermite_features(n_dims, degree)
    Phi = hermite_features(Z, degree, xp)
    if K * n_feat <= max_features and m >= 2 * K * n_feat:
        design = xp.reshape(Phi[:, None, :] * R[:, :, None], (m, K * n_feat))
        coef = to_host(_lstsq(design, P, xp))  # (K * F, B)
        coef = coef.reshape(K, n_feat, n_resp).transpose(1, 2, 0)  # (F, B, K)
    else:
        Y = xp.reshape(P[:, :, None] * R[:, None, :], (m, n_resp * K))
        if n_feat <= max_features and m >= 2 * n_feat:
            coef = to_host(_lstsq(Phi, Y, xp))
        else:
            n_low = n_hermite_features(n_dims, degree - 1)
            low = _lstsq(Phi[:, :n_low], Y, xp)
            resid = Y - Phi[:, :n_low] @ low
            top = to_host(Phi[:, n_low:].T @ resid) / m  # = T[alpha], i.e. coef * alpha!
            idx = hermite_multi_indices(n_dims, degree)[n_low:]
            fact = np.array([np.prod([factorial(i.count(q)) for q in set(i)])
                             for i in idx], dtype=float)
            coef = np.vstack([to_host(low), top / fact[:, None]])
        coef = coef.reshape(n_feat, n_resp, K)
    # from here on B-sized: the host builds the symmetric tensors
    flat = coef.reshape(n_feat, n_resp * K)
    tensors = []
    for k in range(degree + 1):
        t = coefficients_to_tensor(flat, n_dims, k) if k else flat[:1].T
        t = t.reshape((n_resp, K) + (n_dims,) * k)
        tensors.append(t)
    return tensors


def _bias_regressors(A, z_bias, n_bias_orders):
    """Known regressors ``R = A (x) [He_0(z_b), ..., He_L(z_b)] / l!``.

    With a Gaussian bias the gradient row depends on the bias too; expanding
    that dependence in Hermite polynomials of the standardised bias
    ``z_b`` gives ``L + 1`` moment tensors ``E[d_b^l d^p h]`` (``l <= L``)
    that share the samples as components: more slices for the
    decomposition, and the bias's variance explained rather than left as
    noise. Returns ``(m, K * (L + 1))``, ordered ``(output, l)``.
    """
    if z_bias is None:
        return A
    xp, device = get_namespace(A, z_bias)
    he = [xp.ones_like(z_bias), z_bias]
    for n in range(2, n_bias_orders):
        he.append(z_bias * he[n - 1] - (n - 1) * he[n - 2])
    he = xp.stack(he[:n_bias_orders], axis=1)
    he = he / from_host([factorial(n) for n in range(n_bias_orders)], xp, device)
    return xp.reshape(A[:, :, None] * he[:, None, :], (A.shape[0], -1))


def _lstsq(design, Y, xp):
    """Least squares through the normal equations (Hermite features of a
    Gaussian are nearly orthonormal, so the Gram matrix is well conditioned)."""
    gram = design.T @ design
    if is_numpy_namespace(xp):
        return linalg.solve(gram, design.T @ Y, assume_a="pos")
    return xp.linalg.solve(gram, design.T @ Y)


def _triangular_factor(X, xp, overwrite=False):
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


def _distinct_columns(X, R, columns, xp, device):
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


class MomentTensorTransformer(TransformerMixin, BaseEstimator):
    """Span of the batch and its Hermite moment tensor, from one gradient.

    Fitting computes the span of the private batch from the singular value
    decomposition of the gradient (its rank is the batch size), projects the
    gradient and the weights onto it, and estimates the Hermite moment tensor
    of order ``p + 1`` in the span by regressing the projected gradient rows
    on the Hermite features of the standardised weights.

    Parameters
    ----------
    n_components : "auto" or int, default="auto"
        Dimension of the span, i.e. the batch size ``B``. ``"auto"`` reads it
        off the largest relative gap of the singular values above the
        round-off floor of the input's dtype (:func:`estimate_batch_size`).
    order : "auto", 3 or 4, default="auto"
        Order of the moment tensor. ``"auto"`` chooses the lowest order whose
        Gaussian moment ``mu_order`` does not vanish for ``activation``
        (3 for tanh, sigmoid, erf, ELU; 4 for ReLU, leaky ReLU, GELU, SiLU,
        softplus without bias).
    activation : str or Activation, default="tanh"
        First-layer activation; see :mod:`skrecon.activations`.
    bias : bool, default=False
        Whether the last column of ``X`` and ``weights`` is the first layer's
        bias.
    weight_std : "auto" or float, default="auto"
        Standard deviation of the server's Gaussian weights (excluding the
        bias). ``"auto"`` reads it off ``weights``.
    max_features : int, default=2000
        Largest number of regressors in the Hermite regression. Above it the
        output weights move to the response, and above that the top degree is
        estimated by a plain average of the lower-degree regression's residual.

    Attributes
    ----------
    components_ : array of shape (n_components, n_features_in)
        Orthonormal basis (rows) of the span of the gradient rows, which is
        the span of the bias-augmented samples.
    singular_values_ : ndarray of shape (min(n_neurons, n_live),) or (n_sketch,)
        The singular values of ``X`` without its all-zero columns (``n_live``
        columns remain), decreasing: all of them, or, for a gradient with at
        least 256 live columns and rows whose spectrum falls to round-off,
        the leading ``n_sketch`` (the batch size and at least 16 more, all
        of those at round-off) from a random sketch of the gradient
        (Halko, Martinsson & Tropp 2011): two thin products with ``X``
        instead of its full factorisation.
    n_components_ : int
        Batch size used.
    spectral_gap_ : float
        ``s_B / s_{B+1}``: how clearly the spectrum shows the batch size.
    noise_level_ : float
        Estimated relative noise in the span coordinates of the gradient
        (dimensionless, ``||noise|| / ||signal||``): the energy of the
        singular values beyond the ``B``-th, spread evenly over all the
        live columns as white noise would be. About ``1e-16`` for an exact
        float64 gradient; a refinement cannot fit below it.
    order_ : int
        Order of ``moment_tensor_``.
    weight_std_, bias_mean_, bias_std_ : float
        Statistics of the server's weights (``bias_std_`` is 0 for a constant
        bias, both bias statistics 0 without bias).
    moment_tensor_ : ndarray of shape (n_components, n_outputs, n_bias_orders) + (n_components,) * (order - 1)
        Hermite moment tensor ``E[d_b^l d^(order-1) h_o]``: first mode in the
        scaled span (``scaled_components_``), then the output mode, then the
        order ``l`` of the derivative in a Gaussian bias (``n_bias_orders`` is
        ``order`` with a Gaussian bias, else 1), then the Hermite modes in the
        span of the inputs. Every slice has the samples as CP components.
    scaled_components_ : ndarray of shape (n_components, n_features_in)
        Orthonormal basis of the span after scaling each column by its
        weight's std: the coordinates of the moment tensor's first mode.
    hermite_components_ : ndarray of shape (n_components, n_inputs)
        Orthonormal basis of the span of the scaled inputs (bias excluded):
        the coordinates of the moment tensor's Hermite modes.
    n_features_in_ : int
        Number of columns of ``X``.

    See Also
    --------
    GradientReconstructor : decomposes this tensor into the batch.

    Notes
    -----
    For ``z ~ N(0, I)`` Stein's lemma gives ``E[g (x) He_p(z)] =
    sum_i mu_{p+1}(x_i) x_i (x) x_i^(x)p`` (:ref:`theory-f2`), a tensor of CP rank
    ``B`` whose components are the samples. It is estimated in ``B``
    dimensions after projecting on the span, never in ``n_inputs``.

    Inputs may be arrays of any Array API library (CuPy on the GPU, ...):
    the QR and SVD of the gradient, the projection and the Hermite
    regression run there, and every fitted array lives in the input's
    namespace and on its device (pickles hold NumPy copies); mixing
    libraries or devices raises a ``ValueError``.

    References
    ----------
    .. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.
    .. [2] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with
       randomness: probabilistic algorithms for constructing approximate
       matrix decompositions", SIAM Review 53(2), 2011.

    Examples
    --------
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon import MomentTensorTransformer
    >>> batch, labels = load_digits_batch(4, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
    >>> mt = MomentTensorTransformer(bias=True).fit(
    ...     q.grad, weights=q.weights, output_weights=q.output_weights)
    >>> mt.n_components_, mt.order_, mt.moment_tensor_.shape
    (4, 3, (4, 1, 3, 4, 4))
    """

    _parameter_constraints = {
        "n_components": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "order": [StrOptions({"auto"}), Interval(Integral, 3, 4, closed="both")],
        "activation": [str, Activation],
        "bias": ["boolean"],
        "weight_std": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "max_features": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, n_components="auto", order="auto", activation="tanh",
                 bias=False, weight_std="auto", max_features=2000):
        self.n_components = n_components
        self.order = order
        self.activation = activation
        self.bias = bias
        self.weight_std = weight_std
        self.max_features = max_features

    # The query's weights are row-aligned metadata, requested by default
    # (routed by Pipeline, GridSearchCV ... under enable_metadata_routing).
    __metadata_request__fit = {"weights": True, "output_weights": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, weights=None, output_weights=None):
        """Compute the span and the moment tensor of a gradient query.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
            First-layer gradient, one row per neuron (bias gradient last when
            ``bias=True``).
        y : None
            Ignored.
        weights : array-like of the shape of ``X``, default=None
            The first-layer weights at which the gradient was taken.
            ``None``: only the span is computed (``components_``,
            ``singular_values_``, ``n_components_``, ``spectral_gap_``,
            ``noise_level_``), with a :class:`~skrecon.exceptions.BlindFitWarning`;
            the moment tensor and the weight statistics need the weights.
        output_weights : array-like of shape (n_neurons, n_outputs) or (n_neurons,), default=None
            The neurons' outgoing weights; ``None`` means all ones. Needs
            ``weights``.

        Returns
        -------
        self : MomentTensorTransformer
            The fitted transformer.

        Raises
        ------
        ValueError
            If an argument holds NaN or inf, shapes do not match, the
            gradient is zero, the order is not identifiable for the
            activation, the gradient cannot show the batch size (fewer
            neurons than samples, full rank), or ``output_weights`` comes
            without ``weights``.

        Examples
        --------
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(4, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> mt.n_components_, mt.order_, bool(mt.noise_level_ < 1e-12)
        (4, 3, True)
        """
        if weights is None:
            return self._fit_span(X, output_weights)
        self._fit(X, weights, output_weights)
        return self

    def _fit(self, X, weights, output_weights, tensor=True):
        """Fit and return the projected query (kept out of the fitted state).

        ``tensor=False`` stops after the span and the projection: the
        moment tensor (the costly Hermite regression) is left ``None``;
        ``tensor="auto"`` computes it for batches of at most 16 samples
        whose Hermite features number at most ``max_features`` (beyond,
        Jennrich's starts are poor and the regression costs ``O(m F^2)``).
        """
        X, W, A = check_query(self, X, weights, output_weights, reset=True)
        return self._fit_checked(X, W, A, tensor)

    def _fit_checked(self, X, W, A, tensor=True, input_dtype=None):
        """:meth:`_fit` on a query that :func:`check_query` has validated
        (float64 arrays of one namespace): the reconstructor, which has
        checked it already, passes its input's dtype (the dtype of the
        float attributes)."""
        if input_dtype is not None:
            self.n_features_in_ = X.shape[1]
            self._input_dtype = np.dtype(input_dtype)
        activation = get_activation(self.activation)
        s, bias_mean, bias_std = _weight_statistics(W, self.bias, self.weight_std)
        # (warned about where the moment tensor is computed, which needs them)
        self._non_gaussian = _non_gaussian_message(W[:, :-1] if self.bias else W)
        # A Gaussian bias drawn with mean 0 has a sample mean of order
        # std / sqrt(m): the parity argument of the theory page (F3) holds for its law.
        m_rows = X.shape[0]
        significant = abs(bias_mean) > 4 * bias_std / np.sqrt(m_rows)
        order_mean = bias_mean if (bias_std == 0 or significant) else 0.0
        self.order_ = select_tensor_order(activation, order_mean, order=self.order)
        m, n_cols = X.shape

        xp, device = get_namespace(X)
        basis, sv, B, gap = self._span(X, xp, device)

        # Scale each column by its weight's std, so that the weights become
        # standard normal (theory page, F4). The Hermite modes live in the input
        # coordinates; a Gaussian bias is one more (nuisance) regressor, a
        # constant bias stays in the first mode only.
        scale = np.full(n_cols, s)
        gaussian_bias = bool(self.bias) and bias_std > 0
        if gaussian_bias:
            scale[-1] = bias_std
        centre = np.zeros(n_cols)
        if gaussian_bias:
            centre[-1] = bias_mean
        # the random coordinates: all but a constant bias
        n_random = n_cols - 1 if (self.bias and not gaussian_bias) else n_cols
        n_in = n_cols - 1 if self.bias else n_cols
        scale_x = from_host(scale, xp, device)
        # thin (n_cols x B) factorisations: one BLAS thread (two threads on a
        # loaded two-core machine: 12 s for these two at 3073 x 128)
        with blas_threads(1):
            scaled_basis = xp.linalg.qr(basis * scale_x[:, None])[0]
            if n_in == n_cols:
                hermite_basis = scaled_basis
            else:
                hermite_basis = xp.linalg.qr(scaled_basis[:n_in, :])[0]
        # With Wz = (W - centre) / scale the standardised weights, Omega =
        # Wz[:, :n_random] @ scaled_basis[:n_random] and Z = Wz[:, :n_in] @
        # hermite_basis: both from one product of W with the small (n_cols,
        # 2B) matrix M, so that no (m, n_cols) temporary is formed
        M = xp.zeros((n_cols, 2 * B), dtype=X.dtype, device=device)
        M[:n_random, :B] = scaled_basis[:n_random, :]
        M[:n_in, B:] = hermite_basis
        M = M / scale_x[:, None]
        centre_x = from_host(centre, xp, device)
        OZ = W @ M - (centre_x @ M)[None, :]
        Omega, Z = OZ[:, :B], OZ[:, B:]
        P = X @ (scale_x[:, None] * scaled_basis)
        degree = self.order_ - 1
        n_bias_orders = degree + 1 if gaussian_bias else 1
        bias_z = (W[:, -1] - bias_mean) / bias_std if gaussian_bias else None
        R = _bias_regressors(A, bias_z, n_bias_orders)
        dtype = getattr(xp, self._input_dtype.name)  # float32 input: float32 attributes
        self.components_ = xp.astype(basis.T, dtype)
        self.singular_values_ = from_host(sv, xp, device, dtype=dtype)
        self.n_components_ = B
        self.spectral_gap_ = gap
        self.noise_level_ = _noise_level(sv, B)
        self.weight_std_ = s
        self.bias_mean_ = bias_mean if self.bias else 0.0
        self.bias_std_ = bias_std
        self.scaled_components_ = xp.astype(scaled_basis.T, dtype)
        self.hermite_components_ = xp.astype(hermite_basis.T, dtype)
        proj = _Projection(P, Omega, Z, A, scaled_basis, hermite_basis,
                           scale, self.bias_mean_, R, degree, self.max_features,
                           xp=xp, device=device)
        self._moment_tensor_host = self._lower_moments = self.moment_tensor_ = None
        self._fit_tensor(proj, tensor)
        return proj

    def _fit_tensor(self, proj, tensor="auto"):
        """The moment tensor of a fitted projection (the Hermite regression):
        sets ``moment_tensor_`` and its host copies, and returns whether it
        was computed. ``tensor="auto"``: only for batches of at most 16
        samples whose Hermite features number at most ``max_features``;
        ``False``: not at all (``moment_tensor_`` stays ``None``). The
        search engine calls it late, when its first starts need help."""
        B, degree = self.n_components_, proj.degree
        if tensor == "auto":
            tensor = (B <= _AUTO_TENSOR_MAX_BATCH
                      and n_hermite_features(B, degree) <= self.max_features)
        if not tensor:
            return False
        if getattr(self, "_non_gaussian", None):
            warnings.warn(self._non_gaussian, NonGaussianWeightsWarning)
        try:
            tensors = _hermite_regression(proj.Z, proj.P, proj.regressors, degree,
                                          self.max_features)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "The Hermite regression of the moment tensor is singular: its "
                "features do not vary across neurons (weights constant, of rank "
                "one, or far from i.i.d. Gaussian, or too few neurons). The "
                "moment tensor needs i.i.d. Gaussian first-layer weights "
                f"(skrecon.torch.gaussian_reinit_). ({exc})") from exc
        K = proj.A.shape[1]
        tensors = [t.reshape((B, K, -1) + t.shape[2:]) for t in tensors]
        self._moment_tensor_host = tensors[degree]
        self._lower_moments = tensors[:degree]
        self.moment_tensor_ = from_host(tensors[degree], proj.xp, proj.device,
                                        dtype=getattr(proj.xp, self._input_dtype.name))
        return True

    def _span(self, X, xp, device):
        """``(basis, singular_values, B, gap)``: the batch's span from the
        gradient's spectrum; ``basis`` is ``(n_cols, B)`` orthonormal, in the
        input's namespace, ``singular_values`` on the host."""
        self._precision = _effective_dtype(X, xp)
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
        # a gradient streamed over chunks of neurons (skrecon._streaming):
        # its span, spectrum and shape as a whole, X only a subset of its rows
        streamed = self.__dict__.pop("_streamed_span", None)
        if streamed is not None:
            nonzero, vectors, sv, shape = streamed
            live = nonzero
        elif min(X.shape[0], len(nonzero)) >= _SKETCH_MIN_COLUMNS:
            # a wide gradient: its span from a random sketch (two thin
            # products), unless its spectrum shows no round-off floor
            vectors, sv, live = self._sketched_span(columns, xp, device)
        if vectors is None:
            # the full factorisation: QR first (the SVD of the small
            # triangular factor has the same singular values and right
            # singular vectors, at a fraction of the cost)
            R = _triangular_factor(columns, xp, overwrite=columns is not X)
            _, sv_all, vt = xp.linalg.svd(R, full_matrices=False)
            vectors = vt.T
            live = _distinct_columns(X, R, nonzero, xp, device)  # positions in nonzero
            if len(live) == len(nonzero):
                sv = to_host(sv_all)
            else:
                # X[:, live] = Q R[:, live]: the same singular values, no second
                # factorisation of the tall gradient
                sv = to_host(xp.linalg.svdvals(
                    xp.take(R, from_host(live, xp, device, dtype=xp.int64), axis=1)))
        B, gap = self._batch_size(sv, shape, len(live))
        if gap < 10 and self.n_components == "auto" and not self._full_column_rank:
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
        return basis, sv, B, gap

    def _sketched_span(self, columns, xp, device):
        """``(vectors, singular_values, live)`` of the live columns of a
        wide gradient from a random sketch (:mod:`skrecon._sketch`): the
        right singular vectors ``(n, k)`` and the leading ``k`` singular
        values, ``k`` a few more than the batch; ``(None, None, None)``
        when no sketch of at most half the columns shows a
        round-off floor (a noisy gradient), or the Rayleigh-Ritz values do
        not confirm it."""
        m, n = columns.shape
        given = None if self.n_components == "auto" else int(self.n_components)
        first = _SKETCH_COLUMNS if given is None else given + _SKETCH_SPARE
        limit = min(m, n) // 2
        if first > limit:
            return None, None, None

        def captured(s):
            if not s[0] > 0:
                return False
            rank, _, how = _estimate_batch_size(s, self._precision, None)
            return how == "round-off" and rank + _SKETCH_SPARE <= len(s)

        vectors, sv = sketched_span(columns, first, limit, captured, xp, device)
        if vectors is None or not captured(sv):
            return None, None, None
        # the sketch's spectrum has no repeated column's zero: every
        # nonzero column is reported as live
        return vectors, sv, np.arange(n)

    def _batch_size(self, sv, shape, n_live):
        """``(B, gap)`` from the spectrum, or a clear error where the
        gradient cannot identify the batch."""
        m = shape[0]
        n_rank = int(np.sum(sv > 10 * sv[0] * np.finfo(self._precision).eps))
        # the batch size the spectrum decisively shows, where a given one
        # differs from it (None otherwise)
        self._shown_batch_size = None
        # whether the gradient has full column rank without a white-noise
        # bulk (the batch may have as many samples as columns, or more)
        self._full_column_rank = False
        if self.n_components == "auto":
            if n_rank == m and m < n_live:
                raise ValueError(
                    f"{one_row_prefix(m)}"
                    f"The gradient has as many independent rows as neurons "
                    f"({m}, shape {shape}): the batch size cannot be read off, "
                    "and the batch may be larger than this layer can identify. "
                    "Query a layer with many more neurons than samples."
                )
            B, gap, how = _estimate_batch_size(sv, self._precision, m)
            if how == "round-off":
                _warn_guessed_batch_size(sv, B)
            # every distinct column independent, and no white-noise bulk
            # below the batch size read off: the batch may have as many
            # samples as columns, or more
            # (a tail of one value says nothing about its flatness)
            self._full_column_rank = (
                how != "round-off" and n_rank == len(sv) == n_live < m
                and B <= n_live - 2 and not _white_noise_bulk(sv[B:], n_live, m))
            if self._full_column_rank:
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
                    "neurons.", BatchSizeWarning)
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
            return B, gap
        B = int(self.n_components)
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
                f"{n_rank} of the gradient: only {n_rank} distinct samples are "
                "identifiable (duplicated samples, or samples in the span of "
                f"others, merge into one). Reconstructing {n_rank} samples.",
                BatchSizeWarning,
            )
            B = n_rank
        shown, shown_gap = estimate_batch_size(sv, self._precision, n_rows=m)
        gap = float(sv[B - 1] / sv[B]) if B < len(sv) and sv[B] > 0 else np.inf
        if B < shown and shown_gap >= 100:
            self._shown_batch_size = shown
            warnings.warn(
                f"n_components (batch_size)={B} is below the batch size the "
                f"gradient's spectrum shows ({shown}, s_B / s_B+1 = {shown_gap:.3g}): "
                f"{B} samples cannot explain this gradient, and what is "
                "reconstructed will not be exact (GradientReconstructor flags no "
                "row as found). Use batch_size='auto' unless you know better.",
                BatchSizeWarning)
        elif B > shown and shown_gap >= 100:
            self._shown_batch_size = shown
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
        return B, gap

    def transform(self, X):
        """Coordinates of gradient rows in the span.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_features_in)
            Gradient rows.

        Returns
        -------
        X_new : ndarray of shape (n_neurons, n_components)
            ``X @ components_.T``.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``n_features_in_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(4, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> coords = mt.transform(q.grad)
        >>> coords.shape
        (2000, 4)
        >>> bool(np.allclose(mt.inverse_transform(coords), q.grad))
        True
        """
        check_is_fitted(self, "components_")
        xp, out_dtype = transform_namespace(self, X, self.components_)
        X = check_query(self, X, None, None, reset=False)[0]
        return xp.astype(X @ xp.astype(self.components_, xp.float64).T, out_dtype)

    def inverse_transform(self, X):
        """Map span coordinates back to gradient rows (bias column included).

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_components)
            Span coordinates, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_neurons, n_features_in)
            ``X @ components_``.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``n_components_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(2, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> mt.inverse_transform(np.eye(2)).shape  # the basis vectors of the span
        (2, 65)
        """
        check_is_fitted(self, "components_")
        X, xp, out_dtype = check_coefficients(self, X, self.n_components_, self.components_)
        return xp.astype(X @ xp.astype(self.components_, xp.float64), out_dtype)

    def __getstate__(self):
        # fitted arrays are pickled as NumPy arrays: loadable without the
        # device (or the library) they were computed on
        return host_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # set only by a fit with weights; a span-only refit removes them
    _TENSOR_ONLY = ("order_", "weight_std_", "bias_mean_", "bias_std_",
                    "scaled_components_", "hermite_components_", "moment_tensor_",
                    "_moment_tensor_host", "_lower_moments")

    def _fit_span(self, X, output_weights):
        """:meth:`fit` without weights: the span of the batch only."""

        if output_weights is not None:
            raise ValueError(
                "output_weights was given without weights: without weights only "
                "the span is computed, which uses neither. Pass weights=W too, "
                "or drop output_weights.")
        X = check_query(self, X, None, None, reset=True, require_weights=False)[0]
        xp, device = get_namespace(X)
        if not bool(xp.any(X != 0)):
            raise ValueError("The gradient X is zero everywhere: it carries no "
                             "information about the batch.")
        warnings.warn(
            "MomentTensorTransformer.fit got no weights: it computed the span of "
            "the batch only (components_, singular_values_, n_components_, "
            "spectral_gap_, noise_level_). The moment tensor (moment_tensor_, "
            "order_, the weight statistics) needs the first-layer weights: pass "
            "weights=W.", BlindFitWarning)
        basis, sv, B, gap = self._span(X, xp, device)
        for name in self._TENSOR_ONLY:
            self.__dict__.pop(name, None)
        dtype = getattr(xp, self._input_dtype.name)
        self.components_ = xp.astype(basis.T, dtype)
        self.singular_values_ = from_host(sv, xp, device, dtype=dtype)
        self.n_components_ = B
        self.spectral_gap_ = gap
        self.noise_level_ = _noise_level(sv, B)
        return self
