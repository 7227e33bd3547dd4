"""A batch with more samples than the gradient has columns (issue 24's
d = 8, B = 12): the estimator says so, flags no row as found, and does not
advise a wider layer."""

import re
import warnings
from dataclasses import replace

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.exceptions import BatchSizeWarning


def _overcomplete_query():
    batch = np.random.default_rng(0).standard_normal((12, 8))
    return batch, make_gradient_query(batch, n_neurons=4000, bias="gaussian",
                                      random_state=0)


def test_batch_beyond_the_columns_is_reported():
    _, q = _overcomplete_query()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    messages = [str(w.message) for w in caught]
    rank = [m for m in messages if m.startswith("The gradient has full column rank")]
    assert len(rank) == 1
    assert rank[0].startswith(
        "The gradient has full column rank: all 9 singular values of its distinct "
        "nonzero columns are above round-off")
    assert "the batch has at least 9 samples" in rank[0]
    assert "A wider layer cannot help" in rank[0]
    assert not any("query a wider layer" in m for m in messages)
    assert not any("no clear gap" in m for m in messages)  # the specific one only
    assert any(m.startswith("No row of samples_ is flagged found") for m in messages)
    assert rec.n_found_ == 0 and not rec.found_.any()


def test_given_batch_beyond_the_columns_raises():
    _, q = _overcomplete_query()
    message = ("n_components (batch_size)=12 exceeds the 9 distinct nonzero columns of "
               "the gradient (shape (4000, 9)): its rank is at most 9, so a batch of 12 "
               "samples is linearly dependent and its span identifies none of them. A "
               "wider layer cannot help")
    with pytest.raises(ValueError, match=re.escape(message)):
        GradientReconstructor(bias=True, batch_size=12).fit(q.grad, **q.fit_params)


def test_white_noise_is_not_taken_for_a_large_batch():
    batch, _ = load_digits_batch(4, random_state=0)
    q = make_gradient_query(batch, n_neurons=4000, bias="gaussian", random_state=0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(q.grad.shape)
    noisy = q.grad + 1e-3 * np.linalg.norm(q.grad) / np.linalg.norm(noise) * noise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(bias=True, random_state=0).fit(
            replace(q, grad=noisy).grad, **q.fit_params)
    assert rec.batch_size_ == 4
    assert not any(issubclass(w.category, BatchSizeWarning)
                   and "full column rank" in str(w.message) for w in caught)


def test_linearly_dependent_batch_is_named_when_the_search_fails():
    """12 samples of rank 6 in 20 dimensions: the exact gradient has rank 7
    (with the bias), fewer than its columns; no search succeeds, and the
    warning names dependent samples besides the usual advice."""
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((12, 6)) @ rng.standard_normal((6, 20)) * 0.3
    q = make_gradient_query(batch, n_neurons=2000, bias="gaussian", random_state=0)
    with pytest.warns(Warning) as caught:
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert rec.batch_size_ == 7 and rec.n_found_ == 0
    messages = [str(w.message) for w in caught]
    assert any(re.search(
        r"The gradient's spectrum falls to round-off after 7 values: if the batch has "
        r"more than 7 samples, they are linearly dependent \(of rank 7", m)
        for m in messages)
