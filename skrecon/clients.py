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

import numpy as np
from sklearn.utils import check_random_state

from ._mlp import (backward, check_positive_float, forward, per_example_sq_norms,
                   per_sample_loss)
from .activations import get_activation
from .query import GradientQuery

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
    weight_std = check_positive_float(weight_std, "weight_std",
                                       auto=1.0 / np.sqrt(n_inputs))
    bias_std = (check_positive_float(bias_std, "bias_std")
                if bias == "gaussian" else 0.0)
    hidden = _check_hidden_layers(hidden_layers)
    fan_in_out = hidden[-1][0] if hidden else n_neurons
    output_weight_std = check_positive_float(
        output_weight_std, "output_weight_std", auto=1.0 / np.sqrt(fan_in_out))
    if dp_clip_norm is not None:
        dp_clip_norm = check_positive_float(dp_clip_norm, "dp_clip_norm")
    dp_noise_multiplier = check_positive_float(
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
    zs, inputs, output = forward(batch, layers)
    _, dout = per_sample_loss(output, compute_targets, loss)
    deltas = backward(zs, layers, dout)

    coef = np.ones(n_samples)
    if dp_clip_norm is not None:
        norms = np.sqrt(per_example_sq_norms(deltas, inputs, layers))
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
