"""MomentTensorTransformer: span, batch size, Hermite moment tensor (DESIGN F1-F4b)."""

import re
import warnings

import numpy as np
import pytest

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.activations import get_activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import relative_error
from skrecon.exceptions import IdentifiabilityWarning
from skrecon.moments import BatchSizeWarning, estimate_batch_size


def _query(B=4, m=20000, bias="none", seed=0, dtype=np.float64):
    batch = load_digits_batch(B, random_state=seed)[0]
    return batch, make_gradient_query(batch, n_neurons=m, bias=bias, random_state=seed,
                                      dtype=dtype)


def test_span_contains_the_batch_and_transform_round_trips():
    batch, q = _query(bias="gaussian")
    mt = MomentTensorTransformer(bias=True).fit(q.grad, weights=q.weights,
                                                output_weights=q.output_weights)
    aug = np.hstack([batch, np.ones((4, 1))])
    resid = aug - (aug @ mt.components_.T) @ mt.components_
    assert np.abs(resid).max() < 1e-10
    coords = mt.transform(q.grad)
    assert coords.shape == (20000, 4)
    np.testing.assert_allclose(mt.inverse_transform(coords), q.grad,
                               atol=1e-10 * np.abs(q.grad).max())
    assert mt.singular_values_[4] / mt.singular_values_[0] < 1e-13


def test_moment_tensor_matches_stein_and_shrinks_like_one_over_sqrt_m():
    batch = load_digits_batch(4, random_state=1)[0]
    act = get_activation("tanh")
    errors = []
    for m in (5000, 80000):
        q = make_gradient_query(batch, n_neurons=m, bias="none", random_state=1)
        mt = MomentTensorTransformer().fit(q.grad, weights=q.weights,
                                           output_weights=q.output_weights)
        s = mt.weight_std_
        V = (batch * s) @ mt.scaled_components_.T  # samples in the scaled span
        H = (batch * s) @ mt.hermite_components_.T
        tau = np.linalg.norm(batch * s, axis=1)
        weight = q.signals[:, 0] * act.mu(3, tau)
        truth = np.einsum("i,ia,ib,ic->abc", weight, V, H, H)
        est = mt.moment_tensor_[:, 0, 0]
        errors.append(np.linalg.norm(est - truth) / np.linalg.norm(truth))
    assert errors[0] < 0.1
    assert errors[1] < errors[0] / 2.5  # 16x more neurons: ~4x smaller error


@pytest.mark.parametrize("values, dtype, expected", [
    ([5.0, 2.0, 1e-3, 1e-16], np.float64, 3),
    ([5.0, 2.0, 1e-3, 1e-9, 1e-10], np.float32, 3),   # float32 round-off below its floor
    ([5.0, 2.0, 1e-3, 1e-9, 1e-10], np.float64, 3),   # ... and found by the largest gap
    ([1.0], np.float64, 1),
    # weak samples far above round-off behind a larger gap (a batch of 1e-5
    # x digits read as 1 sample, break-it): the last decisive gap counts
    ([1.0, 1.5e-11, 1.1e-11, 3.2e-12, 2e-20], np.float64, 4),
    # round-off just above its floor is not a sample
    ([1.0, 0.5, 3e-15, 1e-15, 1e-17], np.float64, 2),
    # ... nor a flat bulk of it above the floor, even with a decisive drop
    # below it (a Flower update (θ - θ') / lr: 16 samples read as 50)
    ([1.0, 0.3, 1e-3, 5e-15, 4.8e-15, 4.6e-15, 4e-19], np.float64, 3),
    # one dominant sample: the five others behind a gap of 2564, the last
    # 4x the float32 floor but 300x the round-off below it (read as 1)
    ([1, 3.9e-4, 2e-4, 9.8e-5, 1.9e-5, 5.1e-6, 1.7e-8, 1.6e-8], np.float32, 6),
    # scales at the ends of float64 (10 s_1 overflowed; a subnormal s_2)
    ([1e308, 5e307, 1e290], np.float64, 2),
    ([1e-310, 5e-311, 0.0], np.float64, 2),
])
def test_estimate_batch_size(values, dtype, expected):
    assert estimate_batch_size(np.array(values), dtype)[0] == expected


def test_a_dominant_sample_above_a_noise_bulk_does_not_hide_the_others():
    # the gap of 556 below the dominant sample cut the batch to 1; the values
    # it cut off are 6x and 2x the threshold: samples, not lifted noise
    s = np.r_[5000.0, 9, 3, np.linspace(1.1, 0.9, 40)]
    assert estimate_batch_size(s, np.float64, n_rows=2000)[0] == 3


def test_one_dominant_sample_leaves_the_batch_size():
    # one sample's target 100, the others' 0: its signal dominates the
    # gradient (float32 read a batch of 1 and found nothing, break-it)
    batch = load_digits_batch(6, random_state=0)[0]
    targets = np.zeros(6)
    targets[0] = 100.0
    q = make_gradient_query(batch, targets, n_neurons=2000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert rec.batch_size_ == 6 and rec.n_found_ == 6
    # measured 1.1e-12
    assert relative_error(batch, rec.samples_)[0].max() <= 1e-9


def test_float32_found_rows_are_within_float32_precision():
    # the same batch in float32: the weak samples' signals (2e-4 of the
    # dominant one's) sit at its round-off; every row comes back (measured
    # errors 4e-8 to 1.9e-4), and found_ flags only rows within 1e-4, the
    # others named in a warning with their signal share
    batch = load_digits_batch(6, random_state=0)[0]
    targets = np.zeros(6)
    targets[0] = 100.0
    q = make_gradient_query(batch, targets, n_neurons=2000, dtype=np.float32,
                            random_state=0)
    with pytest.warns(IdentifiabilityWarning, match=r"of samples_ fit the float32 "
                      r"gradient to its round-off, but the gradient does not pin them: "
                      r"their first-order error bounds .* do not bound their errors "
                      r"by 1e-4"):
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert rec.batch_size_ == 6
    errors, perm = relative_error(batch, rec.samples_)
    found = np.asarray(rec.found_)[perm]
    assert found[0] and 1 <= found.sum() < 6  # the dominant sample among them
    assert errors[found].max() <= 1e-4
    assert errors.max() <= 1e-3


def test_float32_cast_to_float64_is_not_full_rank():
    batch, q = _query(B=4, bias="gaussian", seed=5, dtype=np.float32)
    mt = MomentTensorTransformer(bias=True).fit(q.grad.astype(np.float64),
                                                weights=q.weights)
    assert mt.n_components_ == 4


def test_no_gap_warns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 10))
    with pytest.warns(BatchSizeWarning, match="no clear gap"):
        MomentTensorTransformer().fit(X, weights=rng.standard_normal((500, 10)))


def test_full_column_rank_warns_that_the_batch_may_be_larger():
    """Three samples in three dimensions: every singular value is above
    round-off, the largest ratio reads 2 (ratio 30), and nothing said that
    the batch may be as large as the number of columns (break-it #4)."""
    batch = np.random.default_rng(0).standard_normal((3, 3))
    q = make_gradient_query(batch, n_neurons=2000, bias="none", random_state=0)
    with pytest.warns(BatchSizeWarning, match=re.escape(
            "All 3 singular values of the gradient are above round-off and show no "
            "noise floor: either the gradient is noisy, or the batch has at least 3 "
            "samples")):
        mt = MomentTensorTransformer().fit(q.grad, weights=q.weights)
    assert mt.n_components_ == 2  # the largest ratio, now flagged as uncertain


def test_order_four_for_relu_and_weight_std():
    batch, q = _query(B=2, m=5000, bias="none")
    mt = MomentTensorTransformer(activation="relu").fit(q.grad, weights=q.weights)
    assert mt.order_ == 4
    assert mt.moment_tensor_.shape == (2, 1, 1, 2, 2, 2)
    assert mt.weight_std_ == pytest.approx(1 / 8, rel=0.01)


def test_estimate_batch_size_checks_its_input():
    from skrecon.moments import estimate_batch_size

    with pytest.raises(ValueError, match="decreasing order"):
        estimate_batch_size(np.array([1.0, 5.0, 2.0]), np.float64)
    with pytest.raises(ValueError, match="finite, non-negative"):
        estimate_batch_size(np.array([5.0, np.nan, 1e-16]), np.float64)
    with pytest.raises(ValueError, match="n_rows must be a positive integer"):
        estimate_batch_size(np.array([5.0, 1.0]), np.float64, n_rows=0)


def test_a_weak_sample_above_the_noise_threshold_is_kept():
    """A ratio of 100 above the threshold does not cut off a weaker sample
    whose own gap to the noise is larger still."""
    from skrecon.moments import estimate_batch_size

    s = np.concatenate([[2.17, 5.1e-3, 3.3e-7, 3.29e-7], np.full(60, 3.2e-7)])
    assert estimate_batch_size(s, np.float64, n_rows=1000)[0] == 2


@pytest.mark.parametrize("n_bits, bias, why", [
    (4, "gaussian", "only 1 of its 51 singular values are at round-off"),
])
def test_a_guessed_batch_size_says_so(n_bits, bias, why):
    """A quantised gradient has no zero level: constant columns leave exact
    zeros, and the quantisation noise above them reads as samples (16
    digits read as 50); the estimate says it is guessing, and why."""
    from skrecon.defenses import UniformQuantization

    batch, _ = load_digits_batch(16, random_state=0)
    q = make_gradient_query(batch, n_neurons=20000, bias=bias, random_state=0)
    G = UniformQuantization(n_bits=n_bits).fit_transform(q.grad)
    with pytest.warns(BatchSizeWarning, match=r"The batch size read off the "
                      r"gradient \(\d+\) is a guess: " + re.escape(why)):
        est = MomentTensorTransformer(bias=bias != "none").fit(G, **q.fit_params)
    assert est.n_components_ > 16


@pytest.mark.parametrize("batch_size", [16, 48])
def test_an_exact_batch_is_not_called_a_guess(batch_size):
    batch, _ = load_digits_batch(batch_size, random_state=0)
    q = make_gradient_query(batch, n_neurons=20000, bias="gaussian", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchSizeWarning)
        est = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
    assert est.n_components_ == batch_size


def test_a_batch_of_n_features_plus_one_with_a_gaussian_bias():
    """B = d + 1 samples with a Gaussian bias: the span is the whole space and
    the inputs hold only d Hermite modes. The search recovers the batch (it
    crashed on a broadcast of (8, 8) into (8, 9)); the tensor, which cannot
    separate more factors than dimensions, is refused with a clear error."""
    X = np.random.default_rng(0).uniform(size=(9, 8))
    q = make_gradient_query(X, n_neurons=3000, bias="gaussian", random_state=0)
    for init in ("auto", "random"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rec = GradientReconstructor(**q.estimator_params, batch_size=9, init=init,
                                        random_state=0).fit(q.grad, **q.fit_params)
        errors, _ = relative_error(X, rec.samples_)
        assert rec.n_found_ == 9 and np.max(errors) <= 1e-8, (init, errors)
    message = re.escape(
        "The moment tensor cannot separate 9 samples: with the bias column, 9 "
        "components span the whole space, and the samples' inputs have only 8 "
        "coordinates, fewer than the samples (a tensor of 8 dimensions has at most 8 "
        "separable factors). Use n_components <= 8, or, to reconstruct 9 samples, "
        "GradientReconstructor with init='random' or 'auto' (the column-space search "
        "needs no tensor).")
    with pytest.raises(ValueError, match=message):
        MomentTensorTransformer(bias=True, n_components=9).fit(q.grad, weights=q.weights)
    with pytest.raises(ValueError, match=message):
        GradientReconstructor(**q.estimator_params, batch_size=9, init="tensor",
                              random_state=0).fit(q.grad, **q.fit_params)
