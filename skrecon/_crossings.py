"""Starts for piecewise-linear activations from neighbouring neurons' rows.

With ReLU (or leaky ReLU) ``sigma'`` is piecewise constant, and for a single
output (``K = 1``) row ``j`` of the projected gradient divided by the
neuron's output weight is

    r_j = P_j / a_j = sum_i u_i sigma'(omega_j . v_i + b0) v_i,

a sum over the batch whose terms switch with the neuron's activation
pattern. Two neurons whose patterns differ in one sample ``i`` only give
``r_j - r_k = (jump of sigma') u_i v_i``: the sample itself, up to scale, and
the bias coordinate (``e . v_i = c``) fixes the scale and the sign exactly.
This is the principle of the "imprint" layers of Fowl et al. [1]_ (the
difference of two neurons' gradients that one sample separates), here on
the random neurons of the query: neurons close in weight space straddle few
of the samples' hyperplanes, so the differences of nearest neighbours (in
``Omega``) hold every sample many times, each repeat the same vector.

:func:`crossing_starts` ranks the candidate vectors by how often they
repeat, and keeps the distinct ones at which the (unsmoothed) column-space
misfit already vanishes: samples, not starts to be searched from. For an
exact gradient every sample of a digits batch of 32 is among them (B = 48:
all but one); the search engine then accepts them without a homotopy, and
the pattern iteration makes the batch exact.

References
----------
.. [1] L. Fowl, J. Geiping, W. Czaja, M. Goldblum, T. Goldstein, "Robbing
   the Fed: Directly Obtaining Private Data in Federated Learning with
   Modified Models", ICLR 2022.
"""

import numpy as np
from sklearn.neighbors import NearestNeighbors

from ._misfit import DUPLICATE_ANGLE_PIECEWISE, is_repeat

__all__ = []

# nearest neighbours in weight space per neuron (each pair gives a candidate)
_NEIGHBOURS = 6
# neurons the neighbour search runs on: its cost grows as their square, the
# pairs that one sample separates too, and their share falls with the batch
# size (B = 32 digits: 31 of 32 samples from 8000 neurons)
_MIN_ROWS = 2000
_ROWS_PER_SAMPLE = 250
_MAX_ROWS = 20000
# candidates screened by the misfit, per sample of the batch
_SCREEN_PER_SAMPLE = 8
# candidates within this relative distance count as one (exact gradient)
_CLUSTER_TOL = 1e-7


def crossing_starts(P, Omega, A, slopes, bias_mean, fixed, *, n_samples, rows,
                    Q, accept, noise_level=0.0, random_state=None):
    """Samples read off differences of neighbouring neurons' gradient rows.

    Parameters
    ----------
    P, Omega : ndarray of shape (m, n_dims)
        Projected gradient and weights (span coordinates).
    A : ndarray of shape (m, 1)
        Output weights (a single output).
    slopes : callable
        ``slopes(t, second=False)[0]`` is ``sigma'(t)`` (piecewise constant).
    bias_mean : float
        Constant part of the pre-activation.
    fixed : tuple (e, c) or None
        The bias constraint ``e . v = c`` of every sample (scale and sign);
        ``None`` without a bias: the candidates are unit vectors, of both
        signs.
    n_samples : int
        Samples in the batch.
    rows : ndarray of int
        Neurons the candidates are screened on; ``Q`` is an orthonormal
        basis of ``col(P[rows])``.
    Q : ndarray of shape (len(rows), n_dims)
    accept : float
        A candidate whose misfit on ``rows`` is below this is kept.
    noise_level : float, default=0.0
        Relative noise of the gradient: widens the tolerance within which
        two candidates count as one.
    random_state : numpy.random.Generator
        Draws the neurons of the neighbour search (a subset of
        ``250 n_samples`` of them, at least 2000 and at most 20000) and the
        hashing direction.

    Returns
    -------
    starts : ndarray of shape (n_starts, n_dims)
        Distinct candidates with misfit below ``accept``, most repeated
        first (possibly none).
    """
    rng = random_state
    m, n = P.shape
    a = A[:, 0]
    live = np.flatnonzero(np.abs(a) > 1e-6 * np.max(np.abs(a)))
    n_rows = min(_MAX_ROWS, max(_MIN_ROWS, _ROWS_PER_SAMPLE * n_samples))
    if len(live) > n_rows:
        live = np.sort(rng.choice(live, n_rows, replace=False))
    k = min(_NEIGHBOURS, len(live) - 1)
    if k < 1:
        return np.empty((0, n))
    R = P[live] / a[live, None]
    # (kneighbors without a query leaves each neuron out of its own list)
    nearest = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(
        Omega[live]).kneighbors(return_distance=False)
    D = (R[:, None, :] - R[nearest]).reshape(-1, n)
    norms = np.linalg.norm(D, axis=1)
    ok = norms > 1e-9 * np.max(norms, initial=0.0)
    if fixed is not None:
        e, c = np.asarray(fixed[0], dtype=float), float(fixed[1])
        ed = D @ e
        ok &= np.abs(ed) > 1e-6 * norms
        if not np.any(ok):
            return np.empty((0, n))
        V = D[ok] * (c / ed[ok])[:, None]
    else:
        # without a bias only the direction is identifiable: unit vectors,
        # with the sign that a random direction picks (both signs screened)
        if not np.any(ok):
            return np.empty((0, n))
        V = D[ok] / norms[ok, None]
        V *= np.where(V @ rng.standard_normal(n) < 0, -1.0, 1.0)[:, None]
    # repeats of one vector: equal keys along a random direction
    spread = float(np.median(np.linalg.norm(V, axis=1)))
    width = max(_CLUSTER_TOL, 10.0 * noise_level) * spread
    keys = np.round(V @ rng.standard_normal(n) / width)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    top = first[np.argsort(-counts, kind="stable")[:_SCREEN_PER_SAMPLE * n_samples]]
    V = V[top] if fixed is not None else np.vstack([V[top], -V[top]])
    # the unsmoothed misfit of every candidate at once (K = 1)
    Y = slopes(Omega[rows] @ V.T + bias_mean, second=False)[0] * A[rows]
    residual = Y - Q @ (Q.T @ Y)
    with np.errstate(invalid="ignore", divide="ignore"):
        misfit = np.sum(residual ** 2, axis=0) / np.sum(Y ** 2, axis=0)
    starts = []
    cos_dup = np.cos(np.radians(DUPLICATE_ANGLE_PIECEWISE))
    for v in V[misfit < accept]:
        if not is_repeat(v, starts, cos_dup):
            starts.append(v / np.linalg.norm(v))
    if not starts:
        return np.empty((0, n))
    S = np.array(starts)
    return S if fixed is None else S * (c / (S @ e))[:, None]
