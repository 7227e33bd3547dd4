"""Known round-off of a gradient: a parameter update's, carried into the fit.

A client that takes one SGD step returns ``θ' = fl(θ - lr g)``, rounded to
its dtype; the server reads the gradient as ``(θ - θ') / lr``, which is
exact but for that rounding: each entry carries an error of up to half a
unit in the last place of ``θ'`` over ``lr`` -- ``eps |θ| / lr``, the
parameters' magnitude, not the gradient's. That error is known to the
server entry by entry (:func:`rounding_std`), and it is far above the
round-off that a float32 gradient computed directly carries
(``eps |g|``): a float32 update's spectrum has a flat bulk of singular
values at 1e-6 to 3e-5 of the largest one (64 -> 1024 -> 10 tanh, lr 0.1;
Gaussian weights and a trained net), where the batch-size reading looks for
samples below ``10 eps s_1`` and above the round-off bulk. Given the
entries' error (``noise_std``, a fit parameter), the spectrum is judged
against its known floor (:func:`noise_floor`): the values above it are the
samples the update shows (:func:`batch_size_above_floor`), and a fit whose
in-span noise is that round-off is held to the dtype's per-row precision
(:func:`is_known_roundoff`).
"""

import warnings

import numpy as np

from .exceptions import BatchSizeWarning

# a singular value counts as a sample when it stands this many times above
# the noise floor sqrt(max_j sum_i s_ij^2) + sqrt(max_i sum_j s_ij^2): the
# top singular value of a float32 update's round-off was measured at 0.65
# to 1.23 times that floor (64 -> 1024 -> 10 tanh, B = 16; Gaussian,
# default-init and trained weights, lr 0.01 to 1), and a sample within a
# few times the floor comes back with errors of order one anyway
_ABOVE_FLOOR = 2.0
# the measured in-span noise is the known round-off when it is at most this
# many times the round-off's own in-span level (a DP-noised update's is
# orders of magnitude above it)
_ROUNDOFF_SLACK = 3.0


def rounding_std(values, dtype=None):
    """Standard deviation of the error of rounding each entry to ``dtype``:
    ``ulp(v) / sqrt(12)`` (the error is uniform on half a unit in the last
    place either side).

    Parameters
    ----------
    values : ndarray
        The rounded values (e.g. the parameters a client returned).
    dtype : numpy floating dtype or None, default=None
        The dtype they were rounded to; ``None``: their own.

    Returns
    -------
    std : ndarray of float64, the shape of ``values``
    """
    values = np.asarray(values)
    dtype = np.dtype(values.dtype if dtype is None else dtype)
    ulp = np.spacing(np.abs(values.astype(dtype))).astype(np.float64)
    return ulp / np.sqrt(12.0)


def check_noise_std(noise_std, shape):
    """``noise_std`` as a float64 array of ``shape`` (a scalar broadcast),
    or ``None``; a clear error for a negative, non-finite or misshapen
    one."""
    if noise_std is None:
        return None
    try:
        std = np.asarray(noise_std, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"noise_std must be a real number or an array of real numbers (the "
            f"known standard deviation of each gradient entry's error), got "
            f"{type(noise_std).__name__}: {exc}.") from exc
    if std.ndim != 0 and std.shape != tuple(shape):
        raise ValueError(
            f"noise_std must be a scalar or an array of the gradient's shape "
            f"{tuple(shape)}, got shape {std.shape}.")
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError(
            "noise_std must hold finite, non-negative standard deviations (the "
            "known error of each gradient entry, e.g. the round-off that "
            "skrecon.flower.update_query reports), got values "
            f"in [{np.nanmin(std):.3g}, {np.nanmax(std):.3g}].")
    return np.broadcast_to(std, tuple(shape))


def noise_floor(noise_std):
    """The spectral norm that a noise matrix of independent, zero-mean
    entries of standard deviation ``noise_std`` reaches:
    ``sqrt(max_j sum_i s_ij^2) + sqrt(max_i sum_j s_ij^2)`` (the largest
    column norm plus the largest row norm; Bandeira and van Handel's bound,
    without its logarithmic term). A heavy column (a float32 update's bias
    column, whose parameters are larger) lifts one singular value above the
    bulk: the floor follows it.

    Parameters
    ----------
    noise_std : ndarray of shape (m, n)

    Returns
    -------
    floor : float

    References
    ----------
    .. [1] A. S. Bandeira and R. van Handel, "Sharp nonasymptotic bounds on
       the norm of random matrices with independent entries", Ann. Probab.
       44(4), 2016.
    """
    squares = np.square(np.asarray(noise_std, dtype=np.float64))
    return float(np.sqrt(np.max(np.sum(squares, axis=0)))
                 + np.sqrt(np.max(np.sum(squares, axis=1))))


def count_above_floor(singular_values, floor):
    """The number of singular values (at least 1) that noise of the known
    floor cannot reach: those above ``_ABOVE_FLOOR * floor``."""
    s = np.asarray(singular_values, dtype=np.float64)
    return max(1, int(np.sum(s > _ABOVE_FLOOR * floor)))


def _implausible_floor(s, floor, count, batch_size, how):
    """Why the spectrum contradicts a known noise floor (``None`` if it does
    not): a floor far above the singular values it leaves out (noise of
    that level would fill the spectrum up to it: a thousandfold noise_std
    read 1 sample for 4 across a 1e13 gap), or a floor that cuts through a
    flat bulk above it."""
    if count < len(s) and np.median(s[count:]) < 1e-2 * floor:
        return (f"The floor of noise_std ({floor:.3g}) lies far above the "
                f"singular values below it (median {np.median(s[count:]):.3g}): noise "
                "of that level would fill the spectrum up to its floor, so "
                "noise_std overstates the gradient's error.")
    # (only against a round-off reading: other noise, DP-SGD's, lifts more
    # values above the round-off floor than the spectrum's noise threshold)
    if (how == "round-off" and count > batch_size
            and (count == len(s) or s[count - 1] < 1.5 * s[count])):
        return (f"The floor of noise_std ({floor:.3g}) cuts through a flat bulk "
                f"of singular values ({count} above it, s_{count} / s_{count + 1} "
                f"= {s[count - 1] / s[count] if count < len(s) else np.inf:.3g}): "
                "noise_std understates the gradient's error.")
    return None


def batch_size_above_floor(singular_values, batch_size, how, floor,
                           precision=np.float64):
    """The batch size the spectrum shows above a known noise floor.

    Every singular value above ``_ABOVE_FLOOR * floor`` is a sample (noise
    of that level cannot reach it), and none below it can be told from the
    noise. That count replaces the reading of the spectrum (which takes a
    flat bulk of update round-off above ``10 eps s_1`` for noise of unknown
    level, or one heavy column's value above the bulk for a sample), unless
    the reading is smaller and was not made by the round-off (``how !=
    "round-off"``: a noisy gradient read by its noise threshold, whose
    other noise -- DP-SGD's -- lifts more values above the round-off
    floor).

    A floor below the gradient's own round-off (``10 eps s_1``) tells no
    more than the spectrum, whose reading stands; one the spectrum
    contradicts (far above the values it leaves out, or cutting a flat
    bulk) is set aside with a :class:`~skrecon.exceptions.BatchSizeWarning`.

    Returns
    -------
    batch_size : int
    gap : float
        ``s_B / s_{B+1}`` (inf when there is no ``s_{B+1}`` or it is 0).
    how : str
        ``"round-off"`` when the floor decided, else ``how``.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    count = count_above_floor(s, floor)
    if _ABOVE_FLOOR * floor < 10 * np.finfo(precision).eps * s[0]:
        # a floor below the gradient's own round-off tells nothing more than
        # the spectrum (a float64 update's rounding at lr 0.1: 5e-16 against
        # 5e-15; zero noise_std on an exact query read 46 samples for 4)
        doubt = None
        count = batch_size
    else:
        doubt = _implausible_floor(s, floor, count, batch_size, how)
    if doubt is not None:
        warnings.warn(
            f"{doubt} The batch size is read off the spectrum alone "
            f"({batch_size}); pass noise_std only for a parameter update's "
            "round-off (skrecon.flower.update_query's GradientQuery.noise_std), "
            "or batch_size if you know it.", BatchSizeWarning, stacklevel=2)
        count = batch_size
    elif how == "round-off" or count <= batch_size:
        batch_size, how = count, "round-off"
    if batch_size < len(s) and s[batch_size] > 0:
        gap = float(s[batch_size - 1] / s[batch_size])
    else:
        gap = np.inf
    return batch_size, gap, how


def is_known_roundoff(noise_std, singular_values, batch_size, noise_level):
    """Whether a fit's in-span noise (``noise_level``, relative) is the
    known round-off ``noise_std``: within ``_ROUNDOFF_SLACK`` of the
    round-off's own in-span level ``sqrt(sum s_ij^2 B / n) / ||s_:B||``.
    Such a gradient is exact to its round-off, and its rows are held to the
    dtype's per-row precision rather than to the noise level."""
    s = np.asarray(singular_values, dtype=np.float64)
    if noise_std is None or batch_size < 1 or not s[0] > 0:
        return False
    n = noise_std.shape[1]
    known = np.sqrt(np.sum(np.square(noise_std)) * batch_size / n
                    / np.sum(np.square(s[:batch_size])))
    return bool(noise_level <= _ROUNDOFF_SLACK * known)
