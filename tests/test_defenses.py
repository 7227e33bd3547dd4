"""Tests for skrecon.defenses (defences as transformers of the gradient)."""

import math
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skrecon.defenses import (
    GaussianGradientNoise,
    GlobalNormClipping,
    RowNormClipping,
    TopKPruning,
    UniformQuantization,
)

ALL = [
    GaussianGradientNoise,
    RowNormClipping,
    GlobalNormClipping,
    TopKPruning,
    UniformQuantization,
]

_WHOLE_MATRIX = (
    "whole-matrix defence: the output depends on every row of the gradient "
    "(global {}), so a subset of rows is not transformed like the full matrix"
)


def _expected_failed_checks(estimator):
    if isinstance(estimator, GlobalNormClipping):
        return {"check_methods_subset_invariance": _WHOLE_MATRIX.format("norm")}
    if isinstance(estimator, TopKPruning) and estimator.keep_fraction < 1:
        return {"check_methods_subset_invariance": _WHOLE_MATRIX.format("top-k")}
    if isinstance(estimator, UniformQuantization):
        return {"check_methods_subset_invariance": _WHOLE_MATRIX.format("range")}
    if isinstance(estimator, GaussianGradientNoise) and estimator.scale > 0:
        reason = (
            "noise is drawn for the whole matrix in row-major order, so the "
            "noise a row gets depends on its position and on the number of rows"
        )
        return {
            "check_methods_subset_invariance": reason,
            "check_methods_sample_order_invariance": reason,
        }
    return {}


@parametrize_with_checks(
    [E() for E in ALL]
    + [
        GaussianGradientNoise(scale=0.1, random_state=0),
        GaussianGradientNoise(scale=0.1, relative=True, random_state=0),
        RowNormClipping(max_norm=0.1),
        TopKPruning(keep_fraction=1.0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture
def grad():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 17)) * rng.uniform(0.1, 3.0, size=(40, 1))


# ---------------------------------------------------------------- common


@pytest.mark.parametrize("Est", ALL)
def test_tags(Est):
    tags = Est().__sklearn_tags__()
    assert tags.input_tags.allow_nan is False
    assert tags.requires_fit is True


@pytest.mark.parametrize("Est", ALL)
def test_fit_learns_only_n_features_in(Est, grad):
    est = Est()
    params = est.get_params()
    est.fit(grad)
    assert est.n_features_in_ == 17
    learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    assert learned == ["n_features_in_"]
    assert est.get_params() == params


@pytest.mark.parametrize("Est", ALL)
def test_transform_before_fit(Est, grad):
    with pytest.raises(NotFittedError):
        Est().transform(grad)


@pytest.mark.parametrize("Est", ALL)
def test_wrong_number_of_columns(Est, grad):
    est = Est().fit(grad)
    msg = "X has 16 features, but .* is expecting 17 features as input"
    with pytest.raises(ValueError, match=msg):
        est.transform(grad[:, :16])


@pytest.mark.parametrize("Est", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rejected(Est, grad, bad):
    grad[3, 4] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        Est().fit(grad)


@pytest.mark.parametrize("Est", ALL)
def test_input_not_modified_and_float32_kept(Est, grad):
    g0 = grad.copy()
    out = Est().fit_transform(grad)
    np.testing.assert_array_equal(grad, g0)
    assert out is not grad and out.dtype == np.float64 and out.shape == grad.shape
    out32 = Est().fit_transform(grad.astype(np.float32))
    assert out32.dtype == np.float32


@pytest.mark.parametrize("Est", ALL)
def test_init_only_stores(Est):
    # CASES 27: __init__ stores (even invalid values); fit validates.
    params = {name: object() for name in Est().get_params()}
    est = Est(**params)
    assert all(getattr(est, k) is v for k, v in params.items())
    clone(est)


def test_keyword_only():
    with pytest.raises(TypeError):
        GaussianGradientNoise(0.1)
    with pytest.raises(TypeError):
        TopKPruning(0.5)


@pytest.mark.parametrize(
    "est, msg",
    [
        (
            GaussianGradientNoise(scale=-1.0),
            r"The 'scale' parameter of GaussianGradientNoise must be a float in "
            r"the range \[0\.0, inf\)\. Got -1\.0 instead\.",
        ),
        (
            GaussianGradientNoise(relative="yes"),
            r"The 'relative' parameter of GaussianGradientNoise must be an "
            r"instance of 'bool'",
        ),
        (
            GaussianGradientNoise(random_state="0"),
            r"The 'random_state' parameter of GaussianGradientNoise must be",
        ),
        (
            TopKPruning(keep_fraction=0),
            r"The 'keep_fraction' parameter of TopKPruning must be a float in "
            r"the range \(0\.0, 1\.0\]\. Got 0 instead\.",
        ),
        (
            TopKPruning(keep_fraction=1.5),
            r"The 'keep_fraction' parameter of TopKPruning must be a float in "
            r"the range \(0\.0, 1\.0\]\. Got 1\.5 instead\.",
        ),
        (
            UniformQuantization(n_bits=0),
            r"The 'n_bits' parameter of UniformQuantization must be an int in "
            r"the range \[1, 32\]\. Got 0 instead\.",
        ),
        (
            UniformQuantization(n_bits=33),
            r"The 'n_bits' parameter of UniformQuantization must be an int in "
            r"the range \[1, 32\]\. Got 33 instead\.",
        ),
        (
            UniformQuantization(n_bits=4.0),
            r"The 'n_bits' parameter of UniformQuantization must be an int in "
            r"the range \[1, 32\]\. Got 4\.0 instead\.",
        ),
        (
            RowNormClipping(max_norm=0.0),
            r"The 'max_norm' parameter of RowNormClipping must be a float in "
            r"the range \(0\.0, inf\)\. Got 0\.0 instead\.",
        ),
        (
            GlobalNormClipping(max_norm=-2),
            r"The 'max_norm' parameter of GlobalNormClipping must be a float in "
            r"the range \(0\.0, inf\)\. Got -2 instead\.",
        ),
    ],
)
def test_bad_parameters_raise_at_fit(est, msg, grad):
    with pytest.raises(ValueError, match=msg) as excinfo:
        est.fit(grad)
    assert isinstance(excinfo.value, InvalidParameterError)


# ---------------------------------------------------------------- noise


def test_noise_scale_zero_is_identity(grad):
    out = GaussianGradientNoise(scale=0.0, random_state=0).fit_transform(grad)
    np.testing.assert_array_equal(out, grad)
    out = GaussianGradientNoise(scale=0.0, relative=True).fit_transform(grad)
    np.testing.assert_array_equal(out, grad)


def test_noise_absolute_std():
    X = np.zeros((2000, 65))
    out = GaussianGradientNoise(scale=0.3, random_state=1).fit_transform(X)
    assert abs(out.std() / 0.3 - 1) < 0.02
    assert abs(out.mean()) < 0.3 * 5 / math.sqrt(X.size)


def test_noise_relative_std():
    rng = np.random.default_rng(2)
    X = rng.uniform(-2.0, 5.0, size=(2000, 65))
    scale = 0.05
    out = GaussianGradientNoise(scale=scale, relative=True, random_state=3)
    noise = out.fit_transform(X) - X
    target = scale * np.linalg.norm(X) / math.sqrt(X.size)
    assert abs(noise.std() / target - 1) < 0.02
    assert abs(np.linalg.norm(noise) / (scale * np.linalg.norm(X)) - 1) < 0.02


def test_noise_seeding(grad):
    a = GaussianGradientNoise(scale=0.1, random_state=0).fit(grad)
    out1 = a.transform(grad)
    np.testing.assert_array_equal(a.transform(grad), out1)  # same on every call
    b = GaussianGradientNoise(scale=0.1, random_state=0)
    np.testing.assert_array_equal(b.fit_transform(grad), out1)
    np.testing.assert_array_equal(clone(a).fit_transform(grad), out1)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)).transform(grad), out1)
    c = GaussianGradientNoise(scale=0.1, random_state=1).fit(grad)
    assert not np.allclose(c.transform(grad), out1)


def test_noise_does_not_touch_global_state(grad):
    np.random.seed(12345)
    expected = np.random.random_sample()
    np.random.seed(12345)
    GaussianGradientNoise(scale=0.1).fit_transform(grad)
    GaussianGradientNoise(scale=0.1, random_state=0).fit_transform(grad)
    assert np.random.random_sample() == expected


def test_noise_none_and_randomstate_give_fresh_noise(grad):
    est = GaussianGradientNoise(scale=0.1).fit(grad)
    assert not np.array_equal(est.transform(grad), est.transform(grad))
    rs = np.random.RandomState(0)
    est = GaussianGradientNoise(scale=0.1, random_state=rs).fit(grad)
    first = est.transform(grad)
    assert not np.array_equal(est.transform(grad), first)
    est2 = GaussianGradientNoise(scale=0.1, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(est2.fit(grad).transform(grad), first)


# ---------------------------------------------------------------- clipping


def test_row_norm_clipping(grad):
    max_norm = 4.0
    norms = np.linalg.norm(grad, axis=1)
    below = norms <= max_norm
    assert below.any() and (~below).any()
    out = RowNormClipping(max_norm=max_norm).fit_transform(grad)
    out_norms = np.linalg.norm(out, axis=1)
    assert np.all(out_norms <= max_norm * (1 + 1e-12))
    np.testing.assert_array_equal(out[below], grad[below])  # bit for bit
    np.testing.assert_allclose(out_norms[~below], max_norm, rtol=1e-12)
    # clipped rows keep their direction
    cos = np.sum(out * grad, axis=1) / (out_norms * norms)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)


def test_row_norm_clipping_zero_row():
    X = np.array([[0.0, 0.0], [6.0, 8.0]])
    out = RowNormClipping(max_norm=5.0).fit_transform(X)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [3.0, 4.0]])


def test_global_norm_clipping_is_a_pure_scale(grad):
    norm = np.linalg.norm(grad)
    out = GlobalNormClipping(max_norm=norm / 3).fit_transform(grad)
    np.testing.assert_allclose(np.linalg.norm(out), norm / 3, rtol=1e-12)
    np.testing.assert_allclose(out, grad / 3, rtol=1e-12)
    ratio = out[grad != 0] / grad[grad != 0]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    same = GlobalNormClipping(max_norm=2 * norm).fit_transform(grad)
    np.testing.assert_array_equal(same, grad)


# ---------------------------------------------------------------- pruning


@pytest.mark.parametrize("keep_fraction", [0.001, 0.1, 0.37, 0.5, 1.0])
def test_topk_keeps_exactly_the_k_largest(grad, keep_fraction):
    k = math.ceil(keep_fraction * grad.size)
    out = TopKPruning(keep_fraction=keep_fraction).fit_transform(grad)
    kept = out != 0
    assert kept.sum() == k
    np.testing.assert_array_equal(out[kept], grad[kept])
    expected = np.sort(np.abs(grad).ravel())[::-1][:k]
    np.testing.assert_array_equal(np.sort(np.abs(out[kept]))[::-1], expected)
    if k < grad.size:
        assert np.abs(grad[~kept]).max() <= np.abs(grad[kept]).min()


def test_topk_ties_first_in_row_major_order():
    X = np.array([[1.0, -2.0, 2.0], [2.0, 0.5, 1.0]])
    out = TopKPruning(keep_fraction=2 / 6).fit_transform(X)
    np.testing.assert_array_equal(out, [[0.0, -2.0, 2.0], [0.0, 0.0, 0.0]])


# ---------------------------------------------------------------- quantisation


@pytest.mark.parametrize("n_bits", [1, 2, 3, 4, 8, 16, 32])
def test_quantisation_error_and_levels(grad, n_bits):
    out = UniformQuantization(n_bits=n_bits).fit_transform(grad)
    m = np.abs(grad).max()
    step = 2 * m / (2**n_bits - 1)
    assert np.all(np.abs(out - grad) <= step / 2 * (1 + 1e-9))
    assert np.unique(out).size <= 2**n_bits
    assert np.abs(out).max() <= m * (1 + 1e-12)
    # every output is one of the symmetric levels -m + j * step
    j = (out + m) / step
    np.testing.assert_allclose(j, np.round(j), atol=1e-6)


def test_quantisation_levels_small_example():
    X = np.array([[-1.0, -0.4, -0.1, 0.1, 0.4, 1.0]])
    out = UniformQuantization(n_bits=2).fit_transform(X)
    np.testing.assert_allclose(out, [[-1.0, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1.0]])
    np.testing.assert_array_equal(
        UniformQuantization(n_bits=1).fit_transform(X), np.sign(X)
    )


def test_quantisation_deterministic_and_zero(grad):
    est = UniformQuantization(n_bits=4).fit(grad)
    np.testing.assert_array_equal(est.transform(grad), est.transform(grad))
    np.testing.assert_array_equal(est.transform(np.zeros_like(grad)), 0.0)


def test_quantisation_is_odd_away_from_boundaries(grad):
    est = UniformQuantization(n_bits=5).fit(grad)
    np.testing.assert_allclose(est.transform(-grad), -est.transform(grad))


# ---------------------------------------------------------------- pipeline


def test_defences_chain_in_a_pipeline(grad):
    pipe = make_pipeline(
        RowNormClipping(max_norm=2.0),
        TopKPruning(keep_fraction=0.5),
        UniformQuantization(n_bits=8),
        GaussianGradientNoise(scale=0.01, relative=True, random_state=0),
    )
    out = pipe.fit_transform(grad)
    assert out.shape == grad.shape
    np.testing.assert_array_equal(pipe.transform(grad), out)
