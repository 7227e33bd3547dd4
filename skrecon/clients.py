"""Reference federated-learning client: exact gradient queries of an MLP.

The server picks a random MLP (Gaussian first layer, :ref:`theory-model`), the client
runs one forward/backward pass on its private batch and returns the gradient.
:func:`make_gradient_query` plays both parts in NumPy, with the exact chain
rule, and returns everything an attack or a test needs as a
:class:`GradientQuery`: the first layer's gradient (``X`` of the
reconstructor), its weights, the output weights, and the full-model gradient.
Optional DP-SGD (per-example clipping and Gaussian noise) happens in the
client, as it does in practice.
"""

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from .activations import get_activation

__all__ = ["GradientQuery", "make_gradient_query"]

_BIAS_MODES = ("none", "zero", "gaussian")
_LOSSES = ("squared", "cross_entropy")
_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------
# private helpers: plain functions of arrays
# --------------------------------------------------------------------------

def _check_rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return check_random_state(random_state)


def _standard_normal(rng, shape):
    """Standard normal draws in float64, from a RandomState or a Generator."""
    return np.asarray(rng.standard_normal(shape), dtype=np.float64)


def _integers(rng, high, size):
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, high, size=size)
    return rng.randint(0, high, size=size)


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(
            f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}."
        ) from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dt}.")
    return dt


def _check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return int(value)


def _check_positive_float(value, name, *, allow_zero=False, auto=None):
    if auto is not None and isinstance(value, str) and value == "auto":
        return float(auto)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        extra = " or 'auto'" if auto is not None else ""
        raise ValueError(f"{name} must be a positive float{extra}, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}.")
    return value


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def _resolve_activation(activation, name):
    try:
        return get_activation(activation)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def _check_batch(batch, dtype):
    try:
        arr = np.asarray(batch, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"batch must be a 2-D array of floats: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(
            f"batch must be a 2-D array of shape (batch_size, n_inputs), got "
            f"ndim={arr.ndim} (shape {arr.shape}). Reshape a single sample with "
            "batch.reshape(1, -1)."
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"batch must be non-empty, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("batch contains NaN or infinity.")
    return np.array(arr, dtype=dtype)


def _check_hidden_layers(hidden_layers):
    if hidden_layers is None:
        return []
    out = []
    for k, spec in enumerate(hidden_layers):
        try:
            width, activation = spec
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"hidden_layers[{k}] must be a (width, activation) pair, got "
                f"{spec!r}."
            ) from exc
        width = _check_positive_int(width, f"hidden_layers[{k}] width")
        _resolve_activation(activation, f"hidden_layers[{k}] activation")
        out.append((width, activation))
    return out


def _check_targets(targets, loss, n_samples, n_outputs, dtype):
    """Validate targets; return (targets as stored, (B, K) or (B,) for compute)."""
    if loss == "squared":
        try:
            arr = np.asarray(targets, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"targets must be an array of floats: {exc}") from exc
        ok_shapes = [(n_samples, n_outputs)]
        if n_outputs == 1:
            ok_shapes.append((n_samples,))
        if arr.shape not in ok_shapes:
            want = " or ".join(str(s) for s in ok_shapes)
            raise ValueError(
                f"targets must have shape {want} for a batch of {n_samples} samples "
                f"and n_outputs={n_outputs} (squared loss), got shape {arr.shape}."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("targets contains NaN or infinity.")
        arr = arr.astype(dtype)
        return arr, arr.reshape(n_samples, n_outputs)
    arr = np.asarray(targets)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            f"targets must be integer labels of shape ({n_samples},) for a batch of "
            f"{n_samples} samples (cross-entropy loss), got shape {arr.shape}."
        )
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"targets must be integer labels, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not (
        np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        raise ValueError("targets must be integer labels (cross-entropy loss).")
    arr = arr.astype(np.int64)
    if np.any((arr < 0) | (arr >= n_outputs)):
        raise ValueError(
            f"targets must be labels in [0, {n_outputs}) for n_outputs="
            f"{n_outputs}, got values in [{arr.min()}, {arr.max()}]."
        )
    return arr, arr


def _forward(batch, layers):
    """Pre-activations ``zs[l]`` and layer inputs ``inputs[l]`` of every layer."""
    dtype = batch.dtype
    h = batch
    inputs, zs = [], []
    for layer in layers:
        inputs.append(h)
        z = h @ layer["weight"].T
        if layer["bias"] is not None:
            z = z + layer["bias"]
        zs.append(z)
        if layer["activation"] is None:
            h = z
        else:
            h = np.asarray(get_activation(layer["activation"])(z), dtype=dtype)
    return zs, inputs, h


def _per_sample_loss(output, targets, loss):
    """Per-sample losses ``l_i`` (B,) and ``dl_i/df`` (B, K)."""
    if loss == "squared":
        diff = output - targets
        return 0.5 * np.sum(diff * diff, axis=1), diff
    shifted = output - output.max(axis=1, keepdims=True)
    expo = np.exp(shifted)
    total = expo.sum(axis=1, keepdims=True)
    rows = np.arange(output.shape[0])
    losses = np.log(total[:, 0]) - shifted[rows, targets]
    dout = expo / total
    dout[rows, targets] -= 1.0
    return losses, dout


def _backward(zs, layers, dout):
    """Per-sample signals ``d l_i / d z_l`` (B, width_l) at every layer."""
    deltas = [None] * len(layers)
    delta = dout
    for k in range(len(layers) - 1, -1, -1):
        deltas[k] = delta
        if k > 0:
            prev = layers[k - 1]
            delta = delta @ layers[k]["weight"]
            if prev["activation"] is not None:
                act = get_activation(prev["activation"])
                delta = delta * np.asarray(act.derivative(zs[k - 1], 1),
                                           dtype=delta.dtype)
    return deltas


def _per_example_sq_norms(deltas, inputs, layers):
    """Squared norms of every sample's full-model gradient (all parameters)."""
    sq = np.zeros(deltas[0].shape[0], dtype=np.float64)
    for delta, h, layer in zip(deltas, inputs, layers):
        d2 = np.sum(np.asarray(delta, np.float64) ** 2, axis=1)
        h2 = np.sum(np.asarray(h, np.float64) ** 2, axis=1)
        sq += d2 * (h2 + (layer["bias"] is not None))
    return sq


def _reduce_loss(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum()


# --------------------------------------------------------------------------
# the query
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GradientQuery:
    """One gradient query: what a client returns and what the server knows.

    The one query type of skrecon: :func:`make_gradient_query` builds it for
    a simulated client, :func:`skrecon.torch.first_layer_query` reads it off
    a PyTorch model. ``grad``, ``weights`` and ``output_weights`` are the
    inputs of the reconstructor, and ``bias`` and ``activation`` its
    parameters: ``GradientReconstructor(**q.estimator_params).fit(q.grad,
    **q.fit_params)``; ``batch`` and ``targets`` are the private ground truth, known
    only for a simulated query (``None`` for one read off a model, as are
    ``loss``, ``reduction``, ``layers``, ``gradients`` and ``signals``).

    Attributes
    ----------
    grad : ndarray of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
        ``dL/dW`` of the first layer; when the first layer has a bias
        (``bias`` ``"zero"`` or ``"gaussian"``) ``dL/db`` is the last column.
    weights : ndarray, same shape as ``grad``
        The first layer's ``W``, with ``b`` as the last column when there is a
        bias.
    output_weights : ndarray of shape (n_neurons, n_next)
        Transpose of the next layer's weight matrix (``n_next = n_outputs``
        for a 2-layer net, the first hidden width otherwise).
    activation : str, Activation or None
        The first layer's activation, as given (read off a PyTorch model:
        the skrecon name of its activation module, ``None`` when there is
        none to read).
    bias : {"none", "zero", "gaussian"}
        The first layer's bias mode (read off a PyTorch model: ``"none"``
        without a bias, ``"zero"`` when every bias is 0, else
        ``"gaussian"``, which :func:`skrecon.torch.gaussian_reinit_` draws).
    loss : {"squared", "cross_entropy"} or None
    reduction : {"mean", "sum"} or None
    targets : ndarray
        The targets used: floats ``(B,)`` or ``(B, K)`` (squared loss), or
        int64 labels ``(B,)`` (cross-entropy).
    batch : ndarray of shape (B, n_inputs)
        A copy of the private batch, in the query's dtype.
    layers : list of dict
        Every layer in order, ``{"weight": (out, in), "bias": (out,) or None,
        "activation": name, Activation or None}``; the last one is the linear
        output layer.
    gradients : list of dict
        ``{"weight": dL/dweight, "bias": dL/dbias or None}``, one per layer:
        the full-model gradient (with DP, the privatised one).
    signals : ndarray of shape (B, n_next)
        Per-sample signals ``u_i = dL/dz_2`` at the second layer's
        pre-activation (``1/B`` and, with DP, the clipping factor included;
        noise excluded), so that without noise
        ``grad[j, :d] = sum_i (output_weights[j] @ signals[i]) *
        act'(w_j . x_i + b_j) * x_i`` exactly.
    weight_std, bias_std : float
        Standard deviations of the first layer's weights and (Gaussian) bias;
        ``bias_std`` is 0.0 unless ``bias="gaussian"``.
    dp_clip_norm : float or None
        The client's per-example clipping norm (DP-SGD), ``None`` without
        clipping.
    dp_noise_multiplier : float
        The client's DP-SGD noise multiplier (noise std over
        ``dp_clip_norm``), 0.0 without noise.
    layer_names : tuple of (str, str) or None
        Read off a PyTorch model: the module names of the first layer and of
        the next ``nn.Linear`` (``("0", "2")`` in an ``nn.Sequential``).
    noise_std : ndarray of the shape of ``grad``, or None
        The known standard deviation of each entry of ``grad``'s error
        (float64, the gradient's units): the round-off of a parameter
        update, set by :func:`skrecon.flower.update_query`; in
        ``fit_params`` when not ``None``.

    See Also
    --------
    make_gradient_query : Builds a query.
    skrecon.GradientReconstructor : Reconstructs ``batch`` from ``grad``.

    Examples
    --------
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=100, bias="gaussian", random_state=0)
    >>> q.grad.shape, q.weights.shape, q.output_weights.shape
    ((100, 65), (100, 65), (100, 1))
    >>> q.batch_size, q.n_neurons, q.has_bias
    (2, 100, True)
    >>> sorted(q.fit_params), q.estimator_params
    (['output_weights', 'weights'], {'bias': True, 'activation': 'tanh'})
    """

    grad: np.ndarray
    weights: np.ndarray
    output_weights: np.ndarray
    activation: object = None
    bias: str = "none"
    loss: str = None
    reduction: str = None
    targets: np.ndarray = None
    batch: np.ndarray = None
    layers: list = None
    gradients: list = None
    signals: np.ndarray = None
    weight_std: float = None
    bias_std: float = 0.0
    dp_clip_norm: float = None
    dp_noise_multiplier: float = 0.0
    layer_names: tuple = None
    noise_std: np.ndarray = None

    @property
    def batch_size(self):
        """Number of private samples ``B`` (int), ``None`` when the batch is
        unknown (a query read off a model)."""
        return None if self.batch is None else self.batch.shape[0]

    @property
    def n_neurons(self):
        """Number of first-layer neurons ``m`` (int)."""
        return self.grad.shape[0]

    @property
    def has_bias(self):
        """Whether ``grad`` and ``weights`` carry a bias column (bool)."""
        return self.bias != "none"

    @property
    def fit_params(self):
        """The reconstructor's fit metadata (dict).

        ``{"weights": ..., "output_weights": ...}``, and ``"noise_std"``
        where it is known (a parameter update's round-off), so that
        ``rec.fit(q.grad, **q.fit_params)`` passes them all.
        """
        params = {"weights": self.weights, "output_weights": self.output_weights}
        if self.noise_std is not None:
            params["noise_std"] = self.noise_std
        return params

    @property
    def estimator_params(self):
        """What the query knows of the reconstructor's parameters (dict).

        ``{"bias": has_bias}``, and ``"activation"`` when it is known, so
        that one line goes from a query to a fit:
        ``GradientReconstructor(**q.estimator_params).fit(q.grad,
        **q.fit_params)``. Other parameters (``random_state``,
        ``batch_size``, ...) can be given beside it.
        """
        params = {"bias": self.has_bias}
        if self.activation is not None:
            params["activation"] = self.activation
        return params

    def loss_value(self, batch=None, layers=None):
        """The loss ``L`` by a forward pass (no DP: clipping has no loss).

        Parameters
        ----------
        batch : ndarray of shape (B, n_inputs), default=None
            Defaults to ``self.batch``.
        layers : list of dict, default=None
            Same structure as ``self.layers``; defaults to it. Handy for
            finite differences: copy, perturb one entry, evaluate.

        Returns
        -------
        loss : float
            The client's loss on ``batch`` with ``layers``, with the query's
            loss and reduction.

        Raises
        ------
        ValueError
            If ``batch`` does not have the query's number of samples, or the
            query was read off a model (no targets to evaluate the loss).

        Examples
        --------
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(2, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=100, random_state=0)
        >>> loss = q.loss_value()
        >>> bool(loss >= 0), bool(q.loss_value(batch=batch[::-1] * 0.5) != loss)
        (True, True)
        """
        if self.targets is None:
            raise ValueError(
                "This query was read off a model: its targets and loss are the "
                "client's, unknown here, so the loss cannot be evaluated.")
        batch = self.batch if batch is None else np.asarray(batch)
        layers = self.layers if layers is None else layers
        if batch.ndim != 2 or batch.shape[0] != self.batch.shape[0]:
            raise ValueError(
                f"batch must have shape ({self.batch.shape[0]}, n_inputs), got "
                f"{batch.shape}."
            )
        _, _, output = _forward(batch, layers)
        targets = self.targets
        if self.loss == "squared":
            targets = targets.reshape(output.shape)
        losses, _ = _per_sample_loss(output, targets, self.loss)
        return float(_reduce_loss(losses, self.reduction))

    def __repr__(self):
        if self.layers is None:
            return (
                f"GradientQuery(n_neurons={self.n_neurons}, grad shape "
                f"{self.grad.shape}, layers={self.layer_names}, activation="
                f"{getattr(self.activation, 'name', self.activation)!r}, bias="
                f"{self.bias!r}, dtype={self.grad.dtype})")
        shapes = ", ".join(
            f"{layer['weight'].shape[0]}" for layer in self.layers
        )
        return (
            f"GradientQuery(batch_size={self.batch_size}, n_inputs="
            f"{self.batch.shape[1]}, widths=[{shapes}], activation="
            f"{getattr(self.activation, 'name', self.activation)!r}, bias="
            f"{self.bias!r}, loss={self.loss!r}, reduction={self.reduction!r}, "
            f"dtype={self.grad.dtype})"
        )


def make_gradient_query(batch, targets=None, *, n_neurons=20000, activation="tanh",
                        weight_std="auto", bias="gaussian", bias_std=0.5,
                        n_outputs=1, hidden_layers=(), loss="squared",
                        reduction="mean", output_weight_std="auto",
                        dp_clip_norm=None, dp_noise_multiplier=0.0,
                        random_state=None, dtype=np.float64):
    """Compute one client's gradient at a random MLP drawn by the server.

    Parameters
    ----------
    batch : array-like of shape (B, d)
        The private batch, one sample per row. Finite floats.
    targets : array-like, default=None
        Squared loss: floats of shape ``(B,)`` (only when ``n_outputs=1``)
        or ``(B, n_outputs)``. Cross-entropy: integer labels of shape
        ``(B,)`` in ``[0, n_outputs)``. ``None``: drawn from ``random_state``
        (standard normal targets, or uniform labels).
    n_neurons : int, default=20000
        Width ``m`` of the first layer.
    activation : str or Activation, default="tanh"
        The first layer's activation (see :func:`skrecon.activations.get_activation`).
    weight_std : float or "auto", default="auto"
        Std ``s`` of the first layer's i.i.d. Gaussian weights; ``"auto"``
        is ``1 / sqrt(d)``.
    bias : {"none", "zero", "gaussian"}, default="gaussian"
        The first layer's bias: absent, a parameter held at 0, or
        ``b_j ~ N(0, bias_std**2)``.
    bias_std : float, default=0.5
        Std of the Gaussian bias (used only with ``bias="gaussian"``).
    n_outputs : int, default=1
        Number ``K`` of linear output units.
    hidden_layers : sequence of (int, str or Activation), default=()
        ``(width, activation)`` of each further hidden layer after the
        first, with Gaussian weights of std ``1 / sqrt(fan_in)`` and zero
        biases. ``()`` is the 2-layer net of :ref:`theory-model`.
    loss : {"squared", "cross_entropy"}, default="squared"
        ``l_i = ||f(x_i) - y_i||**2 / 2``, or softmax cross-entropy
        (``n_outputs >= 2``).
    reduction : {"mean", "sum"}, default="mean"
        ``L = (1/B) sum_i l_i`` or ``L = sum_i l_i``.
    output_weight_std : float or "auto", default="auto"
        Std of the output layer's Gaussian weights; ``"auto"`` is
        ``1 / sqrt(fan_in)``. The output bias is 0.
    dp_clip_norm : float or None, default=None
        DP-SGD: clip each sample's full-model gradient ``grad l_i`` (all
        parameters concatenated) to this norm before the reduction.
    dp_noise_multiplier : float, default=0.0
        DP-SGD: add ``N(0, (dp_noise_multiplier * dp_clip_norm)**2)`` to
        every coordinate of the summed clipped gradient (divided by ``B``
        with ``reduction="mean"``). Needs ``dp_clip_norm``.
    random_state : int, RandomState instance, Generator or None, default=None
        Source of every random draw (weights, biases, targets, DP noise).
        The same integer gives bitwise identical queries.
    dtype : {numpy.float32, numpy.float64}, default=numpy.float64
        Precision of the computation and of every returned array. The
        parameters are drawn in float64 and rounded, so both precisions see
        the same network.

    Returns
    -------
    query : GradientQuery
        ``grad``, ``weights`` (``(m, d)``, or ``(m, d + 1)`` with the bias as
        the last column), ``output_weights`` ``(m, n_next)``, ``layers``,
        ``gradients``, ``signals``, the ``targets`` used and a copy of the
        ``batch``; see :class:`GradientQuery`.

    Raises
    ------
    ValueError
        For a batch that is not 2-D or holds NaN/inf; ``n_neurons`` or
        ``n_outputs`` < 1; an unknown ``activation``, ``bias``, ``loss`` or
        ``reduction``; targets of the wrong shape or labels out of range;
        cross-entropy with ``n_outputs < 2``; non-positive stds or clip norm;
        noise without a clip norm; a ``dtype`` other than float32/float64.

    See Also
    --------
    skrecon.datasets.load_digits_batch : A batch to query with.

    Notes
    -----
    Write ``z_1 = W x + b``, ``h = sigma(z_1)``, ``z_2 = A h + c`` (the next
    layer) and ``u_i = dL/dz_2(x_i)``, which back-propagation gives from the
    loss (``u_i = (f(x_i) - y_i) / B`` for a 2-layer net, squared loss, mean
    reduction; ``(softmax(f(x_i)) - e_{y_i}) / B`` for cross-entropy). The
    chain rule gives, for neuron ``j`` with ``a_j = A[:, j]``::

        dL/dw_j = sum_i (a_j . u_i) sigma'(w_j . x_i + b_j) x_i
        dL/db_j = sum_i (a_j . u_i) sigma'(w_j . x_i + b_j)

    exactly, whatever the depth above (:ref:`theory-model`). With DP-SGD, each
    ``u_i`` (and every layer's signal) is first scaled by
    ``min(1, C / ||grad l_i||)``, then noise is added, which breaks this
    identity by the noise only.

    Examples
    --------
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> batch, labels = load_digits_batch(4)
    >>> q = make_gradient_query(batch, n_neurons=100, random_state=0)
    >>> q.grad.shape, q.weights.shape, q.output_weights.shape
    ((100, 65), (100, 65), (100, 1))
    >>> q = make_gradient_query(batch, labels, n_neurons=100, n_outputs=10,
    ...                         loss="cross_entropy", bias="none", random_state=0)
    >>> q.grad.shape, q.output_weights.shape, q.signals.shape
    ((100, 64), (100, 10), (4, 10))
    """
    dtype = _check_dtype(dtype)
    batch = _check_batch(batch, dtype)
    n_samples, n_inputs = batch.shape
    n_neurons = _check_positive_int(n_neurons, "n_neurons")
    n_outputs = _check_positive_int(n_outputs, "n_outputs")
    _resolve_activation(activation, "activation")
    bias = _check_choice(bias, "bias", _BIAS_MODES)
    loss = _check_choice(loss, "loss", _LOSSES)
    reduction = _check_choice(reduction, "reduction", _REDUCTIONS)
    if loss == "cross_entropy" and n_outputs < 2:
        raise ValueError(
            f"loss='cross_entropy' needs n_outputs >= 2 (softmax over classes), got "
            f"n_outputs={n_outputs}."
        )
    weight_std = _check_positive_float(weight_std, "weight_std",
                                       auto=1.0 / np.sqrt(n_inputs))
    bias_std = (_check_positive_float(bias_std, "bias_std")
                if bias == "gaussian" else 0.0)
    hidden = _check_hidden_layers(hidden_layers)
    fan_in_out = hidden[-1][0] if hidden else n_neurons
    output_weight_std = _check_positive_float(
        output_weight_std, "output_weight_std", auto=1.0 / np.sqrt(fan_in_out))
    if dp_clip_norm is not None:
        dp_clip_norm = _check_positive_float(dp_clip_norm, "dp_clip_norm")
    dp_noise_multiplier = _check_positive_float(
        dp_noise_multiplier, "dp_noise_multiplier", allow_zero=True)
    if dp_noise_multiplier > 0 and dp_clip_norm is None:
        raise ValueError(
            "dp_noise_multiplier > 0 needs dp_clip_norm: DP-SGD noise is scaled by "
            "the clipping norm."
        )
    if targets is not None:
        stored_targets, compute_targets = _check_targets(
            targets, loss, n_samples, n_outputs, dtype)

    rng = _check_rng(random_state)

    # The server's network: parameters drawn in float64, then rounded.
    first_w = _standard_normal(rng, (n_neurons, n_inputs)) * weight_std
    if bias == "gaussian":
        first_b = _standard_normal(rng, n_neurons) * bias_std
    elif bias == "zero":
        first_b = np.zeros(n_neurons)
    else:
        first_b = None
    layers = [{"weight": first_w, "bias": first_b, "activation": activation}]
    fan_in = n_neurons
    for width, act in hidden:
        w = _standard_normal(rng, (width, fan_in)) / np.sqrt(fan_in)
        layers.append({"weight": w, "bias": np.zeros(width), "activation": act})
        fan_in = width
    out_w = _standard_normal(rng, (n_outputs, fan_in)) * output_weight_std
    layers.append({"weight": out_w, "bias": np.zeros(n_outputs), "activation": None})
    for layer in layers:
        layer["weight"] = layer["weight"].astype(dtype)
        if layer["bias"] is not None:
            layer["bias"] = layer["bias"].astype(dtype)

    if targets is None:
        if loss == "squared":
            shape = (n_samples,) if n_outputs == 1 else (n_samples, n_outputs)
            drawn = _standard_normal(rng, shape)
        else:
            drawn = _integers(rng, n_outputs, n_samples)
        stored_targets, compute_targets = _check_targets(
            drawn, loss, n_samples, n_outputs, dtype)

    # The client's forward and backward passes.
    zs, inputs, output = _forward(batch, layers)
    _, dout = _per_sample_loss(output, compute_targets, loss)
    deltas = _backward(zs, layers, dout)

    coef = np.ones(n_samples)
    if dp_clip_norm is not None:
        norms = np.sqrt(_per_example_sq_norms(deltas, inputs, layers))
        coef = np.minimum(1.0, dp_clip_norm / np.maximum(norms, np.finfo(float).tiny))
    if reduction == "mean":
        coef = coef / n_samples
    coef = coef.astype(dtype)[:, None]
    deltas = [delta * coef for delta in deltas]

    gradients = []
    for delta, h, layer in zip(deltas, inputs, layers):
        gradients.append({
            "weight": delta.T @ h,
            "bias": delta.sum(axis=0) if layer["bias"] is not None else None,
        })
    if dp_clip_norm is not None and dp_noise_multiplier > 0:
        scale = dp_noise_multiplier * dp_clip_norm
        if reduction == "mean":
            scale = scale / n_samples
        for g in gradients:
            g["weight"] = g["weight"] + (
                _standard_normal(rng, g["weight"].shape) * scale).astype(dtype)
            if g["bias"] is not None:
                g["bias"] = g["bias"] + (
                    _standard_normal(rng, g["bias"].shape) * scale).astype(dtype)

    if first_b is None:
        grad = np.ascontiguousarray(gradients[0]["weight"])
        weights = layers[0]["weight"].copy()
    else:
        grad = np.hstack([gradients[0]["weight"], gradients[0]["bias"][:, None]])
        weights = np.hstack([layers[0]["weight"], layers[0]["bias"][:, None]])
    output_weights = np.ascontiguousarray(layers[1]["weight"].T)

    return GradientQuery(
        grad=grad,
        weights=weights,
        output_weights=output_weights,
        activation=activation,
        bias=bias,
        loss=loss,
        reduction=reduction,
        targets=stored_targets,
        batch=batch,
        layers=layers,
        gradients=gradients,
        signals=deltas[1],
        weight_std=weight_std,
        bias_std=bias_std,
        dp_clip_norm=dp_clip_norm,
        dp_noise_multiplier=dp_noise_multiplier,
    )
