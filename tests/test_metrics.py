"""Tests for skrecon.metrics (per-sample metrics with Hungarian matching)."""

import re

import numpy as np
import pytest
from sklearn.utils import Bunch

from skrecon.metrics import (
    match_samples,
    matched_cosine,
    psnr,
    reconstruction_report,
    relative_error,
    ssim,
)


@pytest.fixture
def batch():
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(8, 64))


# ---------------------------------------------------------------- matching


def test_permuted_copy_is_matched_exactly(batch):
    perm = np.random.default_rng(1).permutation(8)
    rec = batch[perm]
    permutation = match_samples(batch, rec)
    assert permutation.dtype.kind == "i"
    # rec[permutation[i]] is batch[i]: un-permuting gives the identity
    np.testing.assert_array_equal(perm[permutation], np.arange(8))
    np.testing.assert_array_equal(rec[permutation], batch)

    cosines, p = matched_cosine(batch, rec)
    np.testing.assert_array_equal(p, permutation)
    np.testing.assert_allclose(cosines, 1.0, rtol=0, atol=1e-12)

    errors, p = relative_error(batch, rec)
    np.testing.assert_array_equal(p, permutation)
    np.testing.assert_allclose(errors, 0.0, atol=1e-15)


def test_matching_ignores_norm_of_reconstruction(batch):
    scales = np.arange(1, 9, dtype=float)[:, None]
    rec = (scales * batch)[::-1]
    np.testing.assert_array_equal(match_samples(batch, rec), np.arange(8)[::-1])
    errors, _ = relative_error(batch, rec)
    # row i was scaled by i + 1
    np.testing.assert_allclose(errors, np.arange(8.0), atol=1e-12)


def test_sign_flip_sign_invariant(batch):
    perm = np.random.default_rng(2).permutation(8)
    rec = -batch[perm]
    cosines, permutation = matched_cosine(batch, rec, sign_invariant=True)
    np.testing.assert_array_equal(perm[permutation], np.arange(8))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-12)
    errors, _ = relative_error(batch, rec, sign_invariant=True)
    np.testing.assert_allclose(errors, 0.0, atol=1e-15)
    values, _ = psnr(batch, rec, data_range=1.0, sign_invariant=True)
    assert np.all(np.isposinf(values))


def test_sign_flip_not_sign_invariant():
    x = np.array([[1.0, -2.0, 3.0]])
    cosines, permutation = matched_cosine(x, -x)
    np.testing.assert_array_equal(permutation, [0])
    np.testing.assert_allclose(cosines, [-1.0])
    errors, _ = relative_error(x, -x)
    np.testing.assert_allclose(errors, [2.0])


def test_mixed_signs_sign_invariant_picks_better_sign():
    batch = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rec = np.array([[0.0, -1.1, 0.0], [0.9, 0.0, 0.0]])
    report = reconstruction_report(batch, rec, sign_invariant=True)
    np.testing.assert_array_equal(report.permutation, [1, 0])
    np.testing.assert_allclose(report.cosine, [1.0, 1.0])
    np.testing.assert_allclose(report.relative_error, [0.1, 0.1])


def test_fewer_reconstructed_rows_unmatched_is_nan(batch):
    rec = batch[[7, 6, 5, 4, 3, 2, 1]]  # row 0 missing
    report = reconstruction_report(
        batch, rec, data_range=1.0, image_shape=(8, 8)
    )
    expected = np.array([-1, 6, 5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(report.permutation, expected)
    assert np.sum(report.permutation == -1) == 1
    for key in ("cosine", "relative_error", "psnr", "ssim"):
        values = report[key]
        assert values.shape == (8,)
        assert np.isnan(values[0]), key
        assert not np.any(np.isnan(values[1:])), key
    np.testing.assert_allclose(report.cosine[1:], 1.0)
    np.testing.assert_allclose(report.ssim[1:], 1.0)
    assert np.all(np.isposinf(report.psnr[1:]))
    cosines, permutation = matched_cosine(batch, rec)
    np.testing.assert_array_equal(permutation, expected)
    assert np.isnan(cosines[0])


def test_more_reconstructed_rows_extra_left_out(batch):
    rng = np.random.default_rng(3)
    rec = np.vstack([rng.normal(size=(2, 64)), batch])
    permutation = match_samples(batch, rec)
    np.testing.assert_array_equal(permutation, np.arange(2, 10))


def test_empty_reconstruction_all_nan(batch):
    cosines, permutation = matched_cosine(batch, np.empty((0, 64)))
    np.testing.assert_array_equal(permutation, np.full(8, -1))
    assert np.all(np.isnan(cosines))


def test_zero_reconstructed_row_has_cosine_zero():
    batch = np.array([[1.0, 0.0]])
    cosines, _ = matched_cosine(batch, np.zeros((1, 2)))
    np.testing.assert_array_equal(cosines, [0.0])
    errors, _ = relative_error(batch, np.zeros((1, 2)))
    np.testing.assert_array_equal(errors, [1.0])


# ---------------------------------------------------------------- PSNR / SSIM


def test_psnr_known_value():
    # MSE exactly 0.01 with range 1 -> 10 log10(1 / 0.01) = 20 dB
    x = np.linspace(0.2, 0.8, 16)[None, :]
    values, permutation = psnr(x, x + 0.1, data_range=1.0)
    np.testing.assert_allclose(values, [20.0], rtol=1e-12)
    np.testing.assert_array_equal(permutation, [0])
    # the same error, range 10 -> +20 dB
    values, _ = psnr(x, x + 0.1, data_range=10.0)
    np.testing.assert_allclose(values, [40.0], rtol=1e-12)


def test_psnr_of_identical_is_inf_without_warning(batch, recwarn):
    values, _ = psnr(batch, batch, data_range=1.0)
    assert np.all(np.isposinf(values))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_psnr_normalised_images_range_shift(batch):
    # Normalising by (x - mean) / std scales the error by 1/std; passing the
    # normalised range 1/std gives the PSNR of the un-normalised images.
    mean, std = 0.1307, 0.3081
    noisy = batch + 0.05 * np.random.default_rng(4).standard_normal(batch.shape)
    raw, _ = psnr(batch, noisy, data_range=1.0)
    norm, _ = psnr((batch - mean) / std, (noisy - mean) / std, data_range=1.0 / std)
    np.testing.assert_allclose(norm, raw, rtol=1e-10)
    wrong, _ = psnr((batch - mean) / std, (noisy - mean) / std, data_range=1.0)
    np.testing.assert_allclose(raw - wrong, -20 * np.log10(std), rtol=1e-10)


def test_ssim_values(batch):
    values, permutation = ssim(batch, batch[::-1], data_range=1.0, image_shape=(8, 8))
    np.testing.assert_allclose(values, 1.0)
    np.testing.assert_array_equal(permutation, np.arange(8)[::-1])
    noisy = batch + 0.2 * np.random.default_rng(5).standard_normal(batch.shape)
    values, _ = ssim(batch, noisy, data_range=1.0, image_shape=(8, 8))
    assert np.all(values < 0.9) and np.all(values > -1.0)


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (5, 5), (6, 6), (4, 4, 3)])
def test_ssim_small_images(shape):
    n = int(np.prod(shape))
    x = np.random.default_rng(6).uniform(size=(2, n))
    values, _ = ssim(x, x, data_range=1.0, image_shape=shape)
    np.testing.assert_allclose(values, 1.0)


def test_ssim_bad_image_shape(batch):
    msg = "image_shape (8, 7) has 56 pixels but the samples have 64 features."
    with pytest.raises(ValueError, match=re.escape(msg)):
        ssim(batch, batch, data_range=1.0, image_shape=(8, 7))
    msg = "ssim needs images of at least 3 x 3 pixels, got image_shape (2, 32)."
    with pytest.raises(ValueError, match=re.escape(msg)):
        ssim(batch, batch, data_range=1.0, image_shape=(2, 32))
    with pytest.raises(ValueError, match="image_shape must be a tuple of 2 or 3"):
        ssim(batch, batch, data_range=1.0, image_shape=64)


@pytest.mark.parametrize("data_range", [0, -1.0, np.inf, np.nan, None, "1", True])
def test_bad_data_range(batch, data_range):
    msg = "data_range must be a positive finite real number"
    with pytest.raises(ValueError, match=msg):
        psnr(batch, batch, data_range=data_range)


def test_data_range_is_required(batch):
    with pytest.raises(TypeError):
        psnr(batch, batch)


# ---------------------------------------------------------------- report


def test_report_keys(batch):
    report = reconstruction_report(batch, batch)
    assert isinstance(report, Bunch)
    assert sorted(report) == ["cosine", "permutation", "relative_error"]
    report = reconstruction_report(batch, batch, data_range=1.0)
    assert sorted(report) == ["cosine", "permutation", "psnr", "relative_error"]
    report = reconstruction_report(batch, batch, data_range=1.0, image_shape=(8, 8))
    assert sorted(report) == [
        "cosine",
        "permutation",
        "psnr",
        "relative_error",
        "ssim",
    ]


def test_report_agrees_with_functions(batch):
    rng = np.random.default_rng(7)
    rec = (batch + 0.1 * rng.standard_normal(batch.shape))[rng.permutation(8)]
    report = reconstruction_report(batch, rec, data_range=1.0, image_shape=(8, 8))
    kw = dict(data_range=1.0)
    np.testing.assert_array_equal(report.permutation, match_samples(batch, rec))
    np.testing.assert_array_equal(report.cosine, matched_cosine(batch, rec)[0])
    np.testing.assert_array_equal(
        report.relative_error, relative_error(batch, rec)[0]
    )
    np.testing.assert_array_equal(report.psnr, psnr(batch, rec, **kw)[0])
    np.testing.assert_array_equal(
        report.ssim, ssim(batch, rec, image_shape=(8, 8), **kw)[0]
    )


def test_report_image_shape_without_data_range(batch):
    msg = "image_shape was given without data_range"
    with pytest.raises(ValueError, match=msg):
        reconstruction_report(batch, batch, image_shape=(8, 8))


# ---------------------------------------------------------------- validation


def test_different_number_of_columns():
    msg = (
        "batch and reconstruction must have the same number of columns "
        "(features); got batch.shape=(8, 64) and reconstruction.shape=(8, 63)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        match_samples(np.ones((8, 64)), np.ones((8, 63)))


@pytest.mark.parametrize("name", ["batch", "reconstruction"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "func",
    [
        match_samples,
        matched_cosine,
        relative_error,
        lambda b, r: psnr(b, r, data_range=1.0),
        lambda b, r: ssim(b, r, data_range=1.0, image_shape=(2, 2)),
        reconstruction_report,
    ],
)
def test_non_finite_names_argument(name, bad, func):
    arrays = {"batch": np.ones((3, 4)), "reconstruction": np.ones((3, 4))}
    arrays[name][1, 2] = bad
    msg = re.escape(f"{name} contains NaN or infinity.")
    with pytest.raises(ValueError, match=msg):
        func(arrays["batch"], arrays["reconstruction"])


@pytest.mark.parametrize("name", ["batch", "reconstruction"])
def test_not_2d(name):
    arrays = {"batch": np.ones((3, 4)), "reconstruction": np.ones((3, 4))}
    arrays[name] = np.ones(4)
    msg = (
        f"{name} must be a 2-D array of shape (n_samples, n_features), "
        "got an array of shape (4,)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        matched_cosine(arrays["batch"], arrays["reconstruction"])


def test_zero_norm_true_row():
    batch = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    msg = (
        "batch has rows of zero norm (rows [1]); the cosine similarity and "
        "the relative error are undefined for them."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        relative_error(batch, batch)


def test_inputs_not_modified(batch):
    rec = batch[::-1].copy()
    b0, r0 = batch.copy(), rec.copy()
    reconstruction_report(batch, rec, data_range=1.0, image_shape=(8, 8))
    np.testing.assert_array_equal(batch, b0)
    np.testing.assert_array_equal(rec, r0)


def test_list_input():
    cosines, permutation = matched_cosine([[1, 0], [0, 1]], [[0, 2], [3, 0]])
    np.testing.assert_array_equal(permutation, [1, 0])
    np.testing.assert_allclose(cosines, [1.0, 1.0])


@pytest.mark.parametrize("sign_invariant", [False, True])
def test_collinear_samples_of_different_norms_match_by_distance(sign_invariant):
    # x and 2x tie in the cosine; an exact reconstruction was reported with
    # errors 1.0 and 0.5 when the tie went the wrong way (break-it)
    rng = np.random.default_rng(0)
    batch = rng.uniform(size=(6, 64))
    batch[2] = 2.0 * batch[1]
    batch[4] = 0.5 * batch[3]
    for seed in range(8):
        perm = np.random.default_rng(seed).permutation(6)
        errors, matched = relative_error(batch, batch[perm], sign_invariant=sign_invariant)
        np.testing.assert_array_equal(perm[matched], np.arange(6))
        assert errors.max() == 0.0


@pytest.mark.parametrize("scale", [1e-300, 1e160, 1e200])
def test_extreme_scales_match_and_measure(scale):
    # the tie-break's distances overflowed to NaN at 1e160 (linear_sum_assignment
    # refused the matrix), and norms of rows at 1e-300 underflowed to "zero"
    rng = np.random.default_rng(0)
    batch = rng.uniform(size=(4, 8)) * scale
    errors, perm = relative_error(batch, batch[::-1])
    np.testing.assert_array_equal(perm, [3, 2, 1, 0])
    assert errors.max() == 0.0
    cos = matched_cosine(batch, batch[::-1])[0]
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
