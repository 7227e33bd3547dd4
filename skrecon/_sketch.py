"""The batch's span of a wide gradient by a randomized range finder.

The span of a gradient ``X`` (``m`` neurons by ``n`` inputs) is its row
space, of dimension ``B`` (the batch size). With ``n`` in the thousands
(image inputs) a full factorisation costs many passes over ``X``: a QR
(about three times the flops of the Gram matrix ``X^T X``) and then an SVD of
the ``n x n`` factor (another four or five passes, memory-bound). The
batch's span needs only ``O(m n B)``:

1. ``Y = X Omega`` for a Gaussian ``Omega`` of ``k`` columns (``k > B``):
   its column space is ``col(X)`` as soon as ``k`` exceeds the rank, which
   its own singular values show (they fall to round-off after the rank);
   while they do not, ``k`` doubles (the columns drawn are kept);
2. ``Q = orth(Y)``, ``Z = X^T Q`` (``n x k``): the right singular vectors
   and singular values of ``Z`` are those of ``X`` in ``col(Q)``, the
   Rayleigh-Ritz values; the top ``B`` are ``X``'s own to round-off, the
   ``k - B`` others are round-off of the directions outside the span.

Two thin products with ``X`` of ``k`` columns each: ``4 m n k`` flops,
against ``m n^2`` for the Gram matrix (``k = 96``, ``n = 3073``: a
sixteenth of it). A gradient whose spectrum never falls to round-off (a
noisy one) is not captured below ``max_columns``: the caller then
factorises it in full.

References
----------
.. [1] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with
   randomness: probabilistic algorithms for constructing approximate
   matrix decompositions", SIAM Review 53(2), 2011.
"""

import numpy as np

from ._array_api import from_host, to_host
from ._threads import blas_threads

__all__ = []


def sketched_span(X, n_columns, max_columns, captured, xp, device):
    """Right singular vectors and values of ``X`` in a captured sketch.

    Parameters
    ----------
    X : array of shape (m, n)
        The gradient (its live columns), in namespace ``xp``.
    n_columns : int
        Columns of the first sketch.
    max_columns : int
        Columns beyond which the sketch gives up (it is then no cheaper
        than a full factorisation).
    captured : callable
        ``captured(s)`` with ``s`` the singular values of the sketch ``Y``
        (host, decreasing): whether they show ``col(Y) = col(X)`` (a
        round-off floor well before the sketch's last column).
    xp, device
        The namespace and device of ``X``.

    Returns
    -------
    vectors : array of shape (n, k) or None
        Orthonormal right singular vectors of ``Q^T X`` (in ``xp``), in
        decreasing order of their singular values; ``None`` when no sketch
        of at most ``max_columns`` columns captured ``col(X)``.
    singular_values : ndarray of shape (k,) or None
        The Rayleigh-Ritz values ``s(Q^T X)`` (host), decreasing.
    """
    n = X.shape[1]
    # a fixed seed: the span (and the fit) do not depend on a random state
    rng = np.random.default_rng(0)
    k = min(n_columns, max_columns)
    Y, done = None, 0
    while True:
        omega = from_host(rng.standard_normal((n, k - done)), xp, device, dtype=X.dtype)
        block = X @ omega
        Y = block if Y is None else xp.concat([Y, block], axis=1)
        done = k
        # the thin factorisations on one BLAS thread: Householder steps are
        # memory-bound, and two threads on a loaded two-core machine made a
        # 20 000 x 192 QR 20 times slower (14.6 s against 0.66 s)
        with blas_threads(1):
            Q, R = xp.linalg.qr(Y)
            values = to_host(xp.linalg.svdvals(R))
        if captured(values):
            break
        if k >= max_columns:
            return None, None
        k = min(2 * k, max_columns)
    Z = X.T @ Q  # (n, k)
    with blas_threads(1):
        vectors, values, _ = xp.linalg.svd(Z, full_matrices=False)
    return vectors, to_host(values)
