"""Batches larger than their rank: the tuple column-space search.

When the ``B`` samples of a batch are linearly dependent (their
bias-augmented rank ``r`` is below ``B``: 64 digits span 54 dimensions,
since border pixels are zero in every digit; 32 rows of a 30-feature
table span at most 31), the gradient has rank ``r`` and no single
sample satisfies the column-space condition of the per-sample search
(:ref:`theory-f8`): ``col(P)`` is an ``r``-dimensional subspace of the
``B``-dimensional ``span{beta_1 ... beta_B}``. In span coordinates
``P = beta V`` with ``V`` (``B x r``) of rank ``r``, so ``col(P) = {beta z :
z in col(V)}`` and ``col(V)`` is the orthogonal complement of the
``s = B - r`` dimensional null space of ``V^T``. A vector ``z`` supported on
``s + 1`` samples and orthogonal to that null space exists for every
``(s + 1)``-subset of the batch (generically unique up to scale, with no
zero entry), hence:

* **tuple condition.** For every set ``F`` of ``s + 1`` samples, some
  combination ``sum_{f in F} c_f S(v_f)`` of the family
  ``S(v) = a * sigma'(Omega v + b0)`` lies in ``col(P)``. The misfit
  ``phi(v_1 ... v_{s+1}, c) = ||(I - Q Q^T) h|| ^ 2 / ||h|| ^ 2`` with
  ``h = sum_k c_k S(v_k)`` vanishes on every one of the ``C(B, s + 1)``
  tuples: a Levenberg-Marquardt search from random starts over
  ``(s + 1) r`` unknowns.
* **signals.** With a set ``F`` found, the vectors ``y`` with ``P y`` in
  ``span{S(v_f)}`` are those orthogonal to the ``B - |F|`` others (fewer
  than ``r``), and ``P y = sum_f u_f (v_f . y) S(v_f)`` gives each ``u_f``
  by least squares.
* **the rest.** ``P - sum_f u_f S(v_f) v_f^T`` is the gradient of the
  others, which are linearly independent: the per-sample search with
  deflation (:func:`skrecon.search.search_samples`) finds them; samples it
  leaves missing are searched again on the gradient less every sample
  found so far.

Measured (``benchmarks/bench_overcomplete.py``, tanh, Gaussian bias,
``m = 20 000``): every row exact for ``s = 1`` to 3 (breast cancer
``B = 32, 33, 34`` at rank 31, digits ``B = 56`` at rank 54 or 53, in 3 to
33 s) and for ``s = 5`` with ``max_nfev=1000`` (breast cancer ``B = 36``,
29 starts, 472 s; none in 20 starts of 200 steps); no tuple found for
``s = 9, 10, 17, 33, 42`` within the starts tried. The tuple's unknowns
grow as ``(s + 1) r`` and random starts reach fewer tuples as ``s`` grows.
"""

import warnings
from numbers import Integral

import numpy as np
from scipy import linalg
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_array

from .activations import Activation, get_activation
from .refine import fit_signals, gradient_model, is_piecewise_linear, lm_driver
from ._span import effective_dtype
from .search import search_samples
from .exceptions import IdentifiabilityWarning

__all__ = ["reconstruct_overcomplete"]

# a tuple (or a sample) counts as found below this squared misfit (an
# exact float64 search reaches ~1e-25, as the per-sample search's)
_ACCEPT = 1e-10
# a tuple counts below this squared misfit: true tuples reached 1e-25 to
# 1e-28, and a near miss at 7.6e-11 (breast cancer B = 36: one member
# driven to saturation, the others 0.4 % to 13 % from samples) passed 1e-10
_TUPLE_ACCEPT = 1e-18
# the gradient less a true tuple's terms has rank r - 1: its r-th singular
# value is round-off, below this fraction of the first
_RANK_GAP = 1e-9
# rounds of the per-sample search on the gradient less the samples found
_ROUNDS = 4
# the whole model fits to round-off below this relative residual
_EXACT_RESIDUAL = 1e-8
# two rows closer than this (relative) are one sample split in two, and a
# row whose signal is below this fraction of the largest carries none: the
# gradient is explained by fewer samples (batch_size too high: given 33 for
# 32 samples at rank 31, two rows came back 1.5e-6 and 7.8e-7 off one
# sample, splitting its signal; given 34, a third row 52 off with signal
# -1.3e-15; all flagged found)
_SAME_SAMPLE = 1e-4
_NO_SIGNAL = 1e-8


def _redundant_rows(samples, signals):
    """Rows the gradient does not need: pairs closer than ``_SAME_SAMPLE``
    (both rows) and rows whose signal is below ``_NO_SIGNAL`` of the
    largest. Returns ``(split, silent)``, sorted index lists."""
    norms = np.linalg.norm(samples, axis=1)
    gaps = np.linalg.norm(samples[:, None] - samples[None], axis=2)
    gaps /= np.maximum(np.maximum(norms[:, None], norms[None]), np.finfo(float).tiny)
    np.fill_diagonal(gaps, np.inf)
    split = np.flatnonzero(np.any(gaps < _SAME_SAMPLE, axis=1))
    strength = np.abs(signals[:, 0])
    silent = np.flatnonzero(strength < _NO_SIGNAL * strength.max()) \
        if strength.size and strength.max() > 0 else np.zeros(0, dtype=int)
    return split.tolist(), silent.tolist()


def _family(Omega, a, V, bias_mean, activation, order=1):
    """``a * sigma^(order)(Omega V^T + b0)``: ``(m, k)``."""
    return a[:, None] * activation.derivative(Omega @ V.T + bias_mean, order)


def _tuple_search(P, Omega, a, activation, bias_mean, fixed, k, rng, max_starts,
                  max_nfev, scale, batch_size):
    """Random-start LM searches of one ``k``-tuple satisfying the tuple
    condition (and leaving the others' rank); returns ``(phi, V (k, r),
    n_starts)`` of the best."""
    Q = np.linalg.qr(P)[0]
    e, c = fixed
    tangent = linalg.null_space(e[None, :])  # (r, r - 1)
    base = e * (c / (e @ e))
    n_free = tangent.shape[1]
    omega_t = Omega @ tangent
    offset = Omega @ base + bias_mean

    def unpack(x):
        X = x[:k * n_free].reshape(k, n_free)
        return X, np.concatenate([[1.0], x[k * n_free:]])

    def state(x):
        X, coef = unpack(x)
        t = offset[:, None] + omega_t @ X.T
        s = a[:, None] * activation.derivative(t, 1)
        h = s @ coef
        return X, coef, t, s, h, np.linalg.norm(h)

    def residual(x):
        _, _, _, _, h, norm = state(x)
        g = h / norm
        return g - Q @ (Q.T @ g)

    def normal_equations(x):
        _, coef, t, s, h, norm = state(x)
        if not (np.isfinite(norm) and norm > 0):
            return None
        g = h / norm
        r = g - Q @ (Q.T @ g)
        slope2 = a[:, None] * activation.derivative(t, 2) * coef[None, :]
        moved = (slope2[:, :, None] * omega_t[:, None, :]).reshape(len(a), -1)
        H = np.concatenate([moved, s[:, 1:]], axis=1)
        H = (H - np.outer(g, g @ H)) / norm
        J = H - Q @ (Q.T @ H)
        return J.T @ J, -(J.T @ r), 0.5 * float(r @ r)

    def cost(x):
        with np.errstate(all="ignore"):
            r = residual(x)
        return 0.5 * float(r @ r) if np.all(np.isfinite(r)) else np.inf

    best = (np.inf, None)
    n_starts = 0
    for n_starts in range(1, max_starts + 1):
        spread = scale / np.sqrt(n_free + 1)
        x0 = np.concatenate([rng.standard_normal(k * n_free) * spread,
                             rng.standard_normal(k - 1)])
        with np.errstate(all="ignore"):
            x, c_final, _, _ = lm_driver(x0, normal_equations, cost, max_iter=max_nfev,
                                         atol=1e-30, scale=float(np.linalg.norm(x0)))
        phi = 2.0 * c_final
        X, _ = unpack(x)
        V = base + X @ tangent.T
        if phi < _TUPLE_ACCEPT and not _leaves_the_others(
                P, Omega, a, activation, bias_mean, V, batch_size):
            # not a tuple of the batch, however small the misfit
            phi = max(phi, _TUPLE_ACCEPT)
        if phi < best[0]:
            best = (phi, V)
        if best[0] < _TUPLE_ACCEPT:
            break
    return best[0], best[1], n_starts


def _leaves_the_others(P, Omega, a, activation, bias_mean, V, batch_size):
    """Whether the gradient less the tuple's terms has the rank of the
    others, ``r - 1``, to round-off: the tuple's certificate beside its
    misfit (a near miss leaves rank ``r``)."""
    sv = linalg.svdvals(_others(P, Omega, a, activation, bias_mean, V, batch_size))
    return bool(sv[-1] <= _RANK_GAP * sv[0])


def _others(P, Omega, a, activation, bias_mean, V, batch_size):
    """The gradient of the samples not in ``V``: ``P - sum_f u_f S(v_f) v_f^T``.

    The vectors ``y`` with ``P y`` in ``span{S(v_f)}`` are those orthogonal
    to the ``n_missing = batch_size - len(V)`` other samples (fewer than
    ``r``): ``r - n_missing`` of them, the right singular vectors of
    ``(I - Pi_S) P`` at zero. On them ``P y = sum_f u_f (v_f . y) S(v_f)``,
    so each ``u_f`` is a least-squares ratio.
    """
    S = _family(Omega, a, V, bias_mean, activation)
    Qs = np.linalg.qr(S)[0]
    n_null = P.shape[1] - (batch_size - len(V))
    Y = linalg.svd(P - Qs @ (Qs.T @ P), full_matrices=False)[2][-n_null:].T
    W = linalg.lstsq(S, P @ Y)[0]  # (n_found, n_null): u_f (v_f . y)
    G = V @ Y
    u = np.sum(W * G, axis=1) / np.sum(G * G, axis=1)
    return P - (S * u) @ V


def _signals_and_residual(P, Omega, A, activation, bias_mean, V):
    """Least-squares signals of ``V`` and the model's relative residual."""
    U = fit_signals(V, P, Omega, A, activation, bias_mean, ridge=0.0)
    model = gradient_model(V, U, Omega, A, activation, bias_mean)
    return U, float(np.linalg.norm(P - model) / np.linalg.norm(P))


def _check_query(X, weights, output_weights):
    low = np.asarray(X).dtype if hasattr(X, "dtype") else None
    X = check_array(X, dtype=np.float64, input_name="X")
    if (low is not None and low.kind == "f" and low.itemsize < 8) or (
            effective_dtype(X, np) == np.float32):
        raise ValueError(
            "reconstruct_overcomplete needs a float64 gradient exact to its own "
            "round-off: a group of samples is accepted at a squared tuple misfit of "
            "1e-18, and float32 round-off (or noise) holds the misfit far above it "
            "(2.7e-9 measured on breast cancer, B = 32), so no group is found. "
            "Compute the gradient in float64 (model.double()).")
    weights = check_array(weights, dtype=np.float64, input_name="weights")
    if weights.shape != X.shape:
        raise ValueError(f"weights must have the shape of X, {X.shape}, got "
                         f"{weights.shape}.")
    if output_weights is None:
        A = np.ones((X.shape[0], 1))
    else:
        A = check_array(output_weights, dtype=np.float64, ensure_2d=False,
                        input_name="output_weights")
        A = A.reshape(len(A), -1)
    if A.shape != (X.shape[0], 1):
        raise ValueError(
            "reconstruct_overcomplete handles one output (output_weights of shape "
            f"({X.shape[0]},) or ({X.shape[0]}, 1)), got shape {A.shape}: the tuple "
            "search with several outputs is not implemented.")
    return X, weights, A


def reconstruct_overcomplete(X, *, weights, output_weights=None, batch_size,
                             activation="tanh", max_starts=20, max_nfev=200,
                             n_rows=None, random_state=None):
    """Reconstruct a batch whose size exceeds its rank from one gradient.

    For a batch of ``batch_size`` samples whose bias-augmented rank ``r``
    is smaller (linearly dependent samples: more rows than features, or
    pixels that are zero in every sample), the gradient has rank ``r`` and
    :class:`~skrecon.GradientReconstructor` can separate at most ``r``
    samples. Here ``s = batch_size - r`` is known (``batch_size`` must be
    given: the spectrum shows only ``r``), and the batch is searched as
    ``s + 1`` samples at once (the tuple column-space condition, see the
    module's notes), then the other ``r - 1`` one at a time.

    The first layer must have a bias (the last column of ``X`` and
    ``weights``): its input, the constant 1, fixes each sample's scale and
    sign; a bias held at zero leaves the sign of tanh-like activations
    open and is refused. One output (``K = 1``) and a smooth activation
    only.

    Parameters
    ----------
    X : array-like of shape (n_neurons, n_inputs + 1)
        First-layer gradient, one row per neuron, the bias gradient last.
    weights : array-like of shape (n_neurons, n_inputs + 1)
        The first-layer weights and biases (last column) at which the
        gradient was taken. Any known weights; a Gaussian or a constant
        bias.
    output_weights : array-like of shape (n_neurons,) or (n_neurons, 1), default=None
        The neurons' outgoing weights; ``None`` means all ones.
    batch_size : int
        The number of samples ``B``; it must exceed the gradient's rank
        ``r`` (otherwise use :class:`~skrecon.GradientReconstructor`).
    activation : str or Activation, default="tanh"
        First-layer activation (smooth: not ReLU or leaky ReLU).
    max_starts : int, default=20
        Random starts of the tuple search.
    max_nfev : int, default=200
        Steps of each tuple search (Levenberg-Marquardt,
        :func:`skrecon.refine.lm_driver`).
    n_rows : int or None, default=None
        Neurons the searches run on (a random subset); ``None``: the larger
        of 2000 and four times the tuple's unknowns ``(s + 1) r``, at most
        all.
    random_state : int, RandomState instance or None, default=None
        Seeds the row subset and the random starts.

    Returns
    -------
    result : Bunch
        ``samples``, ndarray of shape (n_found, n_inputs): the samples
        found (the tuple's first, then the others), ``found``, ndarray of
        bool of shape (n_found,), whether each row's column-space misfit is
        below 1e-10 (for the tuple's rows: the tuple's misfit below 1e-18,
        and the gradient less the tuple's terms of rank ``r - 1``),
        ``misfits``, ndarray of
        shape (n_found,), ``signals``, ndarray of shape (n_found, 1): the
        least-squares signals ``u_i`` on all neurons, ``gradient_residual``,
        float: ``||P - P_hat||_F / ||P||_F`` of the whole model with the rows
        found, in span coordinates (round-off when the batch is complete and
        exact), ``rank``, int: ``r``, ``n_starts``, int: tuple searches run.

    Raises
    ------
    ValueError
        If the arrays hold NaN or inf, their shapes do not match, there is
        more than one output, the activation is piecewise linear, the bias
        is zero with an even ``sigma'`` (tanh, sigmoid, erf: the signs are
        not settled), ``batch_size`` does not exceed the gradient's rank, or
        ``X`` is float32 (or holds only float32 values): the tuple condition
        is accepted at float64 round-off.

    Warns
    -----
    IdentifiabilityWarning
        When the tuple search finds no tuple, or the batch found does not
        fit the gradient to round-off (fewer than ``batch_size`` rows, or a
        relative residual above 1e-8): no row then counts as certain beyond
        its own misfit. When the gradient is explained by fewer rows than
        ``batch_size`` (two rows within 1e-4 of each other, one sample split
        in two; a row without signal, below 1e-8 of the largest): those rows
        are not found, and ``batch_size`` is likely too high.

    See Also
    --------
    skrecon.GradientReconstructor : batches up to the gradient's rank.
    skrecon.search.search_samples : the per-sample search run on the rest.

    Notes
    -----
    Unlike the per-sample search, where each row's misfit certifies it,
    the tuple's rows are certified together (the tuple misfit), and the
    batch as a whole by ``gradient_residual``. Measured in
    ``benchmarks/bench_overcomplete.py``: up to three samples beyond the
    rank came back exact (digits ``B = 56`` at rank 54 and 53,
    breast-cancer ``B = 32`` to 34 at rank 31), five with
    ``max_nfev=1000`` (breast cancer ``B = 36``); nine or more beyond it did
    not (no tuple found in the starts tried).

    References
    ----------
    .. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.metrics import relative_error
    >>> from skrecon.overcomplete import reconstruct_overcomplete
    >>> batch = np.random.default_rng(0).standard_normal((10, 8))  # rank 9
    >>> q = make_gradient_query(batch, n_neurons=4000, random_state=0)
    >>> result = reconstruct_overcomplete(q.grad, weights=q.weights,
    ...                                   output_weights=q.output_weights,
    ...                                   batch_size=10, random_state=0)
    >>> result.rank, int(result.found.sum())
    (9, 10)
    >>> bool(relative_error(batch, result.samples)[0].max() < 1e-8)
    True
    """
    X, W, A = _check_query(X, weights, output_weights)
    activation = get_activation(activation) if not isinstance(activation, Activation) \
        else activation
    if is_piecewise_linear(activation):
        raise ValueError(
            f"reconstruct_overcomplete needs a smooth activation (its search uses "
            f"sigma''), got {activation.name!r}: piecewise-linear activations are "
            "not supported here.")
    for name, value, low in (("batch_size", batch_size, 2),
                             ("max_starts", max_starts, 1),
                             ("max_nfev", max_nfev, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    rng = check_random_state(random_state)
    m, n_cols = X.shape
    # the span (rank r) in coordinates scaled by the weights' spread
    _, sv, vt = linalg.svd(X, full_matrices=False)
    rank = int(np.sum(sv > 10 * sv[0] * np.finfo(np.float64).eps)) if sv[0] > 0 else 0
    if rank == 0:
        raise ValueError("The gradient X is zero everywhere: it carries no "
                         "information about the batch.")
    if batch_size <= rank:
        raise ValueError(
            f"batch_size={batch_size} does not exceed the gradient's rank {rank}: "
            "the samples are (or may be) linearly independent; use "
            "skrecon.GradientReconstructor, whose per-sample search certifies each "
            "row.")
    if rank >= m:
        raise ValueError(f"The gradient has as many independent rows as neurons ({m}): "
                         "query a layer with more neurons.")
    n_extra = batch_size - rank
    k = n_extra + 1
    if rank < 2:
        raise ValueError("The gradient has rank 1: there is no sample direction to "
                         "search beyond the bias.")
    std = np.sqrt(np.mean(W[:, :-1] ** 2))
    bias_mean, bias_std = float(W[:, -1].mean()), float(W[:, -1].std())
    if not std > 0:
        raise ValueError("The first-layer weights are all zero.")
    constant_bias = not bias_std > 1e-12 * max(std, abs(bias_mean))
    if constant_bias and bias_mean == 0 and activation.even_derivative:
        raise ValueError(
            f"The first layer's bias is zero and sigma' of {activation.name!r} is "
            "even: sigma'(w . x) = sigma'(-w . x), so the column-space conditions "
            "cannot tell x from -x, and the tuple search does not settle the "
            "signs. Query with a Gaussian (or nonzero) bias.")
    scale = np.full(n_cols, std)
    scale[-1] = 1.0 if constant_bias else bias_std
    centre = np.zeros(n_cols)
    centre[-1] = bias_mean
    basis = np.linalg.qr(vt[:rank].T * scale[:, None])[0]  # (n_cols, r)
    Omega = ((W - centre) / scale) @ basis
    P = X @ (scale[:, None] * basis)
    a = A[:, 0]
    fixed = (basis[-1].copy(), float(scale[-1]))  # the bias input is 1
    if not np.linalg.norm(fixed[0]) > 1e-12:
        raise ValueError("The bias gradient (the last column of X) is outside the "
                         "span of the other columns' gradient: is the bias the last "
                         "column?")
    if n_rows is None:
        n_rows = max(2000, 4 * k * rank)
    rows = np.sort(rng.choice(m, min(int(n_rows), m), replace=False))
    # random starts of about unit norm: a unit pre-activation std (the
    # coordinates are scaled by the weights' spread)
    phi, V_tuple, n_starts = _tuple_search(P[rows], Omega[rows], a[rows], activation,
                                           bias_mean, fixed, k, rng, max_starts,
                                           max_nfev, 1.0, batch_size)
    if not phi < _TUPLE_ACCEPT:
        warnings.warn(
            f"The tuple search found no {k} samples satisfying the tuple condition "
            f"in {n_starts} starts (best misfit {phi:.2g} > {_TUPLE_ACCEPT:g}). "
            f"batch_size={batch_size} is {n_extra} beyond the gradient's rank "
            f"{rank}; either the search does not reach that far (up to 3 beyond "
            "the rank measured with the defaults, 5 with max_nfev=1000), or the "
            "gradient is not what the model assumes: batch_size is not the "
            "client's (too low as well as too high), the last column of X is not "
            "the bias gradient, the activation is not the layer's, or the gradient "
            "carries noise above float64 round-off. Nothing is returned.",
            IdentifiabilityWarning)
        n_dims = n_cols - 1
        return Bunch(samples=np.empty((0, n_dims)), found=np.zeros(0, dtype=bool),
                     misfits=np.empty(0), signals=np.empty((0, 1)),
                     gradient_residual=1.0, rank=rank, n_starts=n_starts)
    # the others, one at a time, from the gradient less the samples found;
    # a round that leaves samples missing is followed by one on the gradient
    # less every sample found so far
    V, misfits = V_tuple, np.full(k, phi)
    for _ in range(_ROUNDS):
        # the others lie in the row space of their own gradient (their
        # span, of their number's dimension): searched there
        others = _others(P, Omega, a, activation, bias_mean, V, batch_size)
        n_missing = batch_size - len(V)
        rows_basis = linalg.svd(others[rows], full_matrices=False)[2][:n_missing].T
        rest = search_samples(others @ rows_basis, Omega @ rows_basis, A, activation,
                              bias_mean, n_samples=n_missing,
                              random_starts=lambda n: rng.standard_normal(
                                  (n, n_missing)) / np.sqrt(n_missing),
                              fixed=(rows_basis.T @ fixed[0], fixed[1]), rows=rows)
        V = np.vstack([V, rest.V @ rows_basis.T])
        misfits = np.concatenate([misfits, rest.misfits])
        if rest.n_found == 0 or len(V) == batch_size:
            break
    found = misfits < np.where(np.arange(len(misfits)) < k, _TUPLE_ACCEPT, _ACCEPT)
    U, residual = _signals_and_residual(P, Omega, A, activation, bias_mean, V)
    x = (V @ basis.T) / scale
    samples = x[:, :-1] / x[:, -1:]
    split, silent = _redundant_rows(samples, U)
    if split or silent:
        found[split + silent] = False
        parts = []
        if split:
            parts.append(f"rows {split} come in pairs closer than {_SAME_SAMPLE:g} "
                         "(one sample split in two, its signal shared)")
        if silent:
            parts.append(f"rows {silent} carry no signal (below {_NO_SIGNAL:g} of "
                         "the largest)")
        warnings.warn(
            f"The gradient is explained by fewer than batch_size={batch_size} "
            f"samples: {'; '.join(parts)}. batch_size is likely larger than the "
            "client's batch (or the batch holds near-duplicate samples); found is "
            "False for these rows. Try a smaller batch_size.",
            IdentifiabilityWarning)
    elif len(V) < batch_size or not residual < _EXACT_RESIDUAL:
        warnings.warn(
            f"{len(V)} of {batch_size} samples found, and the model of the rows "
            f"found leaves a relative residual {residual:.2g} (not round-off): the "
            "batch is incomplete. Each row flagged found is certified only by its "
            "own column-space misfit, not by the batch; batch_size may not be the "
            "client's.", IdentifiabilityWarning)
    return Bunch(samples=samples, found=found, misfits=misfits, signals=U,
                 gradient_residual=residual, rank=rank, n_starts=n_starts)
