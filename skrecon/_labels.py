"""Labels from the per-sample signals ``u_i`` of a softmax cross-entropy.

With softmax cross-entropy the signal reaching the output is
``u_i = c (softmax(f(x_i)) - e_{y_i})`` for a global scale ``c`` (``1/B``,
the learning rate, a sign): its coordinates sum to zero, and the label's is
the only one whose sign differs from all the others. Both properties survive
the global scale and the sign ambiguity of a bias-free first layer, so
``loss="auto"`` reads the labels when every recovered signal has them.
"""

import numpy as np

__all__ = []

# |sum_k u_ik| <= _SUM_TOL * sum_k |u_ik|: "the coordinates sum to ~0". A
# cross-entropy signal recovered from an exact gradient sums to ~1e-12 of
# its 1-norm, one from a noisy gradient to its relative error; a squared
# loss's residuals come within 1 % rarely (3 outputs: a few per cent of
# samples), and every sample of the batch must.
_SUM_TOL = 0.01


def _odd_coordinate(u):
    """The coordinate whose sign differs from all others, or -1."""
    positive = u > 0
    n_pos = int(np.sum(positive))
    if n_pos == 1:
        return int(np.argmax(u))
    if n_pos == len(u) - 1 and np.all(u != 0):
        return int(np.argmin(u))
    return -1


def looks_like_cross_entropy(U):
    """Which rows of ``U`` (B, K) look like softmax cross-entropy signals:
    exactly one coordinate of odd sign, coordinates summing to ~0. ``K < 3``
    never does (with two outputs the odd coordinate is not defined)."""
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2 or U.shape[1] < 3:
        return np.zeros(len(U), dtype=bool)
    odd = np.array([_odd_coordinate(u) >= 0 for u in U], dtype=bool)
    l1 = np.sum(np.abs(U), axis=1)
    balanced = np.abs(U.sum(axis=1)) <= _SUM_TOL * np.maximum(l1, np.finfo(float).tiny)
    return odd & balanced & (l1 > 0)


def infer_labels(U, loss):
    """``(labels or None, loss_, n_unlike)`` from the signals ``U`` (B, K).

    ``loss`` is the estimator's parameter: ``"auto"`` reads labels when
    every row looks like a cross-entropy signal (``loss_`` is then
    ``"cross_entropy"``, else ``None``); ``"cross_entropy"`` reads them
    whatever the rows look like (``n_unlike`` rows do not, and their label
    is the coordinate of largest magnitude, a guess); ``"squared"`` and
    ``None`` read none. Fewer than 3 outputs: no labels.
    """
    U = np.asarray(U, dtype=np.float64)
    like = looks_like_cross_entropy(U)
    if loss == "auto":
        if U.shape[1] < 3 or len(U) == 0 or not like.all():
            return None, None, int(np.sum(~like))
        loss = "cross_entropy"
    if loss != "cross_entropy" or U.shape[1] < 3:
        return None, loss, 0
    labels = np.empty(len(U), dtype=np.int64)
    for i, u in enumerate(U):
        odd = _odd_coordinate(u)
        labels[i] = odd if odd >= 0 else int(np.argmax(np.abs(u)))
    return labels, "cross_entropy", int(np.sum(~like))
