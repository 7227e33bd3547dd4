"""A gradient streamed over chunks of neurons, in bounded memory.

A layer too wide to hold (``m = 100 000`` neurons of ``d = 12 288`` inputs
is 4.9 GB in float32, twice that in float64) arrives in chunks of neurons
(rows). Two things of the whole gradient are needed, and both fit in
memory whatever ``m``:

* **the span** (the gradient's row space) and its spectrum, from an
  incremental singular value decomposition: a fixed orthonormal dictionary
  ``D`` of directions in input space (``n x q``), grown only when a chunk
  shows directions above round-off outside it, and the small factor ``S``
  (``q x q``) with ``X^T X = D S^T S D^T`` for the rows seen. A chunk
  ``X_c`` costs two thin products, ``C = X_c D`` and ``E = X_c - C D^T``,
  and the singular value decomposition of ``[S; C]`` (``q`` columns);
  ``E`` is factorised only when it holds more than round-off. The spectrum
  keeps ``_SPARE`` directions below round-off, which show the round-off
  floor (and where the batch size ends), as the randomized range finder of
  :mod:`skrecon._sketch` does. ``D`` never rotates: the product ``D W`` is
  formed once, at the end;
* **a row subset**: a uniform random sample of at most ``max_rows``
  neurons (reservoir sampling, Algorithm R of [1]_), gradient, weights and
  output weights, in the input's dtype: the search and the polish run on
  it, as :func:`skrecon._core.reconstruct_in_span` runs its searches on a
  row subset of a gradient in memory (every neuron's row carries every
  sample, so a few thousand rows identify a batch of hundreds).

References
----------
.. [1] J. S. Vitter, "Random sampling with a reservoir", ACM Transactions on
   Mathematical Software 11(1), 1985.
.. [2] M. Brand, "Fast low-rank modifications of the thin singular value
   decomposition", Linear Algebra and its Applications 415(1), 2006.
"""

import warnings

import numpy as np

from ._span import effective_dtype
from ._threads import blas_threads
from .exceptions import BatchSizeWarning

__all__ = []

# neurons kept for the search by default: as many as the search of a batch
# of 128 uses on a gradient in memory (64 per unknown, see skrecon._core)
_MAX_ROWS = 8192
# directions of the span kept at most (beyond, a noisy gradient's spectrum
# is truncated, with a warning)
_MAX_COMPONENTS = 1024
# directions kept below the round-off floor: they show the floor
_SPARE = 16
# rows per block of a chunk (the block's residual E is block x n)
_BLOCK_ROWS = 1024
# a chunk adds a direction to the dictionary when its residual's singular
# value exceeds this many times the round-off floor (10 eps s_1): round-off
# of the products themselves stays below it
_NEW_DIRECTION = 10.0


def _floor(precision):
    """The relative round-off floor of a spectrum (``10 eps``, as
    :func:`skrecon.moments.estimate_batch_size` reads it)."""
    return 10 * np.finfo(precision).eps


class _IncrementalSpan:
    """The right singular vectors and values of a tall matrix, fed by
    blocks of rows (``update``), in ``O(n q)`` memory."""

    def __init__(self, n_cols, max_components):
        self.n_cols = n_cols
        self.max_components = min(n_cols, max_components)
        self.D = np.zeros((n_cols, 0))  # orthonormal dictionary
        self.S = np.zeros((0, 0))       # X^T X = D S^T S D^T
        self.singular_values = np.zeros(0)
        self.precision = np.dtype(np.float64)
        self.truncated = 0.0  # largest singular value of a direction left out

    def update(self, X, precision):
        """Fold the rows ``X`` (float64, ``(c, n)``) into the factorisation;
        ``precision``: the dtype whose round-off the rows carry."""
        if np.finfo(precision).eps > np.finfo(self.precision).eps:
            self.precision = np.dtype(precision)
        for start in range(0, X.shape[0], _BLOCK_ROWS):
            self._update_block(X[start:start + _BLOCK_ROWS])

    def _update_block(self, X):
        q = self.D.shape[1]
        C = X @ self.D
        E = X - C @ self.D.T if q else X
        s_ref = self.singular_values[0] if q else 0.0
        floor = _floor(self.precision)
        # directions outside the dictionary: E's singular values, when E
        # may hold more than round-off (its Frobenius norm bounds them)
        e_norm = float(np.linalg.norm(E))
        if q >= self.max_components and e_norm > _NEW_DIRECTION * floor * s_ref:
            # no room: only whether a direction above round-off is left out
            # (E's largest singular value is at least ||E||_F / sqrt(rank))
            largest = e_norm / np.sqrt(min(E.shape)) / s_ref
            if largest > _NEW_DIRECTION * floor:
                self.truncated = max(self.truncated, largest)
        elif (e_norm > _NEW_DIRECTION * floor * s_ref
              or q - int(np.sum(self.singular_values > floor * s_ref)) < _SPARE):
            # a block with directions above round-off outside the dictionary,
            # or the dictionary still short of its spare directions below
            # round-off: blocks of at most B rows (a first chunk of B
            # neurons, chunks of one neuron) complete the span with no room
            # left for them, and a spectrum without its floor reads the
            # batch size wrong (8 digits read as 3); round-off directions of
            # later blocks fill them in.
            # The factorisations on one BLAS thread (as in skrecon._sketch:
            # two threads on a loaded two-core machine, 12.7 s for this SVD
            # of a 1024 x 433 block, 0.1 s on one)
            with blas_threads(1):
                _, s_e, vt_e = np.linalg.svd(E, full_matrices=False)
            scale = max(s_ref, s_e[0] if len(s_e) else 0.0)
            # the first block seeds the dictionary with every direction above
            # the floor; later blocks add only directions clearly above it
            level = floor if q == 0 else _NEW_DIRECTION * floor
            new = int(np.sum(s_e > level * scale))
            n_floor = q - int(np.sum(self.singular_values > floor * scale))
            new = min(len(s_e), new + max(0, _SPARE - n_floor))
            room = self.max_components - q
            if new > room:
                if s_e[room] > level * scale:
                    # a direction above round-off left out (a noisy gradient)
                    self.truncated = max(self.truncated, float(s_e[room]) / scale)
                new = room
            if new:
                N = vt_e[:new].T
                # twice Gram-Schmidt against the dictionary, then orthonormal
                for _ in range(2):
                    N = N - self.D @ (self.D.T @ N)
                    with blas_threads(1):
                        N = np.linalg.qr(N)[0]
                C = np.hstack([C, X @ N])
                self.D = np.hstack([self.D, N])
                self.S = np.hstack([self.S, np.zeros((self.S.shape[0], new))])
        with blas_threads(1):
            _, s, wt = np.linalg.svd(np.vstack([self.S, C]), full_matrices=False)
        self.S = s[:, None] * wt
        self.singular_values = s

    def vectors(self):
        """The right singular vectors ``(n, q)``, in decreasing order of
        their singular values."""
        with blas_threads(1):
            _, _, wt = np.linalg.svd(self.S, full_matrices=False)
        return self.D @ wt.T


class _RowSample:
    """A uniform random sample of at most ``size`` rows of a stream of
    ``(X, W, A)`` chunks (reservoir sampling), in the chunks' dtype."""

    def __init__(self, size, rng):
        self.size = size
        self.rng = rng
        self.n_seen = 0
        self.arrays = None

    def update(self, arrays, dtype):
        """Fold in the rows of ``arrays`` (one row per neuron), kept in
        ``dtype`` (or a wider dtype of earlier chunks)."""
        c = arrays[0].shape[0]
        index = self.n_seen + np.arange(c)
        slots = np.full(c, -1)
        fill = index < self.size
        slots[fill] = index[fill]
        later = ~fill
        if np.any(later):
            # row t replaces slot j ~ U{0, ..., t} when j < size (Algorithm R)
            j = np.floor(self.rng.random(int(np.sum(later))) * (index[later] + 1))
            slots[later] = np.where(j < self.size, j, -1).astype(np.int64)
        if self.arrays is None:
            n_kept = min(self.size, c)
            self.arrays = [np.empty((n_kept,) + a.shape[1:], dtype=dtype)
                           for a in arrays]
        take = np.flatnonzero(slots >= 0)
        # a slot drawn twice in one chunk keeps the later row, as one row
        # after the other would
        _, last = np.unique(slots[take][::-1], return_index=True)
        take = take[::-1][last]
        needed = int(slots[take].max()) + 1 if take.size else 0
        for k, a in enumerate(arrays):
            kept = self.arrays[k]
            wide = np.result_type(kept.dtype, dtype)
            if kept.shape[0] < needed or kept.dtype != wide:
                grown = np.empty((max(needed, min(self.size, 2 * kept.shape[0])),)
                                 + kept.shape[1:],
                                 dtype=wide)
                grown[:kept.shape[0]] = kept
                kept = self.arrays[k] = grown
            kept[slots[take]] = a[take]
        self.n_seen += c

    def rows(self):
        n_kept = min(self.size, self.n_seen)
        return [a[:n_kept] for a in self.arrays]


class NeuronStream:
    """A first-layer gradient query received in chunks of neurons.

    Parameters
    ----------
    n_cols : int
        Columns of the gradient (inputs, with the bias).
    max_rows : int or None, default=None
        Neurons kept for the search (a uniform random sample); ``None``:
        ``_MAX_ROWS``.
    random_state : int
        Seed of the sample's draws.
    max_components : int or None, default=None
        Directions of the span kept at most; ``None``: ``_MAX_COMPONENTS``.
    """

    def __init__(self, n_cols, *, max_rows=None, random_state=0, max_components=None):
        self.span = _IncrementalSpan(
            n_cols, _MAX_COMPONENTS if max_components is None else max_components)
        # (a stream of its own: not the search's draws from the same seed)
        self.sample = _RowSample(_MAX_ROWS if max_rows is None else max_rows,
                                 np.random.default_rng([random_state, 1]))
        self.nonzero = np.zeros(n_cols, dtype=bool)
        self.n_outputs = None
        self.blind = None  # chunks without weights (the blind estimate)

    @property
    def n_seen(self):
        """Neurons (rows) received."""
        return self.sample.n_seen

    def update(self, X, W, A, input_dtype):
        """Fold one validated chunk in: ``X``, ``W`` float64 ``(c, n)``,
        ``A`` float64 ``(c, K)``; ``input_dtype``: the chunk's own dtype
        (the rows are kept in it). ``W = A = None``: a chunk for the blind
        estimate (only its rows are kept)."""
        blind = W is None
        if self.blind is None:
            self.blind = blind
        elif blind != self.blind:
            raise ValueError(
                "This chunk comes " + ("without" if blind else "with")
                + " weights, the earlier ones " + ("with" if blind else "without")
                + ": pass weights with every chunk (the exact reconstruction) or "
                "with none (the blind estimate). Call fit, or start over with a "
                "new estimator, to change.")
        if blind:
            self.sample.update((X,), np.dtype(input_dtype))
            return
        if self.n_outputs is None:
            self.n_outputs = A.shape[1]
        elif A.shape[1] != self.n_outputs:
            raise ValueError(
                f"output_weights has {A.shape[1]} column(s) but the earlier chunks' "
                f"had {self.n_outputs}: every chunk of neurons must come with the "
                "same outputs (n_neurons, n_outputs). Call fit, or start over "
                "with a new estimator, to reconstruct another layer.")
        single = (np.dtype(input_dtype) == np.float32
                  or (X.size and effective_dtype(X, np) == np.float32))
        self.span.update(X, np.float32 if single else np.float64)
        self.nonzero |= np.any(X != 0, axis=0)
        self.sample.update((X, W, A), np.dtype(input_dtype))

    def rows(self):
        """The kept neurons ``(X, W, A)``, in the input's dtype."""
        return tuple(self.sample.rows())

    def spectrum(self):
        """``(live, vectors, singular_values, shape)``: the nonzero
        columns, the span's right singular vectors on them
        (``(len(live), q)``), the singular values (``(q,)``) and the shape of
        the whole gradient received; a ``BatchSizeWarning`` when directions
        above round-off were left out (a noisy gradient, more directions
        than kept)."""
        span = self.span
        if span.truncated > 0:
            warnings.warn(
                f"The streamed gradient's spectrum shows no round-off floor within "
                f"the {span.D.shape[1]} directions kept of its {span.n_cols} columns "
                f"(a direction left out at {span.truncated:.3g} of the largest "
                "singular value): the gradient is noisy, and the batch size read "
                "off the truncated spectrum is uncertain. Pass batch_size if you "
                "know it, or fit the whole gradient.", BatchSizeWarning)
        live = np.flatnonzero(self.nonzero)
        vectors = span.vectors()[live]
        return live, vectors, span.singular_values.copy(), (self.n_seen, span.n_cols)
