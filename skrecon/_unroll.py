"""The client's local SGD steps, simulated exactly and differentiably (PyTorch).

:mod:`skrecon.fedavg` reconstructs a batch from the parameters a client
returns after several local steps. Its polish needs the returned parameters
as a function of the unknown batch, and of the unknown order in which the
client visited it: this module runs ``torch.optim.SGD``'s update rule
(momentum, weight decay, no dampening, no Nesterov) by hand, with
``torch.func``, so that every quantity is a differentiable function of

- the samples, written in the span of the first layer's update
  (``v_i = c + coords_i B``, a few coordinates per sample instead of ``d``),
- soft targets ``q_i`` (one row per sample; a one-hot row is a label: the
  cross-entropy ``-sum_k q_ik log softmax(z_i)_k`` is linear in ``q_i``),
- the membership ``w_{i,t}`` of sample ``i`` in step ``t`` (1 when the
  client's step ``t`` used sample ``i``, 0 otherwise), fixed by the order.

A Levenberg-Marquardt driver over these unknowns forms the small normal
matrix ``J^T J`` from batched Jacobian-vector products (forward-mode
automatic differentiation of the hand-written backward pass), and from
vector-Jacobian products where the Jacobian itself would not fit in memory.
"""

from dataclasses import dataclass

import numpy as np

from ._activation_probe import identify_activation


@dataclass(frozen=True)
class Schedule:
    """What the server knows of the client's local training."""

    learning_rate: float
    momentum: float
    weight_decay: float
    n_samples: int
    batch_size: int
    epochs: int

    @property
    def steps_per_epoch(self):
        return -(-self.n_samples // self.batch_size)

    @property
    def n_steps(self):
        return self.steps_per_epoch * self.epochs

    def step_sizes(self):
        """The number of samples of each step of one epoch (the last may be short)."""
        sizes = [self.batch_size] * self.steps_per_epoch
        sizes[-1] = self.n_samples - self.batch_size * (self.steps_per_epoch - 1)
        return sizes


def memberships(orders, schedule):
    """0/1 membership array ``(n_steps, n_samples)`` of a list of per-epoch orders."""
    w = np.zeros((schedule.n_steps, schedule.n_samples))
    sizes = schedule.step_sizes()
    t = 0
    for order in orders:
        start = 0
        for size in sizes:
            w[t, np.asarray(order[start:start + size])] = 1.0
            start += size
            t += 1
    return w


def mlp_layers(torch, model):
    """The model as a chain of ``nn.Linear`` and element-wise activations.

    Returns a list of ``("linear", weight_name, bias_name or None)`` and
    ``("act", module)`` items, or raises ``ValueError`` naming what is not
    an MLP layer.
    """
    from torch import nn

    elementwise = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.SiLU,
                   nn.ELU, nn.Softplus, nn.Identity)
    layers, linears = [], []
    for name, module in model.named_modules():
        if list(module.children()):
            if not isinstance(module, nn.Sequential) and module is not model:
                raise ValueError(_NOT_MLP.format(what=f"the module {name!r} "
                                                 f"({type(module).__name__})"))
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Linear):
            layers.append(("linear", prefix + "weight",
                           prefix + "bias" if module.bias is not None else None))
            linears.append((name, module))
        elif isinstance(module, elementwise):
            layers.append(("act", module))
        elif isinstance(module, nn.Dropout) and not module.training:
            continue
        else:
            raise ValueError(_NOT_MLP.format(what=f"the module {name!r} "
                                             f"({type(module).__name__})"))
    if not layers or layers[0][0] != "linear" or layers[-1][0] != "linear":
        raise ValueError(_NOT_MLP.format(what="a model that does not start and end "
                                         "with nn.Linear"))
    return _measured_activations(torch, model, layers, linears)


# skrecon's activations that the simulation runs as torch modules
_TORCH_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "sigmoid": "Sigmoid",
                      "leaky_relu": "LeakyReLU", "elu": "ELU", "gelu": "GELU",
                      "silu": "SiLU", "softplus": "Softplus", "identity": "Identity"}


def _measured_activations(torch, model, layers, linears):
    """``layers`` with each activation the forward pass applies, measured.

    A model may apply its activation in ``forward`` (``torch.tanh(x)``) and
    hold no activation module: the walk of its modules then sees two linear
    layers in a row, and a simulation without the activation would stall.
    Between each two consecutive linear layers the forward pass is probed
    (:func:`skrecon._activation_probe.identify_activation`); a measured
    activation replaces or fills in the module's, and one that is not among
    the activations the simulation runs raises.
    """
    from torch import nn

    names = {cls: name for name, cls in _TORCH_ACTIVATIONS.items()}
    out, k = [], 0
    for i, item in enumerate(layers):
        out.append(item)
        if item[0] != "linear":
            continue
        k += 1
        if k == len(linears):
            break
        module = layers[i + 1][1] if layers[i + 1][0] == "act" else None
        default_leaky = (not isinstance(module, nn.LeakyReLU)
                         or module.negative_slope == 0.01)
        from_module = names.get(type(module).__name__) if default_leaky else None
        (name1, lin1), (name2, lin2) = linears[k - 1], linears[k]
        measured, reason = identify_activation(torch, model, lin1, lin2, from_module)
        if measured == from_module and module is not None:
            continue
        if not isinstance(measured, str) or measured not in _TORCH_ACTIVATIONS:
            what = (f"{reason}" if measured is None else
                    f"it applies {getattr(measured, 'name', measured)!r}, which the "
                    "simulation does not run")
            raise ValueError(
                f"skrecon.fedavg simulates the client's local steps with the activation "
                f"its forward pass applies between the linear layers {name1!r} and "
                f"{name2!r}, measured on known pre-activations: {what}. Supported: "
                f"{sorted(_TORCH_ACTIVATIONS)}, as modules (nn.Tanh()) or functions "
                "in forward (torch.tanh).")
        act = getattr(nn, _TORCH_ACTIVATIONS[measured])()
        if module is None:
            out.append(("act", act))
        else:
            layers[i + 1] = ("act", act)
    _check_chain(torch, model, out, [module for _, module in linears])
    return out


def _check_chain(torch, model, layers, linears):
    """Raise unless ``model(x)`` is ``layers`` applied in order, on random inputs.

    The walk of the modules and the probes between linear layers cannot see
    what ``forward`` does before the first layer or around the layers (an
    input normalisation ``(x - 0.5) / 0.25``, a residual connection, an
    output divided by a temperature); simulated without it, the steps either
    stall or, for an input transform, reproduce the update exactly with the
    transformed inputs, which would be returned as the client's samples.
    """
    first = linears[0]
    dtype = first.weight.dtype
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, first.in_features, generator=gen, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        expected = model(x)
        y, k = x, 0
        for item in layers:
            if item[0] == "linear":
                y = linears[k](y)
                k += 1
            else:
                y = item[1](y)
        if expected.shape != y.shape:
            gap = float("inf")
        else:
            gap = float(torch.linalg.norm(expected - y) / torch.linalg.norm(expected))
    tol = 100 * torch.finfo(dtype).eps
    if not gap <= tol:
        raise ValueError(_NOT_MLP.format(what=(
            "a forward pass that is not its layers applied in order (on random "
            f"inputs, model(x) differs from them by a relative {gap:.2g}: an input "
            "transform before the first nn.Linear, a residual connection or a "
            "scaled output)")))


_NOT_MLP = (
    "skrecon.fedavg simulates the client's local steps for a multilayer "
    "perceptron: nn.Linear layers and element-wise activations (Tanh, ReLU, "
    "Sigmoid, LeakyReLU, GELU, SiLU, ELU, Softplus) applied in order, with a "
    "cross-entropy loss on the last layer's outputs; {what} is out of scope.")


class FixedSlope:
    """A piecewise-linear activation with its pattern held fixed: ``t *
    slopes`` (``slopes`` (n_samples, n_neurons): each entry's slope, 1 or 0
    for ReLU), smooth in ``t``; ReLU's and leaky ReLU's own value wherever
    the pattern is theirs."""

    def __init__(self, slopes):
        self.slopes = slopes

    def __call__(self, t):
        return t * self.slopes


def slope(torch, module, t, out):
    """``module'(t)`` element-wise, ``out = module(t)``.

    Closed forms where they are cheap; otherwise forward-mode
    differentiation (which nests in ``jvp`` and ``vmap``).
    """
    from torch import nn
    from torch.func import jvp

    if isinstance(module, nn.Tanh):
        return 1.0 - out * out
    if isinstance(module, nn.Sigmoid):
        return out * (1.0 - out)
    if isinstance(module, FixedSlope):
        return module.slopes
    if isinstance(module, nn.ReLU):
        return (t > 0).to(t.dtype)
    if isinstance(module, nn.Identity):
        return torch.ones_like(t)
    return jvp(module, (t,), (torch.ones_like(t),))[1]


def step_gradient(torch, layers, params, X, Q, w, size):
    """The gradient of ``sum_i w_i CE(f(x_i), q_i) / size``, by hand.

    An explicit forward and backward pass (the chain rule written out for
    the MLP), so that forward- and reverse-mode differentiation of the
    local steps never differentiate through autograd itself.
    """
    inputs, pre = [], []
    h = X
    for kind, *rest in layers:
        if kind == "linear":
            inputs.append(h)
            h = h @ params[rest[0]].T
            if rest[1] is not None:
                h = h + params[rest[1]]
        else:
            t = h
            h = rest[0](h)
            pre.append((t, h))
    probs = torch.softmax(h, dim=1)
    delta = (probs * Q.sum(dim=1, keepdim=True) - Q) * (w / size)[:, None]
    grads = {}
    for kind, *rest in reversed(layers):
        if kind == "linear":
            x_in = inputs.pop()
            grads[rest[0]] = delta.T @ x_in
            if rest[1] is not None:
                grads[rest[1]] = delta.sum(dim=0)
            delta = delta @ params[rest[0]]
        else:
            delta = delta * slope(torch, rest[0], *pre.pop())
    return grads


def simulate(torch, layers, params, X, Q, W, schedule, n_steps=None, patterns=None,
             before_step=None):
    """The parameters after the local steps, as a dict of tensors.

    ``X`` (n_samples, d), ``Q`` (n_samples, K) soft targets, ``W``
    (n_steps, n_samples) memberships; step ``t``'s loss is
    ``sum_i W[t, i] CE(f(x_i), q_i) / size_t`` with ``size_t`` the number of
    samples of the step (PyTorch's mean reduction); ``n_steps`` stops after
    that many steps (default: all); ``patterns`` (a list over the steps of a
    list over the activation layers of :class:`FixedSlope`), when given,
    replace the activations step by step (a piecewise-linear net with its
    patterns fixed, smooth in the samples); ``before_step(t, params)`` is
    called with the parameters before each step. The update is
    ``torch.optim.SGD``'s (no dampening, no Nesterov): ``d = g + wd p``,
    ``buf = d`` at the first step and ``mu buf + d`` after, ``p -= lr buf``.
    """
    sizes = schedule.step_sizes() * schedule.epochs
    lr, mu, wd = schedule.learning_rate, schedule.momentum, schedule.weight_decay
    buffers = None
    for t in range(schedule.n_steps if n_steps is None else n_steps):
        if before_step is not None:
            before_step(t, params)
        step_layers = layers
        if patterns is not None:
            fixed = iter(patterns[t])
            step_layers = [("act", next(fixed)) if kind == "act" else (kind, *rest)
                           for kind, *rest in layers]
        g = step_gradient(torch, step_layers, params, X, Q, W[t], sizes[t])
        d = {k: g[k] + wd * params[k] for k in g} if wd else g
        if mu:
            buffers = d if buffers is None else {k: mu * buffers[k] + d[k] for k in d}
            d = buffers
        params = {k: params[k] - lr * d[k] for k in params}
    return params


class Unknowns:
    """Packing of the unknowns: the samples' span coordinates and soft targets.

    ``v_i = offset + coords_i @ basis`` (``basis`` (r, n), ``offset`` (n,)):
    the sample's input in the ``n`` coordinates of the span (or in the input
    space itself), and ``q_i`` (K,) with ``sum(q_i) = 1``.
    """

    def __init__(self, schedule, basis, offset, n_classes):
        self.schedule = schedule
        self.basis = basis
        self.offset = offset
        self.n_classes = n_classes
        n, r = schedule.n_samples, basis.shape[0]
        # targets sum to 1 (the last coordinate is 1 minus the others): the
        # cross-entropy gradient p sum(q) - q is unchanged by q + a p, a gauge
        # that would let a confident sample's label drift
        self.sizes = [n * r, n * (n_classes - 1)]
        self.size = int(sum(self.sizes))

    def split(self, torch, z):
        n, r = self.schedule.n_samples, self.basis.shape[0]
        a = self.sizes[0]
        X = self.offset + z[:a].reshape(n, r) @ self.basis
        free = z[a:].reshape(n, self.n_classes - 1)
        Q = torch.cat([free, 1.0 - free.sum(dim=1, keepdim=True)], dim=1)
        return X, Q

    def pack(self, coords, Q):
        Q = np.asarray(Q)
        Q = Q + (1.0 - Q.sum(axis=1, keepdims=True)) / Q.shape[1]  # onto sum 1
        return np.concatenate([np.ravel(coords), np.ravel(Q[:, :-1])])


def flat_parameters(torch, params, names):
    return torch.cat([params[k].reshape(-1) for k in names])


# the Jacobian is formed (forward mode only, then one matrix product) when
# it fits in this many bytes; beyond, J^T J comes from Jacobian-vector and
# vector-Jacobian products without it (twice the differentiation work)
JACOBIAN_BYTES = 2 ** 30


def jacobian(torch, fun, z, chunk, r=None):
    """``(J^T, r)`` of ``fun`` at ``z``: ``J`` applied to ``chunk`` unit
    vectors at a time (forward mode, batched with ``vmap``); ``r``, when the
    caller has it, is ``fun(z)`` and not evaluated again."""
    from torch.func import jvp, vmap

    def push(v):
        return jvp(fun, (z,), (v,))[1]

    n = z.numel()
    eye = torch.eye(n, dtype=z.dtype)
    if r is None:
        with torch.no_grad():
            r = fun(z)
    Jt = torch.empty((n, r.numel()), dtype=z.dtype)
    for start in range(0, n, chunk):
        Jt[start:start + chunk] = vmap(push)(eye[start:start + chunk])
    return Jt, r


def normal_equations(torch, fun, z, chunk, max_bytes=JACOBIAN_BYTES):
    """``(J^T J, J^T r, r)`` of ``fun`` at ``z``.

    ``J`` is applied to ``chunk`` unit vectors at a time (forward mode,
    batched with ``vmap``). When ``J`` fits in ``max_bytes`` its columns are
    kept and ``J^T J`` is one matrix product; otherwise ``J^T`` is applied
    to each batch of columns (reverse mode) and ``J`` is never stored.
    """
    from torch.func import jvp, vjp, vmap

    def push(v):
        return jvp(fun, (z,), (v,))[1]

    n = z.numel()
    eye = torch.eye(n, dtype=z.dtype)
    with torch.no_grad():
        r = fun(z)
    if n * r.numel() * r.element_size() <= max_bytes:
        Jt, r = jacobian(torch, fun, z, chunk, r)
        JtJ, Jtr = Jt @ Jt.T, Jt @ r
    else:
        r, pullback = vjp(fun, z)
        JtJ = torch.empty((n, n), dtype=z.dtype)
        for start in range(0, n, chunk):
            Jv = vmap(push)(eye[start:start + chunk])
            JtJ[:, start:start + chunk] = vmap(pullback)(Jv)[0].T
        Jtr = pullback(r)[0]
    return 0.5 * (JtJ + JtJ.T), Jtr, r


@dataclass(frozen=True)
class Fit:
    """Outcome of :func:`levenberg_marquardt`."""

    z: np.ndarray
    cost: float
    n_iter: int
    nfev: int
    status: int


def _solve(torch, JtJ, D, lam, g):
    try:
        return torch.linalg.solve(JtJ + lam * torch.diag(D), -g)
    except RuntimeError:  # singular: a larger damping
        return None


def levenberg_marquardt(torch, fun, z0, *, max_iter, ftol, chunk=16, verbose=0):
    """Minimise ``||fun(z)||^2 / 2`` by Levenberg-Marquardt (Marquardt scaling).

    ``J^T J`` is the expensive part (one Jacobian-vector product per
    unknown, see :func:`normal_equations`); it is formed ``max_iter`` times at
    most. Between two of them, steps reuse it with the current gradient
    ``J^T r`` (one vector-Jacobian product: a chord step) while each cuts the
    cost at least tenfold.

    Returns a :class:`Fit`: ``status`` 1 the cost fell to ``ftol``, 2 no step
    decreased the cost or five normal matrices in a row did not halve it (a
    stationary point, round-off or a crawl), 0 ``max_iter`` normal matrices
    were formed.
    """
    from torch.func import vjp

    z = torch.as_tensor(z0, dtype=torch.float64).clone()
    with torch.no_grad():
        r = fun(z)
    cost = 0.5 * float(r @ r)
    lam, nfev, status, it = 1e-3, 1, 0, 0
    history = [cost]
    while it < max_iter:
        if cost <= ftol:
            status = 1
            break
        JtJ, g, _ = normal_equations(torch, fun, z, chunk)
        it += 1
        D = torch.diagonal(JtJ).clone()
        D = torch.clamp(D, min=1e-12 * float(D.max()))
        improved = False
        for _ in range(20):
            step = _solve(torch, JtJ, D, lam, g)
            if step is None:
                lam *= 10.0
                continue
            with torch.no_grad():
                r_new = fun(z + step)
            nfev += 1
            cost_new = 0.5 * float(r_new @ r_new)
            # gain ratio: the actual decrease over the linear model's
            predicted = -float(g @ step + 0.5 * step @ (JtJ @ step))
            rho = (cost - cost_new) / predicted if predicted > 0 else -1.0
            if np.isfinite(cost_new) and cost_new < cost and rho > 0.1:
                z, r, cost, improved = z + step, r_new, cost_new, True
                lam = max(lam / 5.0, 1e-15) if rho > 0.75 else (
                    lam * 2.0 if rho < 0.25 else lam)
                break
            lam *= 6.0
        if not improved:
            status = 2
            break
        # chord steps: the same J^T J, a fresh gradient
        while cost > ftol:
            _, pullback = vjp(fun, z)
            step = _solve(torch, JtJ, D, lam, pullback(r)[0])
            if step is None:
                break
            with torch.no_grad():
                r_new = fun(z + step)
            nfev += 1
            cost_new = 0.5 * float(r_new @ r_new)
            if not (np.isfinite(cost_new) and cost_new < cost):
                break
            fast = cost_new < 0.1 * cost
            z, r, cost = z + step, r_new, cost_new
            if not fast:
                break
        if verbose:
            print(f"  LM {it}: cost {cost:.3e}, damping {lam:.1e}, {nfev} evaluations")
        history.append(cost)
        # a stall: five normal matrices that did not halve the cost
        if len(history) > 6 and cost > 0.5 * history[-6] and cost > ftol:
            status = 2
            break
    else:
        status = 1 if cost <= ftol else 0
    return Fit(z.detach().numpy(), cost, it, nfev, status)
