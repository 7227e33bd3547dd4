"""The query type (skrecon/query.py) and its public import paths."""

import numpy as np
import pytest

import skrecon.clients
import skrecon.query
from skrecon.datasets import load_digits_batch
from skrecon.query import GradientQuery


def test_one_class_under_both_import_paths():
    assert skrecon.clients.GradientQuery is skrecon.query.GradientQuery
    assert GradientQuery.__module__ == "skrecon.query"
    assert "GradientQuery" in skrecon.clients.__all__
    assert skrecon.query.__all__ == ["GradientQuery"]


def test_loss_value_of_a_cross_entropy_query_with_a_hidden_layer():
    batch, labels = load_digits_batch(3, random_state=0)
    q = skrecon.clients.make_gradient_query(
        batch, labels, n_neurons=7, n_outputs=10, loss="cross_entropy",
        hidden_layers=[(5, "sigmoid")], reduction="sum", random_state=0)
    (w1, b1), (w2, b2), (w3, b3) = [(lay["weight"], lay["bias"]) for lay in q.layers]
    h = 1 / (1 + np.exp(-(np.tanh(batch @ w1.T + b1) @ w2.T + b2)))
    f = h @ w3.T + b3
    log_softmax = f - np.log(np.exp(f).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(3), labels].sum()
    assert q.loss_value() == pytest.approx(expected, rel=1e-12)


def test_a_query_built_by_hand_has_no_loss():
    q = GradientQuery(grad=np.ones((4, 3)), weights=np.ones((4, 3)),
                      output_weights=np.ones((4, 1)))
    assert (q.n_neurons, q.has_bias, q.batch_size) == (4, False, None)
    assert q.estimator_params == {"bias": False}
    with pytest.raises(ValueError, match="read off a model: its targets and loss"):
        q.loss_value()
