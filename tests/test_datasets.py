"""Tests of skrecon.datasets."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skrecon.datasets import load_digits_batch, load_sample_image_patches


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data / 16.0, data.target


def _indices_in(images, batch):
    """Row index of each batch row in the full data set (first exact match)."""
    out = []
    for row in batch:
        hits = np.flatnonzero(np.all(images == row, axis=1))
        assert hits.size >= 1
        out.append(hits[0])
    return np.array(out)


@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_digits_shapes_range_and_dtype(batch_size, digits):
    batch, labels = load_digits_batch(batch_size, random_state=0)
    assert batch.shape == (batch_size, 64) and batch.dtype == np.float64
    assert labels.shape == (batch_size,) and np.issubdtype(labels.dtype, np.integer)
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    images, targets = digits
    index = _indices_in(images, batch)
    np.testing.assert_array_equal(targets[index], labels)
    assert np.unique(batch, axis=0).shape[0] == batch_size   # distinct images


def test_digits_default_batch_size_is_8():
    batch, labels = load_digits_batch()
    assert batch.shape == (8, 64) and labels.shape == (8,)


def test_digits_full_data_set():
    batch, labels = load_digits_batch(1797, random_state=1)
    assert np.unique(batch, axis=0).shape[0] == np.unique(load_digits().data,
                                                          axis=0).shape[0]
    np.testing.assert_array_equal(np.bincount(labels),
                                  np.bincount(load_digits().target))


def test_digits_labels_multiset_honoured(digits):
    wanted = [1, 1, 5, 7, 0, 3, 3, 9]
    batch, labels = load_digits_batch(labels=wanted, random_state=3)
    np.testing.assert_array_equal(labels, wanted)
    images, targets = digits
    index = _indices_in(images, batch)
    np.testing.assert_array_equal(targets[index], wanted)
    assert np.unique(batch, axis=0).shape[0] == len(wanted)
    batch2, _ = load_digits_batch(8, labels=wanted, random_state=3)
    np.testing.assert_array_equal(batch, batch2)


def test_digits_many_repeats_are_distinct():
    batch, labels = load_digits_batch(labels=[4] * 150, random_state=0)
    np.testing.assert_array_equal(labels, 4)
    assert np.unique(batch, axis=0).shape[0] == 150


def test_digits_labels_accept_numpy_and_integral_floats():
    b1, l1 = load_digits_batch(labels=np.array([2, 8]), random_state=0)
    b2, l2 = load_digits_batch(labels=[2.0, 8.0], random_state=0)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(l1, l2)


def test_digits_seeded():
    b1, l1 = load_digits_batch(16, random_state=7)
    b2, l2 = load_digits_batch(16, random_state=7)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(l1, l2)
    b3, _ = load_digits_batch(16, random_state=8)
    assert not np.array_equal(b1, b3)
    b4, _ = load_digits_batch(16, random_state=np.random.RandomState(7))
    np.testing.assert_array_equal(b1, b4)
    b5, _ = load_digits_batch(16, random_state=np.random.default_rng(7))
    assert b5.shape == (16, 64)


def test_digits_returns_fresh_arrays():
    b1, l1 = load_digits_batch(4, random_state=0)
    b1[:] = -1.0
    l1[:] = -1
    b2, l2 = load_digits_batch(4, random_state=0)
    assert b2.min() >= 0.0 and l2.min() >= 0


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, r"batch_size must be in \[1, 1797\], got 0"),
    ({"batch_size": 1798}, r"batch_size must be in \[1, 1797\], got 1798"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"labels": [1, 10]}, "labels must be digits in 0..9, got 10"),
    ({"labels": [-1]}, "labels must be digits in 0..9, got -1"),
    ({"labels": [1.5]}, "labels must be integers 0..9"),
    ({"labels": ["a"]}, "labels must be integers 0..9"),
    ({"labels": []}, "labels must contain at least one label"),
    ({"labels": [[1, 2]]}, "labels must be a 1-D sequence"),
    ({"batch_size": 3, "labels": [1, 2]}, "batch_size=3 conflicts with len"),
    ({"labels": [1] * 200}, "200 distinct images of digit 1, but the data set has "
                            "only 182"),
])
def test_digits_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits_batch(**kwargs)


@pytest.mark.parametrize("batch_size,patch_size", [(1, 32), (5, 8), (3, 1)])
def test_patches_shapes_range_and_dtype(batch_size, patch_size):
    batch = load_sample_image_patches(batch_size, patch_size=patch_size,
                                      random_state=0)
    assert batch.shape == (batch_size, patch_size * patch_size * 3)
    assert batch.dtype == np.float64
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    np.testing.assert_allclose(batch * 255, np.round(batch * 255), atol=1e-9)


def test_patches_come_from_the_photographs():
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    (patch,) = load_sample_image_patches(1, patch_size=4, random_state=5)
    patch = np.round(patch.reshape(4, 4, 3) * 255).astype(np.uint8)
    found = False
    for im in images:
        windows = np.lib.stride_tricks.sliding_window_view(im, (4, 4, 3))[:, :, 0]
        if np.any(np.all(windows == patch, axis=(2, 3, 4))):
            found = True
    assert found


def test_patches_seeded_and_distinct():
    b1 = load_sample_image_patches(20, patch_size=16, random_state=2)
    b2 = load_sample_image_patches(20, patch_size=16, random_state=2)
    np.testing.assert_array_equal(b1, b2)
    b3 = load_sample_image_patches(20, patch_size=16, random_state=3)
    assert not np.array_equal(b1, b3)
    assert np.unique(b1, axis=0).shape[0] == 20


@pytest.mark.parametrize("args,kwargs,match", [
    ((0,), {}, r"batch_size must be in \[1, "),
    ((1.5,), {}, "batch_size must be an integer"),
    ((2,), {"patch_size": 0}, r"patch_size must be in \[1, 427\], got 0"),
    ((2,), {"patch_size": 428}, r"patch_size must be in \[1, 427\], got 428"),
    ((2,), {"patch_size": 8.0}, "patch_size must be an integer"),
    ((429,), {"patch_size": 427}, r"batch_size must be in \[1, 428\], got 429"),
])
def test_patches_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_sample_image_patches(*args, **kwargs)
