"""Reconstruction at trained weights (DESIGN F9): any FedSGD round leaks.

A small PyTorch classifier trained on digits (full-batch Adam until its
softmax is near one-hot on most samples) and a held-out batch: the batch
and its labels come back from the gradient at the trained weights, in
float64 exactly, in float32 to float32 precision on every row flagged
found (the others named in a warning).
"""

import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from skrecon import GradientReconstructor  # noqa: E402
from skrecon.exceptions import IdentifiabilityWarning, NonGaussianWeightsWarning  # noqa: E402
from skrecon.metrics import relative_error  # noqa: E402
from skrecon.torch import first_layer_query, labels_from_output_layer  # noqa: E402

N_NEURONS = 256


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x, y = data.data / 16.0, data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[300:900]], y[order[300:900]], x[order[:300]], y[order[:300]]


def _train(digits, dtype, hidden=(N_NEURONS,), steps=100):
    """Full-batch Adam on 600 digits (learning rate 1e-2, 100 steps): 100 %
    training accuracy, most held-out softmax outputs within 1e-3 of one-hot."""
    x, y = digits[0], digits[1]
    torch.manual_seed(0)
    sizes = (64,) + hidden
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 10)).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small products: threads only contend (10x)
    try:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model


def _step(model, batch, labels):
    model.zero_grad()
    dtype = next(model.parameters()).dtype
    nn.functional.cross_entropy(model(torch.as_tensor(batch, dtype=dtype)),
                                torch.as_tensor(labels)).backward()
    return first_layer_query(model)


def _batch(digits, n, seed=0):
    pick = np.random.default_rng(seed).choice(len(digits[2]), n, replace=False)
    return digits[2][pick], digits[3][pick]


@pytest.fixture(scope="module")
def model64(digits):
    return _train(digits, torch.float64)


@pytest.fixture(scope="module")
def model32(digits):
    return _train(digits, torch.float32)


@pytest.mark.parametrize("batch_size", [8, 16])
def test_a_trained_float64_model_gives_the_batch_and_its_labels(digits, model64,
                                                                batch_size):
    batch, labels = _batch(digits, batch_size)
    q = _step(model64, batch, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(activation=q.activation, bias=q.has_bias,
                                    random_state=0).fit(q.grad, **q.fit_params)
    # trained weights are not Gaussian: only a tensor start, where it ran, says so
    assert all(rec.moments_.moment_tensor_ is not None for w in caught
               if issubclass(w.category, NonGaussianWeightsWarning))
    errors, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == batch_size and rec.n_found_ == batch_size
    assert np.max(errors) <= 1e-6, errors
    assert rec.loss_ == "cross_entropy"
    np.testing.assert_array_equal(np.asarray(rec.labels_)[perm], labels)


def test_a_trained_float32_model_flags_only_rows_within_float32_precision(digits,
                                                                         model32):
    batch, labels = _batch(digits, 8)
    q = _step(model32, batch, labels)
    assert q.grad.dtype == np.float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(activation=q.activation, bias=q.has_bias,
                                    random_state=0).fit(q.grad, **q.fit_params)
    errors, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == 8 and np.all(perm >= 0)
    found = np.asarray(rec.found_)[perm]
    assert found.sum() >= 1
    assert np.max(errors[found]) <= 1e-4, errors
    weak = [str(w.message) for w in caught if "do not bound their errors by 1e-4" in str(w.message)]
    if not found.all():
        # every row not found is named, with its signal share
        assert len(weak) == 1
        named = [int(i) for i in re.search(r"Rows \[([0-9, ]+)\]", weak[0])[1].split(",")]
        assert sorted(named) == sorted(np.flatnonzero(~np.asarray(rec.found_)).tolist())
    assert rec.loss_ == "cross_entropy"
    np.testing.assert_array_equal(np.asarray(rec.labels_)[perm][found], labels[found])


def test_a_deeper_net_says_why_labels_are_none_and_the_output_layer_gives_them(digits):
    model = _train(digits, torch.float64, hidden=(N_NEURONS, 32))
    batch, labels = _batch(digits, 8)
    q = _step(model, batch, labels)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "labels_ is None: 8 of 8 recovered signals do not look like softmax "
            "cross-entropy")):
        rec = GradientReconstructor(activation=q.activation, bias=q.has_bias,
                                    random_state=0).fit(q.grad, **q.fit_params)
    assert rec.labels_ is None
    errors, perm = relative_error(batch, rec.samples_)
    assert np.max(errors) <= 1e-6, errors
    result = labels_from_output_layer(model, rec.samples_)
    np.testing.assert_array_equal(result.labels[perm], labels)


def test_a_layer_too_narrow_is_refused_before_the_search_naming_the_width():
    # 16 samples, 10 outputs, 64 neurons: below max(5 B, 2 (B + K)) = 80 the
    # search is not run (at trained weights 64 neurons found none, after 18 s)
    from skrecon.clients import make_gradient_query
    from skrecon.datasets import load_digits_batch
    batch, labels = load_digits_batch(16, random_state=0)
    q = make_gradient_query(batch, labels, n_neurons=64, n_outputs=10,
                            loss="cross_entropy", random_state=0)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "The layer has 64 neurons (with a nonzero output weight) for 16 samples "
            "with 10 output(s): the column-space search finds samples from about "
            "max(5 B, 2 (B + K)) = 80 neurons")) as record:
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert any("Query a layer of at least 80 neurons" in str(w.message) for w in record)
    assert rec.batch_size_ == 16 and rec.n_found_ == 0 and rec.n_starts_ == 0
    assert rec.refinement_.status == -3
