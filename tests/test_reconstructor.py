"""End-to-end reconstruction: digits batches from one gradient query."""

import re
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import matched_cosine, relative_error
from skrecon.reconstructor import IdentifiabilityWarning

WIDTH = 20000


def _fit(batch, *, activation="tanh", bias="gaussian", seed=0, n_neurons=WIDTH,
         dtype=np.float64, **params):
    q = make_gradient_query(batch, n_neurons=n_neurons, activation=activation,
                            bias=bias, random_state=seed, dtype=dtype)
    rec = GradientReconstructor(activation=activation, bias=bias != "none",
                                random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IdentifiabilityWarning)
        rec.fit(q.grad, **q.fit_params)
    return rec, q


@pytest.fixture(scope="module")
def digits8():
    return load_digits_batch(8, random_state=0)[0]


@pytest.fixture(scope="module")
def fitted8(digits8):
    return _fit(digits8)


@pytest.mark.parametrize("batch_size", [2, 8])
def test_tanh_gaussian_bias_exact(batch_size, digits8, fitted8):
    if batch_size == 8:
        batch, (rec, q) = digits8, fitted8
    else:
        batch = load_digits_batch(batch_size, random_state=1)[0]
        rec, q = _fit(batch, seed=1)
    err, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == batch_size
    assert rec.samples_.shape == (batch_size, 64)
    assert np.all(perm >= 0)
    assert np.max(err) <= 1e-6
    assert rec.gradient_residual_ <= 1e-9
    assert rec.sign_identified_.all() and rec.scale_identified_.all()
    assert rec.sign_identified_.shape == (batch_size,)
    assert rec.converged_


def test_tanh_without_bias_directions_and_sign_flag():
    batch = load_digits_batch(8, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=WIDTH, bias="none", random_state=0)
    rec = GradientReconstructor(activation="tanh", bias=False, random_state=0)
    with pytest.warns(IdentifiabilityWarning, match="sign of each sample is not identifiable"):
        rec.fit(q.grad, **q.fit_params)
    cos, _ = matched_cosine(batch, rec.samples_, sign_invariant=True)
    assert np.min(cos) >= 0.9999
    assert not rec.sign_identified_.any()
    assert rec.scale_identified_.all()
    # tanh without bias: only the sign is ambiguous, so the norm is exact too
    err, _ = relative_error(batch, rec.samples_, sign_invariant=True)
    assert np.max(err) <= 1e-6


def test_sigmoid_with_bias_exact():
    batch = load_digits_batch(8, random_state=3)[0]
    rec, _ = _fit(batch, activation="sigmoid", seed=3)
    err, _ = relative_error(batch, rec.samples_)
    assert np.max(err) <= 1e-6


def test_zero_bias_exact():
    batch = load_digits_batch(4, random_state=2)[0]
    rec, _ = _fit(batch, bias="zero", seed=2)
    err, _ = relative_error(batch, rec.samples_)
    assert np.max(err) <= 1e-6


def test_scale_invariance_and_reduction(digits8, fitted8):
    # CASES 6: a global scale of the gradient (learning rate, reduction="sum",
    # a loss scaled by 0.5) gives the same samples, in some order
    rec, q = fitted8
    q_sum = make_gradient_query(digits8, n_neurons=WIDTH, random_state=0, reduction="sum")
    for grad in (q.grad * 1e6, q_sum.grad, 0.5 * q.grad):
        other = clone(rec).fit(grad, **q.fit_params)
        err, perm = relative_error(rec.samples_, other.samples_)
        assert np.max(err) <= 1e-9


def test_same_random_state_is_bitwise_reproducible(fitted8):
    rec, q = fitted8
    again = clone(rec).fit(q.grad, **q.fit_params)
    np.testing.assert_array_equal(again.samples_, rec.samples_)
    np.testing.assert_array_equal(again.sample_coefficients_, rec.sample_coefficients_)


@pytest.mark.parametrize("dtype, cast", [(np.float64, False), (np.float32, False),
                                         (np.float32, True)])
def test_batch_size_auto(dtype, cast):
    batch = load_digits_batch(6, random_state=4)[0]
    q = make_gradient_query(batch, n_neurons=5000, random_state=4, dtype=dtype)
    grad = q.grad.astype(np.float64) if cast else q.grad
    mt = MomentTensorTransformer(bias=True).fit(grad, weights=q.weights,
                                                output_weights=q.output_weights)
    assert mt.n_components_ == 6


def test_float32_gradient_reconstructs_to_float32_precision():
    batch = load_digits_batch(4, random_state=5)[0]
    rec, _ = _fit(batch, seed=5, dtype=np.float32)
    assert rec.samples_.dtype == np.float32
    err, _ = relative_error(batch, rec.samples_.astype(np.float64))
    assert np.max(err) <= 1e-3


def test_duplicate_samples_merge():
    batch = load_digits_batch(8, random_state=6)[0]
    batch[7] = batch[2]
    rec, _ = _fit(batch, seed=6)
    assert rec.batch_size_ == 7
    cos, perm = matched_cosine(batch[:7], rec.samples_)
    err, _ = relative_error(batch[:7], rec.samples_)
    assert np.max(err) <= 1e-6  # the duplicated image is among the recovered


def test_relu_batch_of_one_uses_order_four():
    batch = load_digits_batch(1, random_state=7)[0]
    rec, _ = _fit(batch, activation="relu", seed=7)
    assert rec.order_ == 4
    err, _ = relative_error(batch, rec.samples_)
    assert np.max(err) <= 1e-6
    assert rec.gradient_residual_ <= 1e-9


def test_transform_inverse_transform_and_score(fitted8):
    rec, q = fitted8
    coef = rec.transform(q.grad)
    assert coef.shape == (WIDTH, 8)
    back = rec.inverse_transform(coef)
    np.testing.assert_allclose(back, q.grad, rtol=0, atol=1e-9 * np.abs(q.grad).max())
    assert rec.score(q.grad, **q.fit_params) == pytest.approx(1.0, abs=1e-12)
    # held-out neurons of another query at the same batch
    other = make_gradient_query(q.batch, n_neurons=500, random_state=99)
    rec2 = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert rec2.score(other.grad, **other.fit_params) < 1.0  # other targets, other signals


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_query():
    batch = load_digits_batch(3, random_state=0)[0]
    return make_gradient_query(batch, n_neurons=500, random_state=0)


@pytest.mark.parametrize("where", ["grad", "weights", "output_weights"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_input_is_named(small_query, where, value):
    arrays = {"grad": small_query.grad.copy(), "weights": small_query.weights.copy(),
              "output_weights": small_query.output_weights.copy()}
    arrays[where][3, 0] = value
    name = {"grad": "The gradient X", "weights": "weights",
            "output_weights": "output_weights"}[where]
    with pytest.raises(ValueError, match=re.escape(name) + " contains NaN or inf"):
        GradientReconstructor(bias=True).fit(
            arrays["grad"], weights=arrays["weights"],
            output_weights=arrays["output_weights"])


def test_mismatched_shapes_name_both(small_query):
    with pytest.raises(ValueError, match=re.escape(
            "weights has shape (500, 64) but the gradient X has shape (500, 65)")):
        GradientReconstructor(bias=True).fit(small_query.grad,
                                             weights=small_query.weights[:, :64])
    with pytest.raises(ValueError, match=re.escape(
            "output_weights has shape (499, 1) but the gradient X has shape (500, 65)")):
        GradientReconstructor(bias=True).fit(
            small_query.grad, weights=small_query.weights,
            output_weights=small_query.output_weights[:499])


@pytest.mark.parametrize("Est", [GradientReconstructor, MomentTensorTransformer])
def test_zero_gradient_carries_no_information(small_query, Est):
    # (MomentTensorTransformer raised an IndexError here)
    with pytest.raises(ValueError, match=re.escape(
            "The gradient X is zero everywhere: it carries no information about "
            "the batch")):
        Est(bias=True).fit(np.zeros_like(small_query.grad), weights=small_query.weights)


def test_missing_weights_explains_routing(small_query):
    # without weights: the blind estimate, whose warning says how to route them
    from skrecon.blind import BlindFitWarning

    with pytest.warns(BlindFitWarning, match="enable_metadata_routing=True"):
        rec = GradientReconstructor(bias=True, random_state=0).fit(small_query.grad)
    assert rec.solver_ == "cocktail_party"


def test_linear_activation_is_refused(small_query):
    with pytest.raises(ValueError, match="reveals only the span"):
        GradientReconstructor(activation="identity", bias=True).fit(
            small_query.grad, **small_query.fit_params)


def test_order_that_vanishes_names_the_right_one(small_query):
    rec = GradientReconstructor(activation="tanh", bias=True,
                                moments=MomentTensorTransformer(order=4))
    with pytest.raises(ValueError, match=r"order=4 is not identifiable .* Use order=3"):
        rec.fit(small_query.grad, **small_query.fit_params)


def test_init_only_stores_parameters():
    moments = MomentTensorTransformer(order=3)
    rec = GradientReconstructor(moments=moments, batch_size=5, n_init=3)
    assert rec.moments is moments
    assert rec.get_params()["moments__order"] == 3
    assert clone(rec).get_params()["batch_size"] == 5


# ----------------------------------------------------------------------------
# reach: the per-sample column-space search with deflation
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, init", [(16, "auto"), (32, "auto"), (16, "random")])
def test_digits_beyond_eight_are_exact(batch_size, init):
    """The joint fit stalled from B = 16 on; the per-sample search finds
    every sample (measured: worst relative error ~1e-13 at B = 32)."""
    batch = load_digits_batch(batch_size, random_state=0)[0]
    rec, q = _fit(batch, init=init)
    err, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == rec.n_found_ == batch_size
    assert rec.found_.all() and rec.found_.shape == (batch_size,)
    assert np.all(perm >= 0) and np.max(err) <= 1e-6
    assert rec.gradient_residual_ <= 1e-9
    assert np.max(rec.sample_misfits_) < 1e-10
    assert rec.solver_ == "column_space_search"
    assert batch_size <= rec.n_starts_ <= 4 * batch_size + 16
    # on an exact gradient B random starts find the batch: "auto" did not
    # need the moment tensor
    assert rec.moments_.moment_tensor_ is None


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_piecewise_linear_digits_of_32_are_exact(activation):
    """ReLU and leaky ReLU at B = 32: the samples read off differences of
    neighbouring neurons' rows, the search and the pattern iteration give
    every sample (measured: worst relative error ~1e-12)."""
    batch = load_digits_batch(32, random_state=0)[0]
    rec, q = _fit(batch, activation=activation)
    err, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == rec.n_found_ == 32 and rec.found_.all()
    assert np.all(perm >= 0) and np.max(err) <= 1e-6
    assert rec.gradient_residual_ <= 1e-9
    assert 32 <= rec.n_starts_ <= 4 * 32 + 16


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_piecewise_linear_without_a_bias_gives_every_direction(activation):
    """ReLU and leaky ReLU without a bias, B = 16: the neighbouring rows'
    differences as unit vectors (both signs) and a search that keeps its
    start's norm give every direction exactly (before: none of eight
    digits; measured 32 of 32 in 7 s)."""
    batch = load_digits_batch(16, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=WIDTH, activation=activation, bias="none",
                            random_state=0)
    with pytest.warns(IdentifiabilityWarning, match="The norm of each sample is not "
                                                    "identifiable"):
        rec = GradientReconstructor(activation=activation, random_state=0).fit(
            q.grad, **q.fit_params)
    assert rec.n_found_ == 16 and rec.found_.all() and not rec.scale_identified_.any()
    cos, perm = matched_cosine(batch, rec.samples_)
    assert np.all(perm >= 0) and np.min(cos) >= 1 - 1e-12
    assert rec.gradient_residual_ <= 1e-9


def test_too_few_starts_give_a_flagged_partial_answer_and_a_warning(digits8):
    q = make_gradient_query(digits8, n_neurons=WIDTH, bias="gaussian", random_state=0)
    rec = GradientReconstructor(bias=True, init="random", n_init=2, max_starts=2,
                                random_state=0)
    with pytest.warns(Warning, match=r"Only \d of 8 samples were found in 2 searches"):
        rec.fit(q.grad, **q.fit_params)
    assert rec.n_found_ < 8 and rec.n_starts_ == 2
    assert rec.found_.sum() == rec.n_found_ and not rec.converged_
    assert rec.samples_.shape == (8, 64)  # the rows not found are best guesses
    err, _ = relative_error(digits8, rec.samples_)
    assert np.sum(err <= 1e-6) >= rec.n_found_


def test_verbose_prints_one_line_per_stage_and_sample(digits8, capsys):
    batch = digits8[:4]
    q = make_gradient_query(batch, n_neurons=4000, bias="gaussian", random_state=0)
    GradientReconstructor(bias=True, random_state=0, verbose=2).fit(q.grad, **q.fit_params)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("span: batch size 4, spectral gap")
    assert sum(line.startswith("search: sample ") for line in out) == 4
    assert "search: sample 4/4 found" in "\n".join(out)
    # found: each row fits the column space to round-off and its first-order
    # error bound is within the stated precision (skrecon._certificate)
    assert any(line.startswith("done: 4 of 4 samples with misfit below 1.0e-10 and "
                               "an error bound within 1e-06")
               for line in out)


def test_progress_callback_sees_every_stage(digits8):
    q = make_gradient_query(digits8[:3], n_neurons=3000, bias="gaussian", random_state=0)
    calls = []
    GradientReconstructor(bias=True, random_state=0)._fit(
        q.grad, q.weights, q.output_weights, progress=lambda *a: calls.append(a))
    stages = [c[0] for c in calls]
    assert stages[0] == "span" and stages[-1] == "done"
    assert {"starts", "search", "polish"} <= set(stages)
    assert ("search", 3, 3) in calls


def test_progress_labels_the_attempts_of_a_noisy_fit(digits8):
    """A noisy fit that searches again from scratch labels the new
    attempt's stages (a progress bar that starts over says why)."""
    from skrecon.defenses import GaussianGradientNoise

    q = make_gradient_query(digits8[:4], n_neurons=3000, random_state=0)
    grad = GaussianGradientNoise(scale=0.1, relative=True, random_state=0).fit_transform(
        q.grad)
    stages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GradientReconstructor(bias=True, random_state=0)._fit(
            grad, q.weights, q.output_weights, progress=lambda s, d, t: stages.append(s))
    assert stages[0] == "span" and stages[-1] == "done"
    assert "search" in stages and "search (attempt 2 of 4)" in stages
    assert stages.index("search") < stages.index("search (attempt 2 of 4)")


def test_nearly_parallel_distinct_samples_are_both_found():
    """Two samples 0.3 degrees apart (one a 1.01 x copy of the other) are
    distinct and identifiable; deflation removes the first's zero, so the
    second is not mistaken for a repeat."""
    batch = load_digits_batch(3, random_state=0)[0]
    batch = np.vstack([batch, 1.01 * batch[:1]])
    rec, _ = _fit(batch, n_neurons=2000)
    assert rec.n_found_ == 4
    # the two are parallel in pixel space (the cosine matching of
    # relative_error ties): match by distance instead
    distance = np.linalg.norm(batch[:, None, :] - rec.samples_[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(distance)
    relative = distance[rows, cols] / np.linalg.norm(batch[rows], axis=1)
    assert np.max(relative) <= 1e-6


def test_a_layer_too_narrow_flags_no_sample_as_found(digits8):
    q = make_gradient_query(digits8, n_neurons=12, bias="gaussian", random_state=0)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "The layer has 12 neurons (with a nonzero output weight) for 8 samples "
            "with 1 output(s)")):
        rec = GradientReconstructor(bias=True, random_state=0, max_starts=8).fit(
            q.grad, **q.fit_params)
    assert rec.n_found_ == 0 and not rec.found_.any()


@pytest.mark.parametrize("noise", [1e-8, 1e-4])
def test_batch_size_above_the_spectrum_flags_the_extra_rows(digits8, noise):
    # four samples, batch_size=6: the two extra rows fit the noise directions,
    # and the acceptance level, set by the span's conditioning over all six
    # (the noise's singular values), flagged them found (break-it)
    from sklearn.exceptions import ConvergenceWarning

    from skrecon.defenses import GaussianGradientNoise
    from skrecon.moments import BatchSizeWarning

    batch = digits8[:4]
    q = make_gradient_query(batch, n_neurons=4000, bias="gaussian", random_state=0)
    grad = GaussianGradientNoise(scale=noise, relative=True,
                                 random_state=0).fit_transform(q.grad)
    with pytest.warns(BatchSizeWarning, match=re.escape(
            "n_components (batch_size)=6 exceeds the batch size the gradient's "
            "spectrum shows (4, ")) as caught:
        rec = GradientReconstructor(bias=True, random_state=0, batch_size=6).fit(
            grad, **q.fit_params)
    assert not any(w.category is ConvergenceWarning for w in caught)
    errors, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == 6 and rec.n_found_ == 4
    assert rec.found_[perm].all()  # the four true samples, found
    assert errors.max() <= 10 * noise  # measured 7.5e-9, 8.3e-5


def test_batch_size_below_the_spectrum_warns(digits8):
    from skrecon.moments import BatchSizeWarning
    q = make_gradient_query(digits8, n_neurons=2000, bias="gaussian", random_state=0)
    with pytest.warns(BatchSizeWarning, match=re.escape(
            "n_components (batch_size)=6 is below the batch size the gradient's "
            "spectrum shows (8, ")) as caught:
        rec = GradientReconstructor(bias=True, random_state=0, batch_size=6).fit(
            q.grad, **q.fit_params)
    # and only that: the ratio 1.8 at B = 6 is no noise floor (a second
    # warning said the weakest samples were at one, of an exact gradient)
    assert [w.category for w in caught].count(BatchSizeWarning) == 1
    assert "GradientReconstructor flags no row as found" in str(caught[0].message)
    # six samples cannot explain it: no row is one (all six were flagged
    # found, with errors up to 0.12)
    assert rec.batch_size_ == 6 and rec.n_found_ == 0 and not rec.converged_


def test_a_wrong_activation_is_named_as_the_cause(digits8):
    """In a search over activations the wrong one finds nothing; its warning
    points at the model (activation, bias, output_weights), not at width."""
    q = make_gradient_query(digits8, n_neurons=WIDTH, bias="gaussian", random_state=0)
    rec = GradientReconstructor(activation="sigmoid", bias=True, random_state=0)
    with pytest.warns(ConvergenceWarning, match=re.escape(
            "the model does not match the gradient. Check activation (here "
            "'sigmoid'), bias and output_weights (and loss)")):
        rec.fit(q.grad, **q.fit_params)
    assert rec.n_found_ == 0 and not rec.found_.any()
    assert rec.gradient_residual_ > 0.01


def test_verbose_one_is_one_progress_line_through_the_polish(digits8, capsys):
    """verbose=1 prints nothing on stdout; on stderr one line that updates
    (carriage returns, no newlines) through the span, the search and the
    steps of the joint polish."""
    q = make_gradient_query(digits8, n_neurons=WIDTH, bias="gaussian", random_state=0)
    rec = GradientReconstructor(bias=True, random_state=0, verbose=1,
                                init="random", max_starts=4)
    # 4 starts for 8 samples: the joint polish runs from 4 guessed rows (it
    # may or may not reach all 8: the line goes through it either way)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rec.fit(q.grad, **q.fit_params)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "\n" not in captured.err.strip("\n")
    for stage in ("span: 1/1", "search (samples found): ", "polish"):
        assert stage in captured.err
