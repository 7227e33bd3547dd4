"""The reference MLP's numerics: forward and backward passes, per-sample losses.

Plain functions of NumPy arrays, shared by the simulated client
(:func:`skrecon.clients.make_gradient_query` runs the client's passes) and the
query (:meth:`skrecon.query.GradientQuery.loss_value` evaluates the loss), and
the positive-float check that the client and the PyTorch adapter apply to
their standard deviations. A network is a list of layers, each ``{"weight":
(out, in), "bias": (out,) or None, "activation": name, Activation or None}``;
the last one is the linear output layer.
"""

import numbers

import numpy as np

from .activations import get_activation

__all__ = ["check_positive_float", "forward", "per_sample_loss", "backward",
           "per_example_sq_norms", "reduce_loss"]


def check_positive_float(value, name, *, allow_zero=False, auto=None):
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``);
    ``"auto"`` gives ``auto`` when that is not ``None``. A ``ValueError``
    names ``name`` otherwise."""
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


def forward(batch, layers):
    """Pre-activations ``zs[l]``, layer inputs ``inputs[l]`` of every layer,
    and the network's output ``(B, K)``."""
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


def per_sample_loss(output, targets, loss):
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


def backward(zs, layers, dout):
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


def per_example_sq_norms(deltas, inputs, layers):
    """Squared norms of every sample's full-model gradient (all parameters)."""
    sq = np.zeros(deltas[0].shape[0], dtype=np.float64)
    for delta, h, layer in zip(deltas, inputs, layers):
        d2 = np.sum(np.asarray(delta, np.float64) ** 2, axis=1)
        h2 = np.sum(np.asarray(h, np.float64) ** 2, axis=1)
        sq += d2 * (h2 + (layer["bias"] is not None))
    return sq


def reduce_loss(losses, reduction):
    """The batch loss from the per-sample ones: their mean or their sum."""
    return losses.mean() if reduction == "mean" else losses.sum()
