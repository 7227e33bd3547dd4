"""The blind estimate: the Cocktail Party Attack, which needs no weights.

A first-layer gradient mixes the private batch linearly: every row is
``g_j = sum_i delta_ij x~_i`` with ``x~_i = (x_i, 1)`` when the layer has a
bias. Kariyappa et al. (ICML 2023) read this as a cocktail party: the rows are
microphone recordings, the inputs the voices, the input coordinates (the
pixels) the time axis. Independent component analysis separates the voices
up to scale, sign and order, with no knowledge of the weights at which the
gradient was taken.

skrecon whitens in the batch's span (the gradient's top right singular
vectors, whose number is the batch size), runs scikit-learn's
:class:`~sklearn.decomposition.FastICA` there, and applies the unmixing to
every coordinate. With a bias the bias coordinate of each separated signal is
its scale: ``x_i = x~_i[:d] / x~_i[d]`` fixes scale and sign. Without a bias
neither is identified; the samples come back with unit norm and a
non-negative coordinate sum.

The estimate is approximate: it assumes that the samples, read as signals
over their coordinates, are independent and non-Gaussian, which natural
images of a few hundred pixels or more roughly are. With the server's
Gaussian weights :class:`skrecon.GradientReconstructor` recovers the batch
exactly; :meth:`~skrecon.GradientReconstructor.fit` without ``weights``
runs this function.
"""

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ._span import svd_span
from .exceptions import BlindFitWarning

__all__ = ["cocktail_party", "CocktailPartyResult", "BlindFitWarning"]




@dataclass(frozen=True)
class CocktailPartyResult:
    """What :func:`cocktail_party` returns.

    Attributes
    ----------
    samples : ndarray of shape (batch_size, n_inputs)
        The estimated batch (bias column removed), float64, in a canonical
        order (decreasing projection on a fixed pseudo-random direction).
    sign_identified, scale_identified : ndarray of bool, shape (batch_size,)
        Whether the gradient fixes each estimate's sign and norm: all
        ``True`` with a bias (every sample's bias coordinate is 1; ``False``
        for an estimate whose bias coordinate vanished), all ``False``
        without. They say what the gradient identifies, not that the
        estimate is right: an estimate that still mixes several samples
        takes the sign and norm of its mixture's bias coordinate.
    batch_size : int
        Number of samples separated.
    spectral_gap : float
        ``s_B / s_{B+1}`` of the gradient's singular values.
    n_iter : int
        FastICA iterations of the kept run (0 only for one sample with one
        input coordinate: there is nothing to separate).
    converged : bool
        Whether the kept FastICA run met its tolerance within ``max_iter``.
    contrast : float
        The kept run's log-cosh contrast
        ``sum_k (E log cosh(s_k) - E log cosh(nu))^2``, ``nu ~ N(0, 1)``,
        over the whitened sources: the objective FastICA maximises, by
        which the best of ``n_init`` runs is chosen (0 for one sample with
        one input coordinate).
    """

    samples: np.ndarray
    sign_identified: np.ndarray
    scale_identified: np.ndarray
    batch_size: int
    spectral_gap: float
    n_iter: int
    converged: bool
    contrast: float


# E[log cosh(nu)] for nu ~ N(0, 1): the Gaussian reference of FastICA's
# log-cosh contrast
_LOGCOSH_GAUSSIAN = 0.37456720749


def _best_separation(basis, d, B, *, n_init, max_iter, tol, random_state):
    """FastICA ``n_init`` times on the input coordinates of the span, each
    from its own seed; keeps the run of largest log-cosh contrast (the
    objective FastICA maximises). Returns ``(signals (n_cols, B), n_iter,
    converged, contrast)``; ``n_iter`` and ``converged`` are the kept run's."""
    rng = check_random_state(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=n_init)
    best = None
    for seed in seeds:
        ica = FastICA(n_components=B, whiten="unit-variance", fun="logcosh",
                      max_iter=max_iter, tol=tol, random_state=int(seed))
        with warnings.catch_warnings():
            # reported by the caller, with the numbers
            warnings.simplefilter("ignore", ConvergenceWarning)
            sources = ica.fit_transform(basis[:d])
        contrast = float(np.sum(
            (np.mean(np.log(np.cosh(sources)), axis=0) - _LOGCOSH_GAUSSIAN) ** 2))
        if best is None or contrast > best[0]:
            best = (contrast, ica)
    contrast, ica = best
    n_iter = int(ica.n_iter_)
    # the unmixing applies to the uncentred coordinates, bias included
    return basis @ ica.components_.T, n_iter, n_iter < max_iter, contrast


def cocktail_party(X, *, bias=False, batch_size="auto", n_init=1, max_iter=1000,
                   tol=1e-6, random_state=None):
    """Estimate the batch from a gradient alone (the Cocktail Party Attack).

    Independent component analysis of the gradient rows, with the input
    coordinates as observations: scikit-learn's
    :class:`~sklearn.decomposition.FastICA` (log-cosh contrast, whitening
    in the span of the gradient's top ``batch_size`` right singular
    vectors) separates the samples up to scale, sign and order; the bias
    gradient column, when present, fixes scale and sign. No weights are
    needed, and none are used.

    Parameters
    ----------
    X : array-like of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
        The first layer's gradient, one row per neuron, float; with
        ``bias=True`` the bias gradient is the last column.
    bias : bool, default=False
        Whether the last column of ``X`` is the bias gradient.
    batch_size : "auto" or int, default="auto"
        Number of samples; ``"auto"`` reads it off the largest gap of the
        singular values (:func:`skrecon.moments.estimate_batch_size`).
    n_init : int, default=1
        FastICA runs, each from its own seed drawn from ``random_state``;
        the run of largest contrast is kept.
    max_iter : int, default=1000
        FastICA iterations at most.
    tol : float, default=1e-6
        FastICA's tolerance on the update of the unmixing matrix.
    random_state : int, RandomState instance or None, default=None
        Seeds the runs' initial unmixing matrices.

    Returns
    -------
    result : CocktailPartyResult
        ``samples`` ``(batch_size, n_inputs)``, the identifiability flags,
        ``batch_size``, ``spectral_gap``, ``n_iter``, ``converged`` and
        ``contrast``.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, is zero, has no input column
        besides the bias, has as many independent rows as neurons with
        ``batch_size="auto"``, or has fewer input coordinates than
        ``batch_size + 1`` (ICA needs more observations than signals), or if
        ``n_init`` is not a positive integer.

    Warns
    -----
    ConvergenceWarning
        When FastICA does not converge within ``max_iter`` iterations.
    BatchSizeWarning
        When ``batch_size`` exceeds the gradient's numerical rank (fewer
        samples are separated).

    See Also
    --------
    skrecon.GradientReconstructor : The exact reconstruction, given the
        weights; ``fit`` without ``weights`` calls this function.

    Notes
    -----
    With ``G = Delta X~`` (``Delta`` the ``(n_neurons, B)`` back-propagated
    signals), the batch spans the top right singular space ``V`` of ``G``:
    ``x~_i = V c_i``. FastICA finds the unmixing ``c_k`` for which the
    signals ``t -> (V c_k)[t]`` over the input coordinates ``t`` are most
    non-Gaussian; the estimate is ``V c_k`` over every coordinate, bias
    included. Its accuracy depends on the data, not on the number of
    neurons, and it is rough. Measured on four 16 x 16 x 3 patches of
    scikit-learn's sample images (eight batches, 100 neurons, four BLAS
    kernels): the best-matched sample has cosine 0.85-1.00 to its estimate,
    the worst from -0.79 to 0.82; an estimate that still mixes several samples
    can take the wrong sign from its mixture's bias coordinate, and which
    local optimum FastICA reaches depends on round-off (the CPU's BLAS
    kernel). On eight 8 x 8 digits (64 observations for 8 signals) the
    cosines range from about 0.04 to 0.9 (four batches, four kernels).

    References
    ----------
    .. [1] S. Kariyappa, C. Guo, K. Maeng, W. Xiong, G. E. Suh, M. K.
       Qureshi, H.-H. S. Lee, "Cocktail Party Attack: Breaking
       Aggregation-Based Privacy in Federated Learning using Independent
       Component Analysis", ICML 2023, PMLR 202:15884-15899.
    .. [2] A. Hyvarinen, E. Oja, "Independent component analysis: algorithms
       and applications", Neural Networks 13(4-5), 2000.

    Examples
    --------
    >>> from skrecon.blind import cocktail_party
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_sample_image_patches
    >>> from skrecon.metrics import matched_cosine
    >>> batch = load_sample_image_patches(4, patch_size=16, random_state=1)
    >>> q = make_gradient_query(batch, n_neurons=100, random_state=0)
    >>> result = cocktail_party(q.grad, bias=True, random_state=0)
    >>> result.samples.shape, bool(result.sign_identified.all())
    ((4, 768), True)
    >>> cosines, permutation = matched_cosine(batch, result.samples)
    >>> bool(cosines.max() > 0.8)   # the best-separated sample; others are rougher
    True
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"X must be the 2-D gradient (n_neurons, n_inputs), got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf: the blind estimate needs a finite "
                         "gradient.")
    if not np.any(X):
        raise ValueError("The gradient X is zero everywhere: it carries no "
                         "information about the batch.")
    if not (batch_size == "auto" or (isinstance(batch_size, Integral)
                                     and not isinstance(batch_size, bool)
                                     and batch_size >= 1)):
        raise ValueError(f"batch_size must be 'auto' or a positive integer, got "
                         f"{batch_size!r}.")
    n_cols = X.shape[1]
    d = n_cols - 1 if bias else n_cols
    if d < 1:
        raise ValueError(
            f"With bias=True the gradient needs at least one input column before "
            f"the bias column, got shape {X.shape}.")
    if not (isinstance(n_init, Integral) and not isinstance(n_init, bool)
            and n_init >= 1):
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}.")
    basis, B, gap = svd_span(X, batch_size)
    if B == 1 and d == 1:  # one sample, one coordinate: nothing to separate
        signals, n_iter, converged, contrast = basis, 0, True, 0.0
    else:
        if d < B + 1:
            raise ValueError(
                f"The blind estimate separates B = {B} samples using their "
                f"{d} input coordinates as observations: it needs at least "
                f"B + 1 = {B + 1}. Pass the query's weights for the exact "
                "reconstruction, or a smaller batch_size.")
        signals, n_iter, converged, contrast = _best_separation(
            basis, d, B, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state)
        if not converged:
            warnings.warn(
                f"FastICA did not converge in {max_iter} iterations (B = {B} "
                f"samples over {d} input coordinates): the blind estimate is "
                "rougher than usual. Increase max_iter or pass the weights.",
                ConvergenceWarning)
    signals = signals.T
    if bias:
        scale = signals[:, -1]
        identified = np.abs(scale) > 1e-8 * np.linalg.norm(signals, axis=1)
        safe = np.where(identified, scale, 1.0)
        samples = signals[:, :-1] / safe[:, None]
    else:
        identified = np.zeros(B, dtype=bool)
        samples = signals / np.linalg.norm(signals, axis=1, keepdims=True)
        # convention: each sample's coordinates sum to >= 0
        samples = samples * np.where(samples.sum(axis=1) < 0, -1.0, 1.0)[:, None]
    direction = np.random.default_rng(0).standard_normal(samples.shape[1])
    order = np.argsort(-(samples @ direction), kind="stable")
    return CocktailPartyResult(
        samples=samples[order], sign_identified=identified[order].copy(),
        scale_identified=identified[order].copy(), batch_size=B,
        spectral_gap=float(gap), n_iter=n_iter, converged=bool(converged),
        contrast=float(contrast))
