"""reconstruct_overcomplete: batches with more samples than their rank."""

import re

import numpy as np
import pytest

from skrecon.clients import make_gradient_query
from skrecon.exceptions import IdentifiabilityWarning
from skrecon.metrics import relative_error
from skrecon.overcomplete import reconstruct_overcomplete


def _query(B, d=8, m=4000, bias="gaussian", seed=0):
    batch = np.random.default_rng(seed).standard_normal((B, d))
    return batch, make_gradient_query(batch, n_neurons=m, bias=bias, random_state=seed)


@pytest.mark.parametrize("B", [10, 11])
def test_batch_beyond_rank_is_recovered(B):
    # d = 8 with the bias: rank 9, so B = 10 and 11 are 1 and 2 beyond it
    batch, q = _query(B)
    res = reconstruct_overcomplete(q.grad, weights=q.weights,
                                   output_weights=q.output_weights, batch_size=B,
                                   random_state=0)
    assert res.rank == 9
    assert res.samples.shape == (B, 8)
    assert res.found.shape == (B,) and res.found.all()
    err, perm = relative_error(batch, res.samples)
    assert np.all(perm >= 0)
    assert err.max() < 1e-8
    assert res.gradient_residual < 1e-10
    # the signals of the 2-layer squared-loss net, matched to the batch:
    # row perm[i] of the result is sample i
    assert np.allclose(res.signals[perm, 0], q.signals[:, 0], rtol=1e-6, atol=0)


def test_zero_bias_with_even_derivative_is_refused():
    _, q = _query(10, m=500, bias="zero")
    with pytest.raises(ValueError, match="cannot tell x from -x"):
        reconstruct_overcomplete(q.grad, weights=q.weights, batch_size=10)


def test_batch_within_rank_is_refused():
    _, q = _query(6)
    msg = ("batch_size=6 does not exceed the gradient's rank 6: the samples are (or "
           "may be) linearly independent; use skrecon.GradientReconstructor, whose "
           "per-sample search certifies each row.")
    with pytest.raises(ValueError, match=re.escape(msg)):
        reconstruct_overcomplete(q.grad, weights=q.weights, batch_size=6)


def test_bad_inputs():
    _, q = _query(10, m=500)
    with pytest.raises(ValueError, match="weights must have the shape of X"):
        reconstruct_overcomplete(q.grad, weights=q.weights[:, :-1], batch_size=10)
    with pytest.raises(ValueError, match=r"one output .* got shape \(500, 2\)"):
        reconstruct_overcomplete(q.grad, weights=q.weights, batch_size=10,
                                 output_weights=np.ones((500, 2)))
    with pytest.raises(ValueError, match="needs a smooth activation"):
        reconstruct_overcomplete(q.grad, weights=q.weights, batch_size=10,
                                 activation="relu")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2"):
        reconstruct_overcomplete(q.grad, weights=q.weights, batch_size=1.5)


def test_search_out_of_reach_warns_and_returns_nothing():
    # one step of one start cannot satisfy the tuple condition
    batch, q = _query(12)
    with pytest.warns(IdentifiabilityWarning, match="found no 4 samples"):
        res = reconstruct_overcomplete(q.grad, weights=q.weights,
                                       output_weights=q.output_weights, batch_size=12,
                                       max_starts=1, max_nfev=1, random_state=0)
    assert res.samples.shape == (0, 8)
    assert res.found.shape == (0,)
    assert res.gradient_residual == 1.0


def test_batch_size_too_high_flags_the_rows_the_gradient_does_not_need():
    # 10 samples given as 11: one row came back 2.2e3 off its nearest sample
    # with a signal of round-off, flagged found (a tester: breast cancer
    # B = 32 given 33, a sample split in two rows, all flagged found)
    batch, q = _query(10)
    with pytest.warns(IdentifiabilityWarning,
                      match=re.escape("The gradient is explained by fewer than "
                                      "batch_size=11 samples: rows [0] carry no signal")):
        res = reconstruct_overcomplete(q.grad, weights=q.weights,
                                       output_weights=q.output_weights, batch_size=11,
                                       random_state=0)
    assert res.samples.shape == (11, 8)
    assert int(res.found.sum()) == 10
    err, perm = relative_error(batch, res.samples[res.found])
    assert np.all(perm >= 0) and err.max() < 1e-8


def test_float32_gradient_is_refused():
    _, q = _query(10, m=500)
    with pytest.raises(ValueError, match=re.escape(
            "reconstruct_overcomplete needs a float64 gradient exact to its own "
            "round-off")):
        reconstruct_overcomplete(q.grad.astype(np.float32), weights=q.weights,
                                 output_weights=q.output_weights, batch_size=10)
