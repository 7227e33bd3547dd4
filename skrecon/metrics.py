"""Per-sample metrics of a reconstructed batch.

A reconstruction recovers the samples of a batch in an arbitrary order (and,
for some activations, only up to the sign of each sample), so every metric
here first *matches* the reconstructed rows to the true rows with the
Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`) on the
cosine similarity, and then reports one value per *true* sample.

Conventions shared by every function:

- ``batch`` is the true batch, ``(n_true, n_features)``; ``reconstruction``
  is ``(n_reconstructed, n_features)``. ``n_reconstructed`` may differ from
  ``n_true``.
- The matching maximises the total cosine similarity (the total absolute
  cosine with ``sign_invariant=True``); ties (collinear true samples of
  different norms, ``x`` and ``2 x``) go to the pairs closer in distance.
  With ``sign_invariant=True`` each matched reconstructed row is also
  multiplied by the sign of its cosine (``+1`` when the cosine is 0) before
  the distance-based metrics are computed, which is the sign that minimises
  ``||x - s * xhat||``.
- A true row left unmatched (fewer rows reconstructed than true) is *not
  measured*: its entry of the permutation is ``-1`` and its metrics are NaN.
  Use :func:`numpy.nanmean` or count the ``-1`` entries to summarise.
- A reconstructed row of zero norm has cosine 0 with every true row. A true
  row of zero norm makes the cosine and the relative error undefined and
  raises ``ValueError``.
"""

import numbers

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.utils import Bunch

from ._array_api import to_host

__all__ = [
    "match_samples",
    "matched_cosine",
    "relative_error",
    "psnr",
    "ssim",
    "reconstruction_report",
]


# --------------------------------------------------------------------------
# validation and matching
# --------------------------------------------------------------------------


def _as_2d_finite(a, name):
    # metrics compare small (B x d) arrays on the host, whatever library
    # holds them (samples_ of a CuPy fit are CuPy arrays): moved explicitly
    a = to_host(a)
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a 2-D array of real numbers; "
            f"it could not be converted to float64 ({exc})."
        ) from exc
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), "
            f"got an array of shape {a.shape}."
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity.")
    return a


def _validate_pair(batch, reconstruction):
    batch = _as_2d_finite(batch, "batch")
    reconstruction = _as_2d_finite(reconstruction, "reconstruction")
    if batch.shape[1] != reconstruction.shape[1]:
        raise ValueError(
            "batch and reconstruction must have the same number of columns "
            f"(features); got batch.shape={batch.shape} and "
            f"reconstruction.shape={reconstruction.shape}."
        )
    if batch.shape[0] == 0:
        raise ValueError(
            f"batch must contain at least one sample, got shape {batch.shape}."
        )
    if batch.shape[1] == 0:
        raise ValueError(
            f"batch must contain at least one feature, got shape {batch.shape}."
        )
    norms = _row_norms(batch)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            "batch has rows of zero norm (rows "
            f"{zero.tolist()}); the cosine similarity and the relative error "
            "are undefined for them."
        )
    return batch, reconstruction


def _row_norms(a):
    """Euclidean norm of each row, scaled by the row's largest entry first
    (rows of 1e160 or 1e-300 neither overflow nor underflow); NaN rows stay
    NaN."""
    scale = np.max(np.abs(a), axis=1, initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        return scale * np.linalg.norm(a / safe[:, None], axis=1)


def _cosine_matrix(batch, reconstruction):
    """Cosine similarities, ``(n_true, n_reconstructed)``; 0 for a zero row."""
    nb = _row_norms(batch)
    nr = _row_norms(reconstruction)
    nr_safe = np.where(nr > 0, nr, 1.0)
    cos = (batch / nb[:, None]) @ (reconstruction / nr_safe[:, None]).T
    return np.clip(cos, -1.0, 1.0)


# weight of the relative distance that breaks ties of the cosine
_TIE_BREAK = 1e-12


def _distances(batch, reconstruction, cos):
    """``||x_i - xhat_j|| / ||x_i||`` from the cosines ``cos`` of the pairs
    (their absolute values: the nearer sign), ``(n_true, n_reconstructed)``,
    capped at 1e4; scale-free, so that norms of 1e160 do not overflow."""
    nb = _row_norms(batch)[:, None]
    nr = _row_norms(reconstruction)[None, :]
    with np.errstate(over="ignore"):
        ratio = np.minimum(nr / nb, 1e4)
    # ||x - xhat||^2 / ||x||^2 = (1 - r)^2 + 2 r (1 - cos),  r = ||xhat|| / ||x||
    return np.sqrt((1.0 - ratio) ** 2 + 2.0 * ratio * (1.0 - cos))


def _match(batch, reconstruction, sign_invariant):
    """Validated matching.

    Returns ``(batch, reconstruction, permutation, cosines, aligned)`` where
    ``cosines`` are the matched (absolute when sign-invariant) cosines and
    ``aligned`` is ``(n_true, n_features)``: the matched reconstructed rows,
    sign-corrected when sign-invariant, NaN for unmatched rows.
    """
    batch, reconstruction = _validate_pair(batch, reconstruction)
    n_true = batch.shape[0]
    permutation = np.full(n_true, -1, dtype=np.intp)
    cosines = np.full(n_true, np.nan)
    aligned = np.full(batch.shape, np.nan)
    if reconstruction.shape[0] == 0:
        return batch, reconstruction, permutation, cosines, aligned
    cos = _cosine_matrix(batch, reconstruction)
    gain = np.abs(cos) if sign_invariant else cos
    # collinear true samples of different norms (x and 2x) tie in the cosine:
    # the pair closer in distance wins, by a penalty far below any cosine
    # difference that is not round-off
    gain = gain - _TIE_BREAK * _distances(batch, reconstruction, gain)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    permutation[rows] = cols
    matched = cos[rows, cols]
    if sign_invariant:
        signs = np.where(matched < 0, -1.0, 1.0)
        cosines[rows] = np.abs(matched)
        aligned[rows] = signs[:, None] * reconstruction[cols]
    else:
        cosines[rows] = matched
        aligned[rows] = reconstruction[cols]
    return batch, reconstruction, permutation, cosines, aligned


def _check_data_range(data_range):
    if (
        isinstance(data_range, (bool, np.bool_))
        or not isinstance(data_range, numbers.Real)
        or not np.isfinite(data_range)
        or data_range <= 0
    ):
        raise ValueError(
            "data_range must be a positive finite real number (the difference "
            f"between the largest and the smallest possible value), got {data_range!r}."
        )
    return float(data_range)


def _check_image_shape(image_shape, n_features):
    try:
        shape = tuple(int(s) for s in image_shape)
        ok = all(s == v for s, v in zip(shape, image_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok or len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(
            "image_shape must be a tuple of 2 or 3 positive integers, (height, "
            f"width) or (height, width, channels), got {image_shape!r}."
        )
    if int(np.prod(shape)) != n_features:
        raise ValueError(
            f"image_shape {shape} has {int(np.prod(shape))} pixels but the "
            f"samples have {n_features} features."
        )
    smallest = min(shape[:2])
    if smallest < 3:
        raise ValueError(
            f"ssim needs images of at least 3 x 3 pixels, got image_shape {shape}."
        )
    return shape


def _ssim_win_size(shape):
    win = min(7, min(shape[:2]))
    return win if win % 2 == 1 else win - 1


def _psnr_values(batch, aligned, permutation, data_range):
    from skimage.metrics import peak_signal_noise_ratio

    out = np.full(batch.shape[0], np.nan)
    for i in range(batch.shape[0]):
        if permutation[i] < 0:
            continue
        with np.errstate(divide="ignore"):
            out[i] = peak_signal_noise_ratio(
                batch[i], aligned[i], data_range=data_range
            )
    return out


def _ssim_values(batch, aligned, permutation, data_range, shape):
    from skimage.metrics import structural_similarity

    win_size = _ssim_win_size(shape)
    channel_axis = -1 if len(shape) == 3 else None
    out = np.full(batch.shape[0], np.nan)
    for i in range(batch.shape[0]):
        if permutation[i] < 0:
            continue
        out[i] = structural_similarity(
            batch[i].reshape(shape),
            aligned[i].reshape(shape),
            data_range=data_range,
            win_size=win_size,
            channel_axis=channel_axis,
        )
    return out


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------


def match_samples(batch, reconstruction, *, sign_invariant=False):
    """Match reconstructed samples to true samples (Hungarian algorithm).

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one sample per row. No row may have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    sign_invariant : bool, default=False
        If True, maximise the total absolute cosine similarity (a sample
        recovered as ``-x`` counts as a perfect match); otherwise the total
        cosine similarity.

    Returns
    -------
    permutation : ndarray of shape (n_true,), dtype int
        ``permutation[i]`` is the index of the reconstructed row matched to
        true row ``i``, or ``-1`` when true row ``i`` is unmatched (fewer rows
        were reconstructed than there are true rows). With more reconstructed
        rows than true rows, the extra rows are left out.

    Raises
    ------
    ValueError
        If an input is not 2-D, contains NaN or infinity, the numbers of
        columns differ, or a true row has zero norm.

    See Also
    --------
    matched_cosine : The cosine similarity of each matched pair.

    Notes
    -----
    The matching is :func:`scipy.optimize.linear_sum_assignment` with
    ``maximize=True`` on the ``(n_true, n_reconstructed)`` matrix of cosine
    similarities. Without ``sign_invariant``, a reconstructed row that is the
    negative of a true row has cosine -1 with it and is usually matched
    elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import match_samples
    >>> batch = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> match_samples(batch, batch[[2, 0, 1]])
    array([1, 2, 0])
    >>> match_samples(batch, batch[[2, 0]])
    array([ 1, -1,  0])
    """
    return _match(batch, reconstruction, sign_invariant)[2]


def matched_cosine(batch, reconstruction, *, sign_invariant=False):
    """Cosine similarity between each true sample and its matched reconstruction.

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one sample per row. No row may have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    sign_invariant : bool, default=False
        If True, match on and report the absolute cosine similarity.

    Returns
    -------
    cosines : ndarray of shape (n_true,)
        Cosine similarity in ``[-1, 1]`` (``[0, 1]`` with
        ``sign_invariant=True``) of each true row with its matched row; NaN
        (not measured) for an unmatched true row. A reconstructed row of zero
        norm has cosine 0.
    permutation : ndarray of shape (n_true,), dtype int
        As returned by :func:`match_samples`.

    Raises
    ------
    ValueError
        If an input is not 2-D, contains NaN or infinity, the numbers of
        columns differ, or a true row has zero norm.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import matched_cosine
    >>> batch = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> cosines, permutation = matched_cosine(batch, -batch[::-1], sign_invariant=True)
    >>> cosines, permutation
    (array([1., 1.]), array([1, 0]))
    """
    _, _, permutation, cosines, _ = _match(batch, reconstruction, sign_invariant)
    return cosines, permutation


def relative_error(batch, reconstruction, *, sign_invariant=False):
    """Relative error of each matched reconstruction.

    ``||x_i - xhat|| / ||x_i||`` for each true row ``x_i`` and the
    reconstructed row ``xhat`` matched to it by cosine similarity (see
    :func:`match_samples`; the matching is by cosine, not by this error, so
    it ignores the norm of the reconstruction).

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one sample per row. No row may have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    sign_invariant : bool, default=False
        If True, match on the absolute cosine and report
        ``min(||x_i - xhat||, ||x_i + xhat||) / ||x_i||``.

    Returns
    -------
    errors : ndarray of shape (n_true,)
        Relative Euclidean error, ``>= 0``; NaN (not measured) for an
        unmatched true row.
    permutation : ndarray of shape (n_true,), dtype int
        As returned by :func:`match_samples`.

    Raises
    ------
    ValueError
        If an input is not 2-D, contains NaN or infinity, the numbers of
        columns differ, or a true row has zero norm.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import relative_error
    >>> batch = np.array([[3.0, 4.0]])
    >>> relative_error(batch, [[3.0, 3.0]])
    (array([0.2]), array([0]))
    >>> relative_error(batch, -batch, sign_invariant=True)
    (array([0.]), array([0]))
    """
    batch, _, permutation, _, aligned = _match(batch, reconstruction, sign_invariant)
    errors = _row_norms(batch - aligned) / _row_norms(batch)
    return errors, permutation


def psnr(batch, reconstruction, *, data_range, sign_invariant=False):
    """Peak signal-to-noise ratio of each matched reconstruction, in dB.

    Computed per sample by :func:`skimage.metrics.peak_signal_noise_ratio`:
    ``10 * log10(data_range**2 / MSE)``.

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one sample per row. No row may have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    data_range : float
        The range of possible values of a sample (maximum minus minimum),
        ``> 0``, in the units of ``batch``; required, never guessed. For
        pixels in ``[0, 1]`` it is 1. For images normalised by a per-channel
        mean and standard deviation before training (``(x - mean) / std``),
        the range is ``1 / std`` for ``[0, 1]`` pixels - or un-normalise
        both arrays first and pass the original range. A wrong range shifts
        every PSNR by ``20 * log10(ratio)`` dB.
    sign_invariant : bool, default=False
        If True, match on the absolute cosine and measure the sign-corrected
        reconstruction (the sign of its cosine with the true row).

    Returns
    -------
    psnr : ndarray of shape (n_true,)
        PSNR in dB. ``inf`` for an exact reconstruction (MSE 0), by
        definition; NaN (not measured) for an unmatched true row.
    permutation : ndarray of shape (n_true,), dtype int
        As returned by :func:`match_samples`.

    Raises
    ------
    ValueError
        If ``data_range`` is not a positive finite number, an input is not
        2-D or contains NaN or infinity, the numbers of columns differ, or a
        true row has zero norm.

    See Also
    --------
    ssim : Structural similarity of images.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import psnr
    >>> batch = np.array([[0.2, 0.4, 0.6, 0.8]])
    >>> psnr(batch, batch + 0.1, data_range=1.0)
    (array([20.]), array([0]))
    >>> psnr(batch, batch, data_range=1.0)
    (array([inf]), array([0]))
    """
    data_range = _check_data_range(data_range)
    batch, _, permutation, _, aligned = _match(batch, reconstruction, sign_invariant)
    return _psnr_values(batch, aligned, permutation, data_range), permutation


def ssim(batch, reconstruction, *, data_range, image_shape, sign_invariant=False):
    """Structural similarity of each matched reconstruction.

    Computed per sample by :func:`skimage.metrics.structural_similarity` on
    the rows reshaped to ``image_shape``, with a uniform window of side
    ``win_size = min(7, smallest image side)`` rounded down to an odd
    number, so small images (8 x 8 gives 7, 5 x 5 gives 5, 4 x 4 gives 3)
    work.

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one flattened image per row (C order). No row may
        have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    data_range : float
        The range of possible pixel values (maximum minus minimum), ``> 0``;
        required. For images normalised by a mean and standard deviation
        before training pass the normalised range (``1 / std`` for ``[0, 1]``
        pixels), or un-normalise first; see :func:`psnr`.
    image_shape : tuple of int
        ``(height, width)`` or ``(height, width, channels)``, channels last,
        whose product is ``n_features``; both sides at least 3.
    sign_invariant : bool, default=False
        If True, match on the absolute cosine and measure the sign-corrected
        reconstruction.

    Returns
    -------
    ssim : ndarray of shape (n_true,)
        Mean SSIM in ``[-1, 1]``, 1 for an exact reconstruction; NaN (not
        measured) for an unmatched true row.
    permutation : ndarray of shape (n_true,), dtype int
        As returned by :func:`match_samples`.

    Raises
    ------
    ValueError
        If ``data_range`` is not a positive finite number, ``image_shape``
        does not fit the features or is smaller than 3 x 3, an input is not
        2-D or contains NaN or infinity, the numbers of columns differ, or a
        true row has zero norm.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import ssim
    >>> batch = np.random.default_rng(0).uniform(size=(2, 64))
    >>> ssim(batch, batch[::-1], data_range=1.0, image_shape=(8, 8))
    (array([1., 1.]), array([1, 0]))
    """
    data_range = _check_data_range(data_range)
    batch, _, permutation, _, aligned = _match(batch, reconstruction, sign_invariant)
    shape = _check_image_shape(image_shape, batch.shape[1])
    return _ssim_values(batch, aligned, permutation, data_range, shape), permutation


def reconstruction_report(
    batch, reconstruction, *, data_range=None, image_shape=None, sign_invariant=False
):
    """All per-sample metrics of a reconstruction, from one matching.

    Parameters
    ----------
    batch : array-like of shape (n_true, n_features)
        The true batch, one sample per row. No row may have zero norm.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples, in any order.
    data_range : float or None, default=None
        Range of possible values (see :func:`psnr`). If given, PSNR is
        reported; if ``image_shape`` is given too, SSIM as well.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` for SSIM (see
        :func:`ssim`); used only together with ``data_range``.
    sign_invariant : bool, default=False
        If True, match on the absolute cosine and measure sign-corrected
        reconstructions.

    Returns
    -------
    report : :class:`~sklearn.utils.Bunch`
        With keys ``permutation``, ``cosine``, ``relative_error``, and
        ``psnr`` (if ``data_range`` is given) and ``ssim`` (if
        ``image_shape`` is given too), each an array of shape ``(n_true,)``
        in the order of the true rows, NaN (not measured) for unmatched
        rows.

    Raises
    ------
    ValueError
        As for :func:`psnr` and :func:`ssim`; also if ``image_shape`` is
        given without ``data_range``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.metrics import reconstruction_report
    >>> batch = np.array([[0.2, 0.4, 0.6, 0.8], [0.9, 0.1, 0.5, 0.3]])
    >>> report = reconstruction_report(batch, batch[::-1] + 0.1, data_range=1.0)
    >>> sorted(report)
    ['cosine', 'permutation', 'psnr', 'relative_error']
    >>> report.permutation, report.psnr
    (array([1, 0]), array([20., 20.]))
    """
    if image_shape is not None and data_range is None:
        raise ValueError(
            "image_shape was given without data_range; SSIM needs an explicit "
            "data_range."
        )
    if data_range is not None:
        data_range = _check_data_range(data_range)
    batch, _, permutation, cosines, aligned = _match(
        batch, reconstruction, sign_invariant
    )
    errors = _row_norms(batch - aligned) / _row_norms(batch)
    report = Bunch(permutation=permutation, cosine=cosines, relative_error=errors)
    if data_range is not None:
        report.psnr = _psnr_values(batch, aligned, permutation, data_range)
        if image_shape is not None:
            shape = _check_image_shape(image_shape, batch.shape[1])
            report.ssim = _ssim_values(
                batch, aligned, permutation, data_range, shape
            )
    return report
