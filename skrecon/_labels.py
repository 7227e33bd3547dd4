"""Labels from the per-sample signals ``u_i`` of a softmax cross-entropy.

With softmax cross-entropy the signal reaching the output is
``u_i = c (softmax(f(x_i)) - e_{y_i})`` for a scale ``c`` (``1/B``, the
learning rate, a sign): its coordinates sum to zero, and the label's
coordinate ``c (p_y - 1)`` is minus the sum of all the others, ``c p_k``:
it carries exactly half of ``||u_i||_1``, with the sign opposite to theirs.
Both properties are read to a tolerance, so they survive what the sign
count of the coordinates does not: a trained net's near one-hot outputs
give coordinates ``c p_k`` of 1e-9 of the label's, below the signals'
round-off (float64 at trained weights: 1e-9; float32: 1e-4), whose signs
are then noise.

The label is the coordinate of largest magnitude (it holds half the 1-norm,
every other at most as much) -- except for a confidently *wrong* sample
(``p_k ~ 1`` for one ``k != y``), whose two coordinates ``c (p_y - 1)`` and
``c p_k`` tie: there the sign of ``c`` decides (the label's is ``-sign(c)``).
``sign(c)`` is the batch's (one global scale) where the first layer fixes
each sample's sign, read off all of them at once: ``sum_k u_k**3`` has the
sign of ``-c`` for every cross-entropy signal (``sum_{k != y} p_k^3 <=
(1 - p_y)^3``). Where a sample's sign is not identified, a tie is decided by
the other coordinates' sign when they stand above the tolerance, and is
otherwise ambiguous (counted, a guess).
"""

import numpy as np
from scipy import linalg

from ._array_api import to_host

__all__ = []

# |sum_k u_ik| <= _SUM_TOL * sum_k |u_ik|, and the largest |u_ik| within
# _SUM_TOL of half of that sum: "a cross-entropy signal". A signal
# recovered from an exact gradient meets both to ~1e-9 at trained weights,
# float32 ones to ~1e-3; a squared loss's residuals come within 1 % rarely
# (3 outputs: a few per cent of samples), and every sample of the batch must.
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


def _normalised(U):
    """``U`` with each row divided by its 1-norm (zero rows stay zero)."""
    U = np.asarray(U, dtype=np.float64)
    l1 = np.sum(np.abs(U), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(l1 > 0, U / np.where(l1 > 0, l1, 1.0), 0.0)


def looks_like_cross_entropy(U):
    """Which rows of ``U`` (B, K) look like softmax cross-entropy signals:
    coordinates summing to ~0 and one of them carrying ~half of the 1-norm
    (to ``_SUM_TOL``). ``K < 3`` never does (with two outputs every
    zero-sum signal does)."""
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2 or U.shape[1] < 3:
        return np.zeros(len(U), dtype=bool)
    N = _normalised(U)
    nonzero = np.any(N != 0, axis=1)
    balanced = np.abs(N.sum(axis=1)) <= _SUM_TOL
    half = np.abs(np.max(np.abs(N), axis=1) - 0.5) <= _SUM_TOL
    return balanced & half & nonzero


def _global_sign(N):
    """``sign(c)`` of cross-entropy signals ``N`` (rows of one scale ``c``):
    ``-sign(sum u**3)``; 0 where that sum vanishes (every row a tie)."""
    total = float(np.sum(N ** 3))
    return 0 if total == 0 else (-1 if total > 0 else 1)


def _read(N, sign):
    """``(label, ambiguous)`` of one normalised cross-entropy signal, given
    the sign of its scale (0: unknown)."""
    order = np.argsort(-np.abs(N), kind="stable")
    top, second = int(order[0]), int(order[1])
    if sign != 0:
        return int(np.argmin(sign * N)), False
    if abs(N[second]) < 0.5 - _SUM_TOL:
        return top, False
    # a tie (a confidently wrong sample): the other coordinates share the
    # sign of c, when they stand above the tolerance
    rest = np.delete(N, [top, second]).sum()
    if abs(rest) > _SUM_TOL:
        return (top if np.sign(N[top]) != np.sign(rest) else second), False
    return top, True


def infer_labels(U, loss, sign_known=None, trusted=None):
    """``(labels or None, loss_, n_unlike, n_ambiguous)`` from the signals
    ``U`` (B, K).

    ``loss`` is the estimator's parameter: ``"auto"`` reads labels when
    more than half of the judged rows look like cross-entropy signals
    (``loss_`` is then ``"cross_entropy"``, else ``None``; the others'
    labels are guesses, counted in ``n_unlike``); ``"cross_entropy"`` reads them
    whatever the rows look like (``n_unlike`` rows do not, and their label
    is the coordinate of odd sign, or of largest magnitude: a guess);
    ``"squared"`` and ``None`` read none. Fewer than 3 outputs: no labels.
    ``sign_known`` (bool, ``(B,)``; ``None``: all) says which rows share
    one global scale (their sign identified by the first layer); the others
    may each carry their own sign. ``n_ambiguous`` rows are ties whose
    label no sign decides (guesses). ``trusted`` (bool, ``(B,)``; ``None``:
    all) are the rows ``"auto"`` decides on (the rows found: a row at the
    round-off carries a signal off by as much as the row is).
    """
    U = np.asarray(U, dtype=np.float64)
    like = looks_like_cross_entropy(U)
    if loss == "auto":
        judged = (np.ones(len(U), dtype=bool) if trusted is None or not np.any(trusted)
                  else np.asarray(trusted, dtype=bool))
        # most of the judged rows: a row at the round-off, or a found row
        # whose signal is its weak part (float32), may miss the tolerance
        if U.shape[1] < 3 or len(U) == 0 or 2 * np.sum(like[judged]) <= np.sum(judged):
            return None, None, int(np.sum(~like[judged])), 0
        loss = "cross_entropy"
    if loss != "cross_entropy" or U.shape[1] < 3:
        return None, loss, 0, 0
    N = _normalised(U)
    known = (np.ones(len(U), dtype=bool) if sign_known is None
             else np.asarray(sign_known, dtype=bool))
    sign = _global_sign(N[known & like]) if np.any(known & like) else 0
    labels = np.empty(len(U), dtype=np.int64)
    n_ambiguous = 0
    for i, u in enumerate(N):
        if not like[i]:
            odd = _odd_coordinate(u)
            labels[i] = odd if odd >= 0 else int(np.argmax(np.abs(u)))
            continue
        labels[i], ambiguous = _read(u, sign if known[i] else 0)
        n_ambiguous += ambiguous
    return labels, "cross_entropy", int(np.sum(~like)), n_ambiguous


def found_signals(U, found, V, proj, activation):
    """``U`` (B, K) with each found row's signal read off its own
    column-space fit, where some samples were not found.

    The joint least-squares signals of a partial batch carry the missing
    samples' share of the gradient: found rows exact to 1e-10 had signals
    whose coordinates summed to 0.4 of their 1-norm (32 trained-tanh image
    patches, 21 found), and no label was read. A found sample ``v`` is exact
    on its own: ``S = sigma'(Omega v + b) * A`` maps its signal into the
    gradient's column space, so the signal is the null vector of
    ``(I - Q Q^T) S`` (the ``u`` of least relative misfit, a ``K x K``
    generalised eigenproblem), whatever the other samples. Each such row
    keeps its norm; its sign is the cross-entropy one (every signal
    ``c (p - e_y)`` has ``sign(sum u^3) = -sign(c)``, one ``c`` for the
    batch, whose sign is the one the least-squares signals agree on most:
    a found row's own least-squares sign was wrong for 7 of 21 patches), or,
    for a tie (``sum u^3 ~ 0``), its least-squares one. ``V`` (B, n)
    holds the samples in span coordinates, in ``U``'s order; ``proj`` the
    projected query (``P``, ``Omega``, ``A``, ``bias_mean``)."""
    U = np.asarray(U, dtype=np.float64)
    found = np.asarray(found, dtype=bool)
    if U.ndim != 2 or U.shape[1] < 3 or found.all() or not found.any():
        return U
    P, Omega, A = (np.asarray(to_host(a), dtype=np.float64)
                   for a in (proj.P, proj.Omega, proj.A))
    Q = np.linalg.qr(P)[0]
    out = U.copy()
    rows, units = [], []
    for i in np.flatnonzero(found):
        slopes = np.asarray(activation.derivative(Omega @ V[i] + proj.bias_mean, 1),
                            dtype=np.float64)
        S = slopes[:, None] * A
        R = S - Q @ (Q.T @ S)
        try:
            u = linalg.eigh(R.T @ R, S.T @ S, subset_by_index=[0, 0])[1][:, 0]
        except (np.linalg.LinAlgError, ValueError):
            continue  # (a singular S^T S: the least-squares signal stays)
        if not np.all(np.isfinite(u)) or not np.any(u):
            continue
        rows.append(i)
        units.append(u / np.linalg.norm(u))
    if not rows:
        return out
    units = np.array(units)
    cubes = np.sum(units ** 3, axis=1)
    # -sign(sum u^3): each row's sign in one cross-entropy scale, a tie
    # (|sum u^3| at round-off of the row's cubes) excepted
    tie = np.abs(cubes) <= 1e-8 * np.sum(np.abs(units) ** 3, axis=1)
    cross = np.where(cubes > 0, -1.0, 1.0)
    own = np.where(np.sum(units * U[rows], axis=1) >= 0, 1.0, -1.0)
    agree = np.sum((cross[:, None] * units * U[rows]).sum(axis=1)[~tie])
    overall = 1.0 if agree >= 0 else -1.0
    signs = np.where(tie, own, overall * cross)
    out[rows] = (signs[:, None] * units) * np.linalg.norm(U[rows], axis=1)[:, None]
    return out
