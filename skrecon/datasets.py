"""Small private batches for examples, tests and benchmarks.

The data ship with scikit-learn (no download): the 8 x 8 handwritten digits of
:func:`sklearn.datasets.load_digits` and patches of the two colour photographs
of :func:`sklearn.datasets.load_sample_images`. Each function returns a batch
``(batch_size, n_inputs)`` of float64 pixels in ``[0, 1]``, one sample per row,
ready for :func:`skrecon.clients.make_gradient_query`.
"""

import numbers
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits, load_sample_images
from sklearn.utils import check_random_state

__all__ = ["load_digits_batch", "load_sample_image_patches"]

_N_CLASSES = 10


def _check_rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return check_random_state(random_state)


def _check_int(value, name, low, high):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}.")
    return value


@lru_cache(maxsize=1)
def _digits():
    data = load_digits()
    images = np.asarray(data.data, dtype=np.float64) / 16.0
    targets = np.asarray(data.target, dtype=np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


@lru_cache(maxsize=1)
def _sample_images():
    images = tuple(np.asarray(im) for im in load_sample_images().images)
    for im in images:
        im.setflags(write=False)
    return images


def _check_labels(labels):
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(
            f"labels must be a 1-D sequence of digits 0..9, got an array of shape "
            f"{arr.shape}."
        )
    if arr.size == 0:
        raise ValueError("labels must contain at least one label.")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"labels must be integers 0..9, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not (
        np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        raise ValueError(f"labels must be integers 0..9, got {labels!r}.")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= _N_CLASSES)]
    if bad.size:
        raise ValueError(
            f"labels must be digits in 0..9, got {int(bad[0])}."
        )
    return arr


def load_digits_batch(batch_size=None, *, labels=None, random_state=0):
    """Draw a batch of distinct handwritten digits.

    Parameters
    ----------
    batch_size : int, default=None
        Number of images ``B``, ``1 <= B <= 1797``. ``None`` means 8, or
        ``len(labels)`` when ``labels`` is given; an explicit value that
        conflicts with ``len(labels)`` raises.
    labels : sequence of int, default=None
        The digit (0..9) wanted at each position, repeats allowed, e.g.
        ``[1, 1, 5, 7, 0, 3, 3, 9]``. Each position gets a different image of
        that digit. ``None``: a random choice of distinct images.
    random_state : int, RandomState instance, Generator or None, default=0
        Seed of the choice of images.

    Returns
    -------
    batch : ndarray of shape (batch_size, 64), dtype float64
        Pixels scaled to ``[0, 1]`` (the raw 0..16 intensities divided by 16),
        one flattened 8 x 8 image per row.
    labels : ndarray of shape (batch_size,), dtype int64
        The digit of each row.

    Raises
    ------
    ValueError
        If ``batch_size`` is not an integer in ``[1, 1797]``, a label is not a
        digit 0..9, ``batch_size`` conflicts with ``len(labels)``, or a digit
        is asked for more often than there are images of it (174 to 183).

    See Also
    --------
    sklearn.datasets.load_digits : The underlying data set.
    load_sample_image_patches : Larger, colour samples.

    Examples
    --------
    >>> from skrecon.datasets import load_digits_batch
    >>> batch, labels = load_digits_batch(8)
    >>> batch.shape, batch.dtype.name, float(batch.min()), float(batch.max())
    ((8, 64), 'float64', 0.0, 1.0)
    >>> batch, labels = load_digits_batch(labels=[1, 1, 5, 7])
    >>> labels
    array([1, 1, 5, 7])
    """
    images, targets = _digits()
    n_images = images.shape[0]
    rng = _check_rng(random_state)
    if labels is None:
        batch_size = 8 if batch_size is None else batch_size
        batch_size = _check_int(batch_size, "batch_size", 1, n_images)
        index = rng.choice(n_images, size=batch_size, replace=False)
    else:
        wanted = _check_labels(labels)
        if batch_size is not None:
            batch_size = _check_int(batch_size, "batch_size", 1, n_images)
            if batch_size != wanted.size:
                raise ValueError(
                    f"batch_size={batch_size} conflicts with len(labels)="
                    f"{wanted.size}; pass batch_size=None (the batch size is then "
                    "len(labels))."
                )
        index = np.empty(wanted.size, dtype=np.int64)
        for digit in np.unique(wanted):
            positions = np.flatnonzero(wanted == digit)
            pool = np.flatnonzero(targets == digit)
            if positions.size > pool.size:
                raise ValueError(
                    f"labels asks for {positions.size} distinct images of digit "
                    f"{int(digit)}, but the data set has only {pool.size}."
                )
            index[positions] = rng.choice(pool, size=positions.size, replace=False)
    return images[index].copy(), targets[index].copy()


def load_sample_image_patches(batch_size, *, patch_size=32, random_state=0):
    """Draw distinct square patches of scikit-learn's two sample photographs.

    Parameters
    ----------
    batch_size : int
        Number of patches ``B >= 1``.
    patch_size : int, default=32
        Side of each square patch, in pixels, ``1 <= patch_size <= 427``.
    random_state : int, RandomState instance, Generator or None, default=0
        Seed of the choice of patches.

    Returns
    -------
    batch : ndarray of shape (batch_size, patch_size * patch_size * 3), dtype float64
        RGB intensities scaled to ``[0, 1]`` (divided by 255), each patch
        flattened in (row, column, channel) order.

    Raises
    ------
    ValueError
        If ``batch_size`` or ``patch_size`` is not a positive integer in range.

    See Also
    --------
    sklearn.datasets.load_sample_images : The underlying photographs.
    load_digits_batch : Small grey-level samples with labels.

    Notes
    -----
    A patch is an image (``china.jpg`` or ``flower.jpg``, both 427 x 640) and
    a top-left corner, drawn uniformly without replacement: the patches are at
    distinct positions but may overlap.

    Examples
    --------
    >>> from skrecon.datasets import load_sample_image_patches
    >>> batch = load_sample_image_patches(4, patch_size=16)
    >>> batch.shape, batch.dtype.name
    ((4, 768), 'float64')
    """
    images = _sample_images()
    max_side = min(min(im.shape[:2]) for im in images)
    patch_size = _check_int(patch_size, "patch_size", 1, max_side)
    counts = np.array(
        [(im.shape[0] - patch_size + 1) * (im.shape[1] - patch_size + 1)
         for im in images],
        dtype=np.int64,
    )
    total = int(counts.sum())
    batch_size = _check_int(batch_size, "batch_size", 1, total)
    rng = _check_rng(random_state)
    flat = np.asarray(rng.choice(total, size=batch_size, replace=False), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    batch = np.empty((batch_size, patch_size * patch_size * 3), dtype=np.float64)
    for k, f in enumerate(flat):
        which = int(np.searchsorted(offsets, f, side="right") - 1)
        image = images[which]
        n_cols = image.shape[1] - patch_size + 1
        row, col = divmod(int(f - offsets[which]), n_cols)
        patch = image[row:row + patch_size, col:col + patch_size, :]
        batch[k] = patch.reshape(-1) / 255.0
    return batch
