"""Labels of the found rows of a partial batch (issue 23, image patches)."""

from types import SimpleNamespace

import numpy as np

from skrecon._labels import found_signals, infer_labels
from skrecon.activations import get_activation


def _problem(rng, m=400, B=6, K=8):
    """A tanh layer in span coordinates: ``P = sum_k (sigma'(Omega v_k + b)
    * (A u_k)) v_k^T`` with softmax cross-entropy signals ``u_k``."""
    Omega = rng.standard_normal((m, B))
    A = rng.standard_normal((m, K))
    V = rng.standard_normal((B, B)) / np.sqrt(B)
    logits = 3 * rng.standard_normal((B, K))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, K, B)
    U = p - np.eye(K)[labels]
    slopes = 1 - np.tanh(Omega @ V.T + 0.1) ** 2  # (m, B)
    P = ((A @ U.T) * slopes) @ V
    return SimpleNamespace(P=P, Omega=Omega, A=A, bias_mean=0.1), V, U, labels


def test_found_rows_get_their_exact_signals_back():
    rng = np.random.default_rng(0)
    proj, V, U, labels = _problem(rng)
    found = np.array([True, True, True, False, True, False])
    # the joint least-squares signals of a partial batch: contaminated
    noisy = U + 0.3 * rng.standard_normal(U.shape) * np.abs(U).max(axis=1, keepdims=True)
    noisy[1] *= -1  # a found row whose least-squares sign came out wrong
    Vfit = V.copy()
    Vfit[~found] = rng.standard_normal((2, V.shape[1]))  # the rows not found: guesses
    out = found_signals(noisy, found, Vfit, proj, get_activation("tanh"))
    cos = np.sum(out * U, axis=1) / np.linalg.norm(out, axis=1) / np.linalg.norm(U, axis=1)
    # one cross-entropy sign for all (the wrong row's corrected)
    np.testing.assert_allclose(cos[found], 1.0, atol=1e-10)  # measured 1 - 2e-16
    np.testing.assert_array_equal(out[~found], noisy[~found])  # untouched
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(noisy, axis=1))
    read, loss, _, _ = infer_labels(out, "auto", trusted=found)
    assert loss == "cross_entropy"
    np.testing.assert_array_equal(read[found], labels[found])
    # the contaminated signals alone read none
    assert infer_labels(noisy, "auto", trusted=found)[0] is None


def test_a_complete_batch_or_few_outputs_keep_their_signals():
    rng = np.random.default_rng(1)
    proj, V, U, _ = _problem(rng)
    tanh = get_activation("tanh")
    np.testing.assert_array_equal(found_signals(U, np.ones(6, bool), V, proj, tanh), U)
    np.testing.assert_array_equal(found_signals(U, np.zeros(6, bool), V, proj, tanh), U)
    proj2 = SimpleNamespace(P=proj.P, Omega=proj.Omega, A=proj.A[:, :2], bias_mean=0.1)
    np.testing.assert_array_equal(
        found_signals(U[:, :2], np.r_[True, False, True, True, True, True], V, proj2, tanh),
        U[:, :2])
