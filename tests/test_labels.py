"""Labels read off the per-sample signals (skrecon/_labels.py), and loss="auto"."""

import re

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon._labels import infer_labels, looks_like_cross_entropy
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import match_samples
from skrecon.reconstructor import IdentifiabilityWarning


def _signals(loss, n_outputs, n_samples=4, seed=0):
    batch, labels = load_digits_batch(n_samples, random_state=seed)
    targets = labels % n_outputs if loss == "cross_entropy" else None
    q = make_gradient_query(batch, targets, n_neurons=20, n_outputs=n_outputs,
                            loss=loss, random_state=seed)
    return q.signals, q.targets


def test_auto_reads_cross_entropy_labels_whatever_the_global_scale():
    U, labels = _signals("cross_entropy", 10)
    for scale in (1.0, -0.3, 250.0):  # learning rate, sign ambiguity, sum reduction
        got, loss, n_unlike, _ = infer_labels(scale * U, "auto")
        np.testing.assert_array_equal(got, labels)
        assert (loss, n_unlike) == ("cross_entropy", 0)


def test_auto_reads_nothing_from_squared_loss_signals():
    U, _ = _signals("squared", 3)
    assert not looks_like_cross_entropy(U).all()
    n_unlike = int(np.sum(~looks_like_cross_entropy(U)))
    assert infer_labels(U, "auto") == (None, None, n_unlike, 0)


def test_two_outputs_never_give_labels():
    U, _ = _signals("cross_entropy", 2)
    assert infer_labels(U, "auto")[0] is None
    assert infer_labels(U, "cross_entropy")[0] is None


def test_one_unlike_row_is_a_guess_and_a_majority_stops_auto():
    U, labels = _signals("cross_entropy", 5)
    U = U.copy()
    U[0] = [1.0, 2.0, -0.5, 3.0, 0.1]  # one odd sign, but sums to 5.6
    got, loss, n_unlike, _ = infer_labels(U, "auto")
    assert (loss, n_unlike) == ("cross_entropy", 1)
    np.testing.assert_array_equal(got[1:], labels[1:])
    half = U.copy()
    half[1] = [1.0, 2.0, -0.5, 3.0, 0.1]  # two of four: not a majority
    assert infer_labels(half, "auto")[:3] == (None, None, 2)
    # judged on the trusted rows only
    assert infer_labels(half, "auto", trusted=[False, False, True, True])[1] == \
        "cross_entropy"
    got, loss, n_unlike, _ = infer_labels(U, "cross_entropy")
    assert (loss, n_unlike) == ("cross_entropy", 1)
    np.testing.assert_array_equal(got[1:], labels[1:])
    assert got[0] == 2  # the odd coordinate, a guess
    assert infer_labels(U, "squared") == (None, "squared", 0, 0)


def test_default_loss_auto_fills_labels_and_says_so(capsys):
    batch, labels = load_digits_batch(3, random_state=0)
    q = make_gradient_query(batch, labels, n_neurons=2000, n_outputs=10,
                            loss="cross_entropy", random_state=0)
    rec = GradientReconstructor(bias=True, random_state=0, verbose=2)
    assert rec.get_params()["loss"] == "auto"
    rec.fit(q.grad, **q.fit_params)
    assert rec.loss_ == "cross_entropy"
    permutation = match_samples(batch, rec.samples_)
    np.testing.assert_array_equal(np.asarray(rec.labels_)[permutation], labels)
    assert ("[GradientReconstructor] loss='auto': inferred softmax cross-entropy, "
            "labels read off the signals") in capsys.readouterr().out


def test_cross_entropy_warns_with_the_number_of_unlike_signals():
    batch, _ = load_digits_batch(3, random_state=0)
    q = make_gradient_query(batch, n_neurons=2000, n_outputs=3, random_state=0)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "3 of 3 recovered signals do not look like softmax cross-entropy")):
        rec = GradientReconstructor(bias=True, loss="cross_entropy",
                                    random_state=0).fit(q.grad, **q.fit_params)
    assert rec.labels_ is not None
    auto = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    assert auto.labels_ is None and auto.loss_ is None


def test_near_one_hot_signals_with_noisy_small_coordinates():
    """A trained net's confident samples: the other coordinates are 1e-9 of
    the label's, below the signals' round-off, with random signs; the label
    still carries half of the 1-norm. A confidently wrong sample ties two
    coordinates at half: the batch's sign decides where it is known."""
    rng = np.random.default_rng(0)
    labels = np.array([3, 0, 7, 7, 1])
    P = 10.0 ** rng.uniform(-12, -4, (5, 10))  # the other classes' softmax
    P[np.arange(5), labels] = 1.0
    P[4, 1], P[4, 6] = 1e-8, 1.0  # sample 4 (label 1) predicted 6 with p ~ 1
    P /= P.sum(axis=1, keepdims=True)
    U = (P - np.eye(10)[labels]) / 5
    # recovered to 1e-6 of each signal's 1-norm: the coordinates below that
    # take random signs
    U = U + 1e-6 * np.abs(U).sum(axis=1, keepdims=True) * rng.standard_normal(U.shape)
    assert looks_like_cross_entropy(U).all()
    for scale in (1.0, -2.0):  # the global scale's sign is read off the batch
        got, loss, n_unlike, n_ambiguous = infer_labels(scale * U, "auto")
        np.testing.assert_array_equal(got, labels)
        assert (loss, n_unlike, n_ambiguous) == ("cross_entropy", 0, 0)
    # the old rule (exactly one coordinate of odd sign) read none of them
    from skrecon._labels import _odd_coordinate
    assert [_odd_coordinate(u) for u in U].count(-1) >= 1
    # signs not identified (each row its own sign): the tie is ambiguous
    flipped = U * np.array([1, -1, 1, -1, -1])[:, None]
    got, _, _, n_ambiguous = infer_labels(flipped, "auto", sign_known=np.zeros(5, bool))
    # (a correct sample whose error mass sits in one other class ties too)
    assert 1 <= n_ambiguous and np.sum(got != labels) <= n_ambiguous
    assert got[4] in (1, 6)
