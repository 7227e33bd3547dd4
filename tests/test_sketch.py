"""The span of a wide gradient from a random sketch (skrecon._sketch).

Each test compares the sketched span with the full factorisation (QR and
SVD of the whole gradient) that gradients with fewer live columns than
``_span._SKETCH_MIN_COLUMNS`` get, on the same query.
"""

import warnings
from dataclasses import replace

import numpy as np
import pytest

from skrecon import GradientReconstructor, MomentTensorTransformer, _span
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_sample_image_patches
from skrecon.metrics import relative_error


def _query(B=8, m=2000, patch=10, **kwargs):
    batch = load_sample_image_patches(B, patch_size=patch, random_state=0)
    return batch, make_gradient_query(batch, n_neurons=m, weight_std=0.1,
                                      bias="gaussian", random_state=0, **kwargs)


def _fit(q, full=False, monkeypatch=None, **params):
    if full:
        monkeypatch.setattr(_span, "_SKETCH_MIN_COLUMNS", 10**9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MomentTensorTransformer(bias=True, **params).fit(
                q.grad, weights=q.weights, output_weights=q.output_weights)
    finally:
        if full:
            monkeypatch.undo()


def _angle(A, B):
    """Sine of the largest principal angle between the row spaces of the
    orthonormal rows A and B (the part of A outside B's row space)."""
    return float(np.linalg.norm(A - (A @ B.T) @ B, 2))


def test_sketched_span_matches_the_full_factorisation(monkeypatch):
    batch, q = _query()
    assert q.grad.shape == (2000, 301)  # wide enough for the sketch
    sketch = _fit(q)
    full = _fit(q, full=True, monkeypatch=monkeypatch)
    assert sketch.n_components_ == full.n_components_ == 8
    # the sketch reports its leading values only; the full spectrum all 301
    assert sketch.singular_values_.shape == (_span._SKETCH_COLUMNS,)
    assert full.singular_values_.shape == (301,)
    np.testing.assert_allclose(sketch.singular_values_[:8], full.singular_values_[:8],
                               rtol=1e-11)
    # beyond the batch: round-off in both
    assert sketch.singular_values_[8] < 1e-14 * sketch.singular_values_[0]
    assert _angle(sketch.components_, full.components_) < 1e-9
    assert sketch.spectral_gap_ > 1e6
    assert sketch.noise_level_ < 1e-13
    aug = np.hstack([batch, np.ones((8, 1))])
    resid = aug - (aug @ sketch.components_.T) @ sketch.components_
    assert np.abs(resid).max() < 1e-10 * np.abs(aug).max()


def test_given_batch_size_sketches_beyond_it(monkeypatch):
    _, q = _query()
    sketch = _fit(q, n_components=8)
    assert sketch.singular_values_.shape == (8 + _span._SKETCH_SPARE,)
    full = _fit(q, full=True, monkeypatch=monkeypatch, n_components=8)
    assert _angle(sketch.components_, full.components_) < 1e-9


def test_batch_beyond_the_first_sketch_doubles_it():
    # 100 samples: the first sketch (96 columns) has no round-off floor
    _, q = _query(B=100, m=3000, patch=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the span only: no moment tensor
        sketch = MomentTensorTransformer(bias=True).fit(q.grad)
    assert sketch.n_components_ == 100
    assert sketch.singular_values_.shape == (2 * _span._SKETCH_COLUMNS,)
    assert sketch.singular_values_[100] < 1e-13 * sketch.singular_values_[0]


def test_noisy_gradient_falls_back_to_the_full_spectrum(monkeypatch):
    _, q = _query()
    rng = np.random.default_rng(0)
    noisy = q.grad + 1e-3 * np.abs(q.grad).mean() * rng.standard_normal(q.grad.shape)
    q_noisy = replace(q, grad=noisy)
    sketch = _fit(q_noisy)
    full = _fit(q_noisy, full=True, monkeypatch=monkeypatch)
    # no round-off floor: the whole spectrum, as the full factorisation gives
    assert sketch.singular_values_.shape == (301,)
    np.testing.assert_allclose(sketch.singular_values_, full.singular_values_,
                               rtol=1e-12)
    assert sketch.n_components_ == full.n_components_ == 8


def test_reconstruction_from_the_sketched_span_is_exact():
    batch, q = _query(B=16, m=4000)
    rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    err, perm = relative_error(batch, rec.samples_)
    assert rec.moments_.singular_values_.shape == (_span._SKETCH_COLUMNS,)
    assert np.all(perm >= 0) and rec.n_found_ == 16
    assert err.max() < 1e-10


def test_sketched_span_on_array_api_strict(monkeypatch):
    xs = pytest.importorskip("array_api_strict")
    device = xs.Device("device1")
    _, q = _query()

    def strict(a):
        return xs.asarray(np.asarray(a), device=device)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mt = MomentTensorTransformer(bias=True).fit(
            strict(q.grad), weights=strict(q.weights),
            output_weights=strict(q.output_weights))
    ref = _fit(q)
    host = np.asarray(mt.components_.to_device(xs.Device("CPU_DEVICE")))
    assert mt.n_components_ == 8
    assert _angle(host, ref.components_) < 1e-9
