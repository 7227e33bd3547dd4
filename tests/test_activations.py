"""Activations: derivatives, Gaussian moments mu_k, order selection (DESIGN F2-F3)."""

import numpy as np
import pytest
from scipy.stats import norm

from skrecon.activations import ACTIVATIONS, Activation, get_activation, select_tensor_order

NONLINEAR = [name for name in ACTIVATIONS if name != "identity"]


@pytest.mark.parametrize("name", NONLINEAR)
def test_first_derivative_matches_finite_differences(name):
    act = get_activation(name)
    t = np.linspace(-3, 3, 61) + 0.013  # away from the kink at 0
    h = 1e-6
    fd = (act(t + h) - act(t - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(t, 1), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NONLINEAR)
def test_mu_matches_monte_carlo(name):
    act = get_activation(name)
    rng = np.random.default_rng(0)
    tau, mean = 1.3, 0.4
    t = mean + tau * rng.standard_normal(2_000_000)
    for k in (1, 2):
        mc = act.derivative(t, k).mean()
        if k == 2 and name in ("relu", "leaky_relu"):
            # sigma'' is a Dirac mass: E[sigma''] = (1 - slope) * density at the kink
            slope = act.params.get("negative_slope", 0.0)
            mc = (1 - slope) * norm.pdf(0, loc=mean, scale=tau)
        assert act.mu(k, tau, mean) == pytest.approx(mc, abs=2e-3)


def test_relu_mu4_closed_form():
    # mu_k = He_{k-2}(c) phi(c) / tau^(k-1), c = -mean / tau, for sigma' = step
    act = get_activation("relu")
    tau, mean = 1.3, 0.4
    c = -mean / tau
    expected = (c * c - 1) * norm.pdf(c) / tau**3
    assert act.mu(4, tau, mean) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name, order", [
    ("tanh", 3), ("sigmoid", 3), ("erf", 3), ("elu", 3),
    ("relu", 4), ("leaky_relu", 4), ("gelu", 4), ("silu", 4), ("softplus", 4),
])
def test_order_selection_table(name, order):
    assert select_tensor_order(get_activation(name)) == order


def test_constant_bias_breaks_relu_parity():
    assert select_tensor_order(get_activation("relu"), bias_mean=0.5) == 3


def test_identity_is_not_identifiable():
    with pytest.raises(ValueError, match="reveals only the span of the batch"):
        select_tensor_order(get_activation("identity"))


def test_requested_order_that_vanishes():
    with pytest.raises(ValueError, match=r"order=3 is not identifiable .*'relu'.* Use order=4"):
        select_tensor_order(get_activation("relu"), order=3)


def test_custom_activation_and_unknown_name():
    cube = Activation("cube", lambda t: t**3, (lambda t: 3 * t**2, lambda t: 6 * t))
    assert get_activation(cube) is cube
    assert cube.mu(3, 1.0) == pytest.approx(6.0)  # sigma''' = 6
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        get_activation("swish")
    assert get_activation("leaky_relu", negative_slope=0.2).params["negative_slope"] == 0.2
