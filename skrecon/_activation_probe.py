"""What a PyTorch model's forward pass applies between two linear layers.

A model may apply its activation as a module (``nn.Tanh()``) or as a
function in ``forward`` (``torch.relu``, ``F.gelu``, ``x.tanh()``), which
no walk of its modules can see. :func:`identify_activation` measures it:
one forward pass with the first layer's output replaced by known
pre-activations, the second layer's input caught, and the values matched
against skrecon's activations. Used by :func:`skrecon.torch.first_layer_query`;
PyTorch is passed in (``torch``), never imported here.
"""

import numpy as np

from .activations import ACTIVATIONS, get_activation

__all__ = ["identify_activation"]


class _Probed(Exception):
    """Stops the probing forward pass at the second layer's input."""


# The probe's pre-activations: at least this many values, evenly in
# [-_PROBE_RANGE, _PROBE_RANGE], where every pair of skrecon's activations
# differs by at least 0.038 (relative to 1 + |h|) and torch's float32
# functions match skrecon's to 1e-6, and _PROBE_TAIL more out to
# +-_PROBE_REACH (ReLU6, clamp(0, 5) and hardtanh(-5, 5) agree with ReLU or
# the identity on [-4, 4], and were taken for them)
_PROBE_POINTS = 256
_PROBE_RANGE = 4.0
_PROBE_TAIL = 32
_PROBE_REACH = 16.0  # (torch.nn.functional.softplus is x beyond 20)
_PROBE_ULPS = 64


def _probe(torch, model, lin1, lin2):
    """What the forward pass does between the two layers, measured.

    Runs ``model`` on rows of zeros, replaces the first layer's output by
    a grid of known pre-activations ``z`` (a forward hook) and catches the
    second layer's input ``h`` (a pre-hook that stops the pass there, so no
    later layer runs), without gradients, with the CPU random state and the
    model's buffers (e.g. a BatchNorm's running statistics) restored.
    Returns ``(z, h)`` as float64 arrays, or ``(None, reason)`` when the
    forward pass does not take such rows or does not lead from
    the first layer's output to the second layer's input elementwise."""
    m = lin1.out_features
    rows = -(-(_PROBE_POINTS + _PROBE_TAIL) // m)
    tail = np.geomspace(_PROBE_RANGE * 1.25, _PROBE_REACH, _PROBE_TAIL // 2)
    z = np.concatenate([np.linspace(-_PROBE_RANGE, _PROBE_RANGE, rows * m - 2 * len(tail)),
                        tail, -tail]).reshape(rows, m)
    weight = lin1.weight
    caught = {}

    def replace(module, args, output):
        return torch.as_tensor(z, dtype=output.dtype, device=output.device)

    def catch(module, args):
        caught["h"] = args[0]
        raise _Probed

    hooks = [lin1.register_forward_hook(replace), lin2.register_forward_pre_hook(catch)]
    x = torch.zeros(rows, lin1.in_features, dtype=weight.dtype, device=weight.device)
    devices = [weight.device] if weight.device.type == "cuda" else []
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            model(x)
    except _Probed:
        pass
    except Exception as exc:  # noqa: BLE001 - any model's forward may refuse the rows
        return None, (f"the forward pass on rows of {lin1.in_features} inputs raised "
                      f"{type(exc).__name__}: {exc}")
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    if "h" not in caught:
        return None, "the forward pass did not reach the second layer"
    h = caught["h"]
    if not isinstance(h, torch.Tensor) or tuple(h.shape) != z.shape:
        return None, ("the second layer's input is not the first layer's output "
                      "transformed elementwise (another shape)")
    return z, h.detach().to("cpu", torch.float64).numpy()


def _deviation(activation, z, h):
    """Largest ``|h - act(z)| / (1 + |h|)``."""
    with np.errstate(all="ignore"):
        expected = np.asarray(activation(z), dtype=np.float64)
    return float(np.max(np.abs(h - expected) / (1.0 + np.abs(h))))


def _leaky_slope(z, h, tol):
    """The negative slope ``a`` in ``(0, 1)`` of a leaky ReLU the forward
    pass applies (``F.leaky_relu(x, a)`` with another slope than the
    default), or ``None``."""
    positive, negative = z > 0, z < 0
    if np.max(np.abs(h[positive] - z[positive]) / (1 + np.abs(h[positive]))) > tol:
        return None
    slope = float(np.median(h[negative] / z[negative]))
    if not 0 < slope < 1:
        return None
    if np.max(np.abs(h[negative] - slope * z[negative]) / (1 + np.abs(h[negative]))) > tol:
        return None
    return slope


def identify_activation(torch, model, lin1, lin2, from_module):
    """The activation between the two layers and, when there is none,
    why: the module's when the forward pass applies it, else the one
    activation of skrecon's table that the forward pass applies (a
    functional ``torch.relu``, ``F.gelu``, ``x.tanh()`` ...)."""
    z, h = _probe(torch, model, lin1, lin2)
    if z is None:
        return from_module, None if from_module is not None else (
            f"no activation module lies between them, and {h}")
    tol = _PROBE_ULPS * float(torch.finfo(lin1.weight.dtype).eps)
    if from_module is not None and _deviation(get_activation(from_module), z, h) <= tol:
        return from_module, None
    deviations = {name: _deviation(act, z, h) for name, act in ACTIVATIONS.items()}
    matches = [name for name, dev in deviations.items() if dev <= tol]
    if len(matches) == 1:
        return matches[0], None
    if matches:
        return None, (f"the forward pass between them matches several of skrecon's "
                      f"activations ({matches}) in {lin1.weight.dtype}")
    slope = _leaky_slope(z, h, tol)
    if slope is not None:
        if lin1.weight.dtype == torch.float32:  # the slope as the model holds it
            slope = float(np.float32(slope))
        return get_activation("leaky_relu", negative_slope=slope), None
    nearest = min(deviations, key=deviations.get)
    return None, (
        f"the forward pass between them applies none of skrecon's activations "
        f"(measured on {z.size} pre-activations in [-{_PROBE_REACH:g}, "
        f"{_PROBE_REACH:g}]: the nearest, {nearest!r}, is off by "
        f"{deviations[nearest]:.2g})")
