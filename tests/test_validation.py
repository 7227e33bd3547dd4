"""Validation of gradient queries (skrecon/_validation.py): early, clear errors."""

import re

import numpy as np
import pytest

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon._validation import check_query
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch


@pytest.fixture(scope="module")
def batch():
    return load_digits_batch(3, random_state=0)[0]


def test_a_zero_bias_column_without_bias_asks_for_bias_true(batch):
    q = make_gradient_query(batch, n_neurons=500, bias="zero", random_state=0)
    for est in (GradientReconstructor(), MomentTensorTransformer()):
        with pytest.raises(ValueError, match=re.escape(
                "The last column of weights is constant (0 for every neuron): it "
                "looks like the first layer's bias, but "
                f"{type(est).__name__} has bias=False and would treat it as an "
                "input's Gaussian weights. Did you mean bias=True?")):
            est.fit(q.grad, **q.fit_params)


def test_a_gaussian_bias_column_without_bias_asks_for_bias_true(batch):
    q = make_gradient_query(batch, n_neurons=500, bias="gaussian", random_state=0)
    with pytest.raises(ValueError, match=re.escape(
            "The last column of weights is Gaussian with std 0.483, 3.89 times that "
            "of the other columns (0.124): it looks like the first layer's bias")):
        GradientReconstructor().fit(q.grad, **q.fit_params)


@pytest.mark.parametrize("n_neurons", [30, 500, 20000])
def test_weights_without_a_bias_pass(batch, n_neurons):
    q = make_gradient_query(batch, n_neurons=n_neurons, bias="none", random_state=0)
    X, W, A = check_query(GradientReconstructor(), q.grad, q.weights, None, reset=True)
    assert W.shape == (n_neurons, 64)


def test_a_torch_module_points_to_first_layer_query():
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(4, 3)
    with pytest.raises(TypeError, match=re.escape(
            "X is a torch.nn.Module (Linear), not an array: fit takes the first "
            "layer's gradient and weights as arrays. Read them off the model after "
            "loss.backward() with skrecon.torch.first_layer_query: q = "
            "first_layer_query(model); rec.fit(q.grad, **q.fit_params).")):
        GradientReconstructor().fit(layer)
    with pytest.raises(TypeError, match=re.escape("weights is a torch.nn.Module")):
        GradientReconstructor().fit(np.ones((5, 4)), weights=torch.nn.Sequential(layer))


def test_one_dimensional_x_says_reshape():
    rec = GradientReconstructor()
    with pytest.raises(ValueError, match=re.escape(
            "got shape (3,). Reshape your data: pass the first layer's weight "
            "gradient as it is shaped")):
        rec.fit(np.ones(3))


def test_a_transposed_gradient_is_named():
    from skrecon import GradientReconstructor
    from skrecon.clients import make_gradient_query
    from skrecon.datasets import load_digits_batch

    batch, _ = load_digits_batch(4, random_state=0)
    q = make_gradient_query(batch, n_neurons=300, random_state=0)
    with pytest.raises(ValueError, match=re.escape(
            "X has 300 columns, as many as output_weights has rows: are X and "
            "weights transposed?")):
        GradientReconstructor(bias=True).fit(q.grad.T, weights=q.weights.T,
                                             output_weights=q.output_weights)
