"""Issue 6's table: every registry activation, and what each cannot identify."""

import re
import warnings

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon._identifiability import moment_weights
from skrecon.activations import ACTIVATIONS, Activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import matched_cosine, relative_error
from skrecon.reconstructor import IdentifiabilityWarning

ORDER = {"tanh": 3, "sigmoid": 3, "erf": 3, "elu": 3,
         "relu": 4, "leaky_relu": 4, "gelu": 4, "silu": 4, "softplus": 4}


@pytest.fixture(scope="module")
def digits8():
    return load_digits_batch(8, random_state=0)[0]


def test_table_covers_the_registry():
    assert set(ORDER) == set(ACTIVATIONS) - {"identity"}


@pytest.mark.parametrize("name", sorted(ORDER))
def test_every_activation_with_gaussian_bias_is_exact(name, digits8):
    """Digits, B = 8, m = 20 000, Gaussian bias: every sample to <= 1e-6
    (measured 1e-11 .. 1e-14), with the tensor order of DESIGN F3."""
    q = make_gradient_query(digits8, n_neurons=20000, activation=name,
                            bias="gaussian", random_state=0)
    rec = GradientReconstructor(activation=name, bias=True, random_state=0)
    rec.fit(q.grad, **q.fit_params)
    assert rec.order_ == ORDER[name]
    assert rec.batch_size_ == 8
    err, perm = relative_error(digits8, rec.samples_)
    assert np.all(perm >= 0)
    assert np.max(err) <= 1e-6
    assert rec.sign_identified_.all() and rec.scale_identified_.all()


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_scale_free_without_bias_gives_unit_directions(name):
    """ReLU-type without bias: (x, u) and (c x, u / c) give the same
    gradient. Unit-norm samples, scale_identified_ False, a warning that
    names the activation and the reason."""
    batch = load_digits_batch(4, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=20000, activation=name, bias="none",
                            random_state=0)
    rec = GradientReconstructor(activation=name, bias=False, random_state=0)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            f"The norm of each sample is not identifiable: activation {name!r} has "
            "a scale-free derivative and the first layer has no bias")):
        rec.fit(q.grad, **q.fit_params)
    assert not rec.scale_identified_.any()
    assert rec.sign_identified_.all()  # sigma' is not even: the sign is seen
    np.testing.assert_allclose(np.linalg.norm(rec.samples_, axis=1), 1.0, rtol=1e-12)
    cos, perm = matched_cosine(batch, rec.samples_)
    assert np.all(perm >= 0) and np.min(cos) >= 0.9999


def test_identity_names_the_activation_and_the_reason():
    batch = load_digits_batch(2, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=500, activation="identity", random_state=0)
    with pytest.raises(ValueError, match=r"'identity'.*reveals only the span"):
        GradientReconstructor(activation="identity", bias=True).fit(q.grad, **q.fit_params)


def test_custom_activation_from_callables():
    """A user's activation: sigma and its first two derivatives, elementwise
    on arrays (the documented signature of Activation)."""
    def scaled_tanh(t):
        return np.tanh(2 * t)

    def d1(t):
        return 2 / np.cosh(2 * t) ** 2

    def d2(t):
        return -8 * np.tanh(2 * t) / np.cosh(2 * t) ** 2

    custom = Activation("tanh2", scaled_tanh, (d1, d2))
    batch = load_digits_batch(4, random_state=1)[0]
    q = make_gradient_query(batch, n_neurons=5000, activation=custom, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdentifiabilityWarning)
        rec = GradientReconstructor(activation=custom, bias=True, random_state=0)
        rec.fit(q.grad, **q.fit_params)
    assert rec.order_ == 3
    assert np.max(relative_error(batch, rec.samples_)[0]) <= 1e-6


def test_a_sample_whose_moment_weight_vanishes_is_reported():
    """mu_order evaluated at each recovered norm: moment_weights_ holds it,
    and a sample where it (nearly) vanishes is named in a warning."""
    batch = load_digits_batch(3, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=3000, random_state=0)
    rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    tanh = ACTIVATIONS["tanh"]
    assert rec.moment_weights_.shape == (3,)
    assert np.all(np.isfinite(rec.moment_weights_)) and np.all(rec.moment_weights_ != 0)

    weakest = int(np.argmin(np.linalg.norm(rec.samples_, axis=1)))

    class VanishesAtSmallest(Activation):
        """tanh whose mu_3 is zero at the smallest recovered norm."""

        def mu(self, k, tau, mean=0.0):
            values = np.array(tanh.mu(k, tau, mean), dtype=float)
            if k == 3:
                values[np.argmin(tau)] = 0.0
            return values

    fake = VanishesAtSmallest("tanh", tanh.function, tanh.derivatives,
                              even_derivative=True)
    proj = rec.moments_._fit(q.grad, q.weights, q.output_weights)
    # (the text of the IdentifiabilityWarning that the estimator issues)
    weights, messages = moment_weights(fake, np.asarray(rec.samples_), proj, order=3,
                                       bias=True, bias_std=rec.moments_.bias_std_,
                                       bias_mean=rec.moments_.bias_mean_)
    assert len(messages) == 1
    assert re.match(re.escape(
        f"mu_3 nearly vanishes at the recovered norm of sample(s) [{weakest}] "
        "(activation 'tanh')"), messages[0])
    assert weights[weakest] == 0
    np.testing.assert_allclose(np.delete(weights, weakest),
                               np.delete(rec.moment_weights_, weakest), rtol=1e-12)
