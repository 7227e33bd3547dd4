"""Tests of skrecon/_streaming.py and GradientReconstructor.partial_fit: a
gradient received in chunks of neurons."""

import re
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from skrecon import GradientReconstructor
from skrecon import _streaming
from skrecon._streaming import NeuronStream, _IncrementalSpan, _RowSample
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch, load_sample_image_patches
from skrecon.exceptions import BatchSizeWarning, BlindFitWarning
from skrecon.metrics import relative_error


def _chunks(m, sizes):
    edges = np.cumsum([0] + list(sizes))
    assert edges[-1] == m
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _stream_fit(q, chunks, **params):
    rec = GradientReconstructor(bias=True, random_state=0, **params)
    for k, rows in enumerate(chunks):
        rec.partial_fit(q.grad[rows], weights=q.weights[rows],
                        output_weights=q.output_weights[rows],
                        reconstruct=k == len(chunks) - 1)
    return rec


@pytest.fixture(scope="module")
def digits_query():
    batch, _ = load_digits_batch(6, random_state=0)
    q = make_gradient_query(batch, n_neurons=3000, bias="gaussian", random_state=0)
    return batch, q


def test_partial_fit_recovers_the_batch_of_fit(digits_query):
    batch, q = digits_query
    whole = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    streamed = _stream_fit(q, _chunks(3000, [700, 1300, 1000]))
    assert streamed.n_neurons_seen_ == 3000
    assert streamed.batch_size_ == whole.batch_size_ == 6
    assert streamed.n_found_ == 6 and bool(np.all(streamed.found_))
    err_whole, _ = relative_error(batch, whole.samples_)
    err_streamed, _ = relative_error(batch, streamed.samples_)
    assert err_whole.max() < 1e-9 and err_streamed.max() < 1e-9
    # the same batch, row for row (both in the canonical order)
    assert np.max(np.abs(streamed.samples_ - whole.samples_)) < 1e-8
    assert streamed.gradient_residual_ < 1e-10
    # the span and its spectrum of the whole gradient
    np.testing.assert_allclose(streamed.moments_.singular_values_[:6],
                               whole.moments_.singular_values_[:6], rtol=1e-10)


def test_partial_fit_searches_a_row_sample(digits_query, monkeypatch):
    # at most 1 000 neurons kept of 3 000 received: the batch still exact
    batch, q = digits_query
    monkeypatch.setattr(_streaming, "_MAX_ROWS", 1000)
    rec = _stream_fit(q, _chunks(3000, [400, 1600, 1000]))
    assert rec.n_neurons_seen_ == 3000
    assert rec._stream.rows()[0].shape == (1000, 65)
    err, perm = relative_error(batch, rec.samples_)
    assert np.all(perm >= 0) and err.max() < 1e-9
    assert rec.n_found_ == 6


def test_partial_fit_float32_chunks():
    batch, _ = load_digits_batch(4, random_state=1)
    q = make_gradient_query(batch, n_neurons=2000, bias="gaussian", random_state=1,
                            dtype=np.float32)
    rec = _stream_fit(q, _chunks(2000, [500, 1500]))
    assert rec.samples_.dtype == np.float32
    assert rec._stream.rows()[0].dtype == np.float32
    err, perm = relative_error(batch, rec.samples_)
    # float32 rows flagged found are within 1e-4 (the stated guarantee)
    assert np.all(perm >= 0) and err[perm >= 0].max() < 1e-4
    assert rec.n_found_ == 4


def test_partial_fit_chunk_shape_errors(digits_query):
    _, q = digits_query
    rec = GradientReconstructor(bias=True, random_state=0)
    rec.partial_fit(q.grad[:100], weights=q.weights[:100], reconstruct=False)
    msg = "X has 64 features, but GradientReconstructor is expecting 65 features as input."
    with pytest.raises(ValueError, match=re.escape(msg)):
        rec.partial_fit(q.grad[100:200, :-1], weights=q.weights[100:200, :-1])
    msg = ("output_weights has 2 column(s) but the earlier chunks' had 1: every chunk "
           "of neurons must come with the same outputs (n_neurons, n_outputs).")
    with pytest.raises(ValueError, match=re.escape(msg)):
        rec.partial_fit(q.grad[100:200], weights=q.weights[100:200],
                        output_weights=np.ones((100, 2)))
    msg = ("This chunk comes without weights, the earlier ones with: pass weights "
           "with every chunk")
    with pytest.raises(ValueError, match=re.escape(msg)):
        rec.partial_fit(q.grad[100:200])
    msg = "weights has shape (100, 65) but the gradient X has shape (50, 65)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        rec.partial_fit(q.grad[100:150], weights=q.weights[100:200])
    # the rejected chunks were not taken in
    assert rec.n_neurons_seen_ == 100


def test_fit_starts_the_stream_over(digits_query):
    batch, q = digits_query
    rec = GradientReconstructor(bias=True, random_state=0)
    rec.partial_fit(q.grad[:1000], weights=q.weights[:1000], reconstruct=False)
    rec.fit(q.grad, **q.fit_params)
    assert not hasattr(rec, "n_neurons_seen_") and rec._stream is None
    # a narrower gradient after fit: a new stream, not a shape error
    rec.set_params(bias=False)
    rec.partial_fit(q.grad[:50, :-1], weights=q.weights[:50, :-1], reconstruct=False)
    assert rec.n_neurons_seen_ == 50 and rec.n_features_in_ == 64


def test_partial_fit_without_weights_is_the_blind_estimate(digits_query):
    _, q = digits_query
    rec = GradientReconstructor(bias=True, random_state=0)
    with pytest.warns(BlindFitWarning):
        for rows in _chunks(3000, [1000, 2000]):
            rec.partial_fit(q.grad[rows])
    assert rec.solver_ == "cocktail_party" and rec.n_neurons_seen_ == 3000
    with pytest.warns(BlindFitWarning):
        whole = GradientReconstructor(bias=True, random_state=0).fit(q.grad)
    assert rec.batch_size_ == whole.batch_size_


def test_incremental_span_matches_the_full_factorisation():
    batch = load_sample_image_patches(12, patch_size=12, random_state=0)
    q = make_gradient_query(batch, n_neurons=2500, weight_std=0.1, random_state=0)
    X = q.grad
    span = _IncrementalSpan(X.shape[1], 1024)
    for rows in _chunks(2500, [5, 1495, 1000]):  # a first chunk below the rank
        span.update(X[rows], np.float64)
    with threadpool_limits(1):  # (two threads on a loaded two-core machine: 13 s)
        _, sv, vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(span.singular_values[:12], sv[:12], rtol=1e-10)
    # the directions above round-off, and 16 below that show the floor
    assert 12 + 16 <= len(span.singular_values) <= 12 + 16 + 5
    assert span.singular_values[12] < 1e-14 * sv[0]
    V = span.vectors()[:, :12]
    np.testing.assert_allclose(np.linalg.svd(V.T @ vt[:12].T, compute_uv=False), 1.0,
                               atol=1e-10)
    assert span.truncated == 0.0


def test_truncated_spectrum_warns():
    batch, _ = load_digits_batch(4, random_state=0)
    q = make_gradient_query(batch, n_neurons=500, random_state=0)
    noisy = q.grad + 1e-3 * np.abs(q.grad).max() * np.random.default_rng(0).standard_normal(
        q.grad.shape)
    stream = NeuronStream(65, random_state=0, max_components=20)
    for rows in _chunks(500, [250, 250]):  # the second one into a full dictionary
        stream.update(noisy[rows], q.weights[rows], q.output_weights[rows], np.float64)
    assert stream.span.truncated > 1e-6
    with pytest.warns(BatchSizeWarning, match="no round-off floor within the 20 "
                      "directions kept of its 65 columns"):
        live, vectors, sv, shape = stream.spectrum()
    assert vectors.shape == (65, 20) and shape == (500, 65) and len(sv) == 20


def test_row_sample_is_uniform_and_independent_of_chunking():
    # Algorithm R draws one number per row past the first `size`, whatever
    # the chunks: the kept rows are the same
    rows = np.arange(100, dtype=float)[:, None]
    kept = []
    for sizes in ([100], [3, 40, 57], [10] * 10):
        sample = _RowSample(7, np.random.default_rng(5))
        for chunk in _chunks(100, sizes):
            sample.update((rows[chunk],), np.float64)
        kept.append(sample.rows()[0][:, 0])
    assert len(np.unique(kept[0])) == 7
    np.testing.assert_array_equal(kept[0], kept[1])
    np.testing.assert_array_equal(kept[0], kept[2])
    # fewer rows than the sample's size: all of them, in order
    sample = _RowSample(7, np.random.default_rng(5))
    sample.update((rows[:4],), np.float64)
    np.testing.assert_array_equal(sample.rows()[0][:, 0], [0, 1, 2, 3])
    # each row is kept with probability size / n (2 000 seeds: within 5 sigma)
    counts = np.zeros(20)
    for seed in range(2000):
        sample = _RowSample(5, np.random.default_rng(seed))
        for chunk in _chunks(20, [6, 14]):
            sample.update((rows[chunk],), np.float64)
        counts[sample.rows()[0][:, 0].astype(int)] += 1
    sigma = np.sqrt(2000 * 0.25 * 0.75)
    assert np.all(np.abs(counts - 500) < 5 * sigma)


@pytest.mark.parametrize("sizes", [[6, 2994], [1] * 10 + [2990], [4] * 10 + [2960]],
                         ids=["first-chunk-of-B", "chunks-of-1", "chunks-of-4"])
def test_partial_fit_small_first_chunks_keep_the_round_off_floor(digits_query, sizes):
    # chunks of at most B neurons complete the span before any spare
    # direction below round-off is taken in: the spectrum then had no floor
    # and 8 digits were read as 3, 3 wrong rows flagged found (a tester)
    batch, q = digits_query
    rec = _stream_fit(q, _chunks(3000, sizes))
    assert rec.batch_size_ == 6
    assert rec.moments_.singular_values_.shape[0] > 6
    assert rec.n_found_ == 6
    errors, _ = relative_error(batch, rec.samples_)
    assert errors.max() < 1e-9


def test_partial_fit_refuses_noise_std(digits_query):
    _, q = digits_query
    rec = GradientReconstructor(bias=True)
    with pytest.raises(ValueError, match="partial_fit does not take noise_std: the known "
                       "round-off of a parameter update bounds the spectrum of the whole "
                       "gradient"):
        rec.partial_fit(q.grad[:100], weights=q.weights[:100],
                        output_weights=q.output_weights[:100], noise_std=1e-9)


def test_partial_fit_without_reconstruct_is_not_fitted(digits_query):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted
    _, q = digits_query
    rec = GradientReconstructor(bias=True).partial_fit(
        q.grad[:500], weights=q.weights[:500], output_weights=q.output_weights[:500],
        reconstruct=False)
    assert rec.n_neurons_seen_ == 500
    with pytest.raises(NotFittedError):
        check_is_fitted(rec)  # (n_neurons_seen_ alone passed it)
    with pytest.raises(NotFittedError):
        rec.transform(q.grad)
