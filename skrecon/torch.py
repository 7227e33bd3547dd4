"""Optional PyTorch adapter: gradient queries from a real ``torch.nn`` model.

A federated-learning server that trains an MLP in PyTorch re-initialises its
first two linear layers with Gaussian weights (:func:`gaussian_reinit_`) and
sends the model; the client runs ``loss.backward()`` on its private batch
and returns the gradients. :func:`first_layer_query` turns the model and its
``.grad`` attributes into the arrays :class:`skrecon.GradientReconstructor`
takes, and :func:`full_model_gradient` returns every parameter's gradient
(for label recovery through the last layer in deeper nets).

PyTorch is an optional dependency (``pip install "skrecon[torch]"``). It is
imported when one of these functions is called, so ``import skrecon.torch``
works without it. This module's name does not shadow PyTorch: inside it,
``import torch`` is an absolute import of the real package.

Layers are found by walking ``model.named_modules()`` in order and are
reported by their names (``"0"``, ``"fc1"``, ...), never by their position in
a flat parameter list. Only a first layer that is an ``nn.Linear`` is in
scope: convolutional first layers, BatchNorm in train mode and dropout
between the first two linear layers are not (the README's threat model
and :ref:`theory-requirements`), and raise.
"""

import numbers
import warnings

import numpy as np

from ._labels import looks_like_cross_entropy
from ._activation_probe import identify_activation
from ._mlp import check_positive_float
from ._optional import import_optional
from .activations import ACTIVATIONS, get_activation
from .exceptions import IdentifiabilityWarning, UnknownActivationWarning
from .query import GradientQuery

__all__ = ["first_layer_query", "gaussian_reinit_", "full_model_gradient",
           "labels_from_output_layer"]


def _import_torch():
    """Import PyTorch, or raise an ImportError that says how to install it."""
    # an absolute import: the real PyTorch, not this module
    return import_optional("torch", feature="skrecon.torch", package="PyTorch",
                           extra="torch")


def _check_module(torch, model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}.")


# Parameterised first layers that are out of scope, by family, for the error.
_CONV_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
               "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d")


def _is_conv(module):
    torch = _import_torch()
    return isinstance(module, torch.nn.modules.conv._ConvNd) or \
        type(module).__name__ in _CONV_TYPES


def _leaves_with_parameters(model):
    """``(name, module)`` of each module owning parameters, in module order."""
    return [(name, mod) for name, mod in model.named_modules()
            if any(True for _ in mod.parameters(recurse=False))]


def _describe(name, module):
    return f"{name!r} ({type(module).__name__})" if name else \
        f"the model itself ({type(module).__name__})"


def _out_of_scope_first(name, module):
    if _is_conv(module):
        return ValueError(
            f"The first layer with parameters is {_describe(name, module)}, a "
            "convolutional layer: convolutional first layers are out of scope "
            "for skrecon (the gradient model g_j = sum_i (a_j . u_i) "
            "sigma'(w_j . x_i + b_j) x_i needs a fully connected first layer, "
            "nn.Linear).")
    return ValueError(
        f"The first layer with parameters is {_describe(name, module)}, not "
        "nn.Linear: skrecon needs a fully connected first layer (pass "
        "first='<name>' to pick another nn.Linear explicitly).")


def _find_layers(model, first, second):
    """Names and modules of the first and the next ``nn.Linear``."""
    torch = _import_torch()
    Linear = torch.nn.Linear
    modules = list(model.named_modules())
    names = [name for name, _ in modules]
    linear_names = [name for name, mod in modules if isinstance(mod, Linear)]

    def lookup(name, what):
        if not isinstance(name, str):
            raise TypeError(
                f"{what} must be 'auto' or a module name (str), got {name!r}.")
        if name not in names:
            raise ValueError(
                f"{what}={name!r} names no module of the model; its nn.Linear "
                f"modules are {linear_names}.")
        mod = modules[names.index(name)][1]
        if not isinstance(mod, Linear):
            if what == "first":
                raise _out_of_scope_first(name, mod)
            raise ValueError(
                f"{what}={name!r} is a {type(mod).__name__}, not nn.Linear; its "
                f"nn.Linear modules are {linear_names}.")
        return names.index(name)

    if first == "auto":
        owners = _leaves_with_parameters(model)
        if not owners:
            raise ValueError("The model has no parameters, hence no first layer.")
        name0, mod0 = owners[0]
        if not isinstance(mod0, Linear):
            raise _out_of_scope_first(name0, mod0)
        i_first = names.index(name0)
    else:
        i_first = lookup(first, "first")
    if second == "auto":
        later = [i for i in range(i_first + 1, len(modules))
                 if isinstance(modules[i][1], Linear)]
        if not later:
            raise ValueError(
                f"No nn.Linear follows the first layer {names[i_first]!r} (the "
                f"model's nn.Linear modules: {linear_names}): skrecon needs the "
                "next layer's weights (output_weights), so the first layer must "
                "be followed by another nn.Linear.")
        i_second = later[0]
    else:
        i_second = lookup(second, "second")
        if i_second == i_first:
            raise ValueError("first and second name the same module.")
    lin1, lin2 = modules[i_first][1], modules[i_second][1]
    if lin2.in_features != lin1.out_features:
        raise ValueError(
            f"The next nn.Linear {names[i_second]!r} has in_features="
            f"{lin2.in_features} but the first layer {names[i_first]!r} has "
            f"out_features={lin1.out_features}: the layer found next does not "
            "take the first layer's output. Pass second='<name>' explicitly.")
    between = [modules[i] for i in range(i_first + 1, i_second)
               if not any(True for _ in modules[i][1].children())]
    return (names[i_first], lin1), (names[i_second], lin2), between


# Elementwise activation modules and the skrecon activation they are.
def _activation_name(module):
    torch = _import_torch()
    nn = torch.nn
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    if isinstance(module, nn.LeakyReLU):
        slope = float(module.negative_slope)
        return "leaky_relu" if slope == 0.01 else get_activation(
            "leaky_relu", negative_slope=slope)
    if isinstance(module, nn.ELU):
        alpha = float(module.alpha)
        return "elu" if alpha == 1.0 else get_activation("elu", alpha=alpha)
    if isinstance(module, nn.Softplus):
        return "softplus" if module.beta == 1 else None
    return None


def _check_between(between):
    """Reject layers between the two Linear layers that break the gradient model."""
    torch = _import_torch()
    nn = torch.nn
    activation = None
    for name, mod in between:
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            # (model.eval() was suggested here, and then refused below as a
            # layer with parameters: a tester)
            raise ValueError(
                f"{name!r} is a {type(mod).__name__} between the first two linear "
                "layers, which skrecon does not support in either mode: in train "
                "mode it couples the samples of the batch (out of scope); in eval "
                "mode it is a per-neuron affine map that skrecon does not fold "
                "into the first layer.")
        dropout = isinstance(mod, nn.modules.dropout._DropoutNd)
        if dropout and mod.training and mod.p > 0:
            raise ValueError(
                f"{name!r} is a {type(mod).__name__} (p={mod.p}) in train mode "
                "between the first two linear layers: its random mask breaks the "
                "gradient model, which is out of scope for skrecon. Put it in "
                "eval mode or use p=0.")
        if any(True for _ in mod.parameters(recurse=False)):
            raise ValueError(
                f"{name!r} ({type(mod).__name__}) has parameters and lies between "
                "the first two nn.Linear layers: skrecon needs only an "
                "elementwise activation there.")
        if activation is None:
            activation = _activation_name(mod)
    return activation


def _warn_masked_inputs(torch, model, lin1):
    """Warn of a dropout in train mode before the first layer: the gradient
    shows the inputs after its mask, and so does the reconstruction."""
    for name, mod in model.named_modules():
        if mod is lin1:
            return
        if (isinstance(mod, torch.nn.modules.dropout._DropoutNd) and mod.training
                and mod.p > 0):
            # (6 digits through Dropout(0.2): every row flagged found, 4.5e-14
            # from the masked inputs and 0.60 from the client's: a tester)
            warnings.warn(
                f"{name!r} is a {type(mod).__name__} (p={mod.p}) in train mode "
                "before the first layer: the gradient shows the inputs after its "
                "random mask (zeros where it dropped a feature, the others scaled "
                f"by 1/(1 - p)), and the samples reconstructed are those masked "
                "inputs, not the client's data.", IdentifiabilityWarning,
                stacklevel=3)


def _to_numpy(torch, tensor):
    """A float32/float64 NumPy copy of a tensor, on the host."""
    t = tensor.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return np.array(t.cpu().numpy(), copy=True)


def _grad(name, param, what):
    if param.grad is None:
        if not param.requires_grad:
            raise ValueError(
                f"{name}.{what}.grad is None: the parameter is frozen "
                "(requires_grad=False); unfreeze it before the client's "
                "backward pass, the query needs its gradient.")
        raise ValueError(
            f"{name}.{what}.grad is None: call loss.backward() first, after "
            "the forward pass on the batch.")
    return param.grad


def first_layer_query(model, *, first="auto", second="auto"):
    """Read a gradient query off a PyTorch model after ``loss.backward()``.

    Parameters
    ----------
    model : torch.nn.Module
        The model the client trained on its batch, with ``.grad`` filled by
        ``loss.backward()`` (and before any optimizer step, which would
        change the weights).
    first : "auto" or str, default="auto"
        Name of the first layer, as in ``model.named_modules()`` (``"0"``
        in an ``nn.Sequential``, ``"fc1"`` in a custom module). ``"auto"``:
        the first module, in ``named_modules()`` order, that owns
        parameters; it must be an ``nn.Linear``.
    second : "auto" or str, default="auto"
        Name of the next layer, whose weights are the first layer's output
        weights. ``"auto"``: the next ``nn.Linear`` after ``first`` in
        ``named_modules()`` order.

    Returns
    -------
    query : skrecon.query.GradientQuery
        The query type of :func:`skrecon.clients.make_gradient_query`, so
        that ``rec.fit(q.grad, **q.fit_params)`` works for both:

        - ``grad``: ndarray of shape ``(m, d)``, or ``(m, d + 1)`` with the
          bias gradient as the last column -- the ``X`` of
          :meth:`skrecon.GradientReconstructor.fit`.
        - ``weights``: ndarray of the same shape, the first layer's
          weights (bias last).
        - ``output_weights``: ndarray of shape ``(m, K)``, the next
          layer's weight matrix transposed.
        - ``has_bias``: bool, whether the first layer has a bias (pass it to
          ``GradientReconstructor(bias=...)``); ``bias`` is ``"none"``,
          ``"zero"`` (every bias 0) or ``"gaussian"``.
        - ``layer_names``: the two layers' module names ``(first, second)``.
        - ``activation``: the activation the forward pass applies between
          the two layers, as skrecon names it (``"tanh"``, ``"relu"``, ...;
          an :class:`~skrecon.activations.Activation` for a leaky ReLU or
          ELU with another slope or alpha): the activation module found
          there, or, for a functional one (``torch.relu``, ``F.gelu``,
          ``x.tanh()`` in ``forward``), the one of
          :data:`~skrecon.activations.ACTIVATIONS` that the forward pass is
          measured to apply (see Notes). ``None``, with an
          :class:`~skrecon.exceptions.UnknownActivationWarning`, when it is
          none of them (e.g. ``nn.GELU(approximate="tanh")``) or cannot be
          measured.
        - ``weight_std``, ``bias_std``: the standard deviations of the first
          layer's weights and bias, as read off them.

        The private fields (``batch``, ``targets``, ``loss`` ...) are
        ``None``: the server does not know them. Arrays are float64 for a
        float64 model, float32 otherwise, copied to the host.

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    TypeError
        If ``model`` is not a ``torch.nn.Module``.
    ValueError
        If a gradient is missing (``.grad is None``: ``loss.backward()`` was
        not called); the first layer is not an ``nn.Linear`` (convolutional
        first layers are out of scope); there is no second ``nn.Linear`` or
        it does not take the first layer's output; a BatchNorm in train mode,
        a dropout in train mode or a layer with parameters sits between the
        two; or ``first``/``second`` name no such module.

    See Also
    --------
    gaussian_reinit_ : The server's random query weights.
    full_model_gradient : Every parameter's gradient, by name.

    Notes
    -----
    Layers are found in ``named_modules()`` order, which is the order in
    which they were registered: the forward order for ``nn.Sequential`` and
    for modules that create their layers in the order they use them.
    Otherwise name them with ``first`` and ``second``. The gradient model of
    :ref:`theory-model` (``g_j = sum_i (a_j . u_i) sigma'(w_j . x_i + b_j) x_i``)
    needs one elementwise activation between the two layers, and anything
    above the second layer (depth, losses, reductions) is allowed.

    The activation is measured: the model runs once on rows of zeros, without
    gradients, with the CPU random state and the model's buffers restored; a
    hook replaces the
    first layer's output by 256 known pre-activations in ``[-4, 4]``, another
    catches the second layer's input and stops the pass there (no later layer
    runs). The activation whose values match to 64 units of round-off of the
    model's dtype is the one the forward pass applies (every two of skrecon's
    activations differ by at least 0.038 there). A forward pass that does not
    take rows of ``in_features`` inputs leaves the activation module's
    name, if any.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skrecon.torch import first_layer_query, gaussian_reinit_
    >>> model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    >>> model = gaussian_reinit_(model, random_state=0)
    >>> x = torch.rand(4, 64, dtype=torch.float64)
    >>> nn.CrossEntropyLoss()(model(x), torch.tensor([1, 1, 5, 7])).backward()
    >>> q = first_layer_query(model)
    >>> q.grad.shape, q.weights.shape, q.output_weights.shape, q.has_bias
    ((32, 65), (32, 65), (32, 10), True)
    >>> q.layer_names, q.activation, sorted(q.fit_params)
    (('0', '2'), 'tanh', ['output_weights', 'weights'])
    """
    torch = _import_torch()
    _check_module(torch, model)
    (name1, lin1), (name2, lin2), between = _find_layers(model, first, second)
    activation, reason = identify_activation(torch, model, lin1, lin2,
                                             _check_between(between))
    if activation is None:
        warnings.warn(
            f"The activation between the layers {name1!r} and {name2!r} could not be "
            f"identified: {reason}. The query's activation is None and "
            "q.estimator_params has no 'activation', so "
            "GradientReconstructor(**q.estimator_params) would use its default, "
            "'tanh'. Pass GradientReconstructor(activation=...) with the model's "
            f"activation: one of {sorted(ACTIVATIONS)} or an "
            "skrecon.activations.Activation.", UnknownActivationWarning, stacklevel=2)
    _warn_masked_inputs(torch, model, lin1)
    label1 = name1 or "model"
    weight_grad = _grad(label1, lin1.weight, "weight")
    grads = [weight_grad]
    weights = [lin1.weight]
    has_bias = lin1.bias is not None
    if has_bias:
        grads.append(_grad(label1, lin1.bias, "bias")[:, None])
        weights.append(lin1.bias[:, None])
    with torch.no_grad():
        grad = _to_numpy(torch, torch.cat([g.detach() for g in grads], dim=1))
        W = _to_numpy(torch, torch.cat([w.detach() for w in weights], dim=1))
        A = _to_numpy(torch, lin2.weight.T)
    n_in = lin1.in_features
    bias_mode, bias_std = "none", 0.0
    if has_bias:
        bias_std = float(np.std(W[:, n_in], dtype=np.float64))
        bias_mode = "gaussian" if np.any(W[:, n_in] != 0) else "zero"
    return GradientQuery(
        grad=grad, weights=W, output_weights=A, activation=activation,
        bias=bias_mode, weight_std=float(np.std(W[:, :n_in], dtype=np.float64)),
        bias_std=bias_std, layer_names=(name1, name2))


def _torch_seed(random_state):
    """A 63-bit seed for a ``torch.Generator`` from a scikit-learn random_state."""
    if isinstance(random_state, (bool, np.bool_)):
        raise ValueError(f"random_state must be an int, a RandomState, a Generator "
                         f"or None, got {random_state!r}.")
    if isinstance(random_state, numbers.Integral):
        seed = int(random_state)
        if seed < 0:
            raise ValueError(f"random_state must be >= 0, got {seed}.")
        return seed
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if random_state is None or isinstance(random_state, np.random.RandomState):
        from sklearn.utils import check_random_state
        rng = check_random_state(random_state)
        return int(rng.randint(0, 2**62, dtype=np.int64))
    raise ValueError(f"random_state must be an int, a RandomState, a Generator or "
                     f"None, got {random_state!r}.")


def _check_std(value, name, default, *, allow_zero=False):
    """A standard deviation: ``None`` means ``default``; else as the client checks it."""
    if value is None:
        return float(default)
    return check_positive_float(value, name, allow_zero=allow_zero)


def gaussian_reinit_(model, *, weight_std=None, bias_std=0.5, output_std=None,
                     random_state=0, first="auto", second="auto"):
    """Re-initialise the first two linear layers with Gaussian weights, in place.

    What a server does before sending the query: the first layer gets
    i.i.d. ``N(0, weight_std**2)`` weights and an ``N(0, bias_std**2)`` bias
    (if it has one), the next layer ``N(0, output_std**2)`` weights and a
    zero bias. Draws come from a private ``torch.Generator`` seeded from
    ``random_state``; the global torch RNG is neither used nor advanced.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its first two ``nn.Linear`` layers are found as in
        :func:`first_layer_query`.
    weight_std : float or None, default=None
        Std of the first layer's weights; ``None`` is
        ``1 / sqrt(in_features)``.
    bias_std : float, default=0.5
        Std of the first layer's Gaussian bias (ignored without a bias);
        ``0`` gives a zero (constant) bias.
    output_std : float or None, default=None
        Std of the second layer's weights; ``None`` is
        ``1 / sqrt(fan_in)`` of that layer.
    random_state : int, RandomState instance, Generator or None, default=0
        Seed. An integer seeds the generator directly, so the same integer
        gives the same weights (bitwise, for a given dtype); other values
        draw a seed from it.
    first, second : "auto" or str, default="auto"
        Module names of the two layers, as in :func:`first_layer_query`.

    Returns
    -------
    model : torch.nn.Module
        The same model, modified in place.

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    ValueError
        For a model whose first layer is not an ``nn.Linear`` or that has no
        second one, a non-positive or non-finite std, or an invalid
        ``random_state``.

    See Also
    --------
    first_layer_query : Read the query back after ``loss.backward()``.

    Notes
    -----
    The values are drawn in float64 on the CPU (first weights, first bias,
    second weights, in that order) and then cast to each parameter's dtype
    and device, so a float32 and a float64 copy of a model see the same
    network up to rounding. Existing ``.grad`` attributes are left alone:
    the client should call ``model.zero_grad()`` before its backward pass.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skrecon.torch import gaussian_reinit_
    >>> def make():
    ...     return nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> a = gaussian_reinit_(make(), random_state=0)
    >>> b = gaussian_reinit_(make(), random_state=0)
    >>> bool(torch.equal(a[0].weight, b[0].weight)), bool(torch.all(a[2].bias == 0))
    (True, True)
    """
    torch = _import_torch()
    _check_module(torch, model)
    (_, lin1), (_, lin2), _ = _find_layers(model, first, second)
    weight_std = _check_std(weight_std, "weight_std", 1.0 / np.sqrt(lin1.in_features))
    bias_std = _check_std(bias_std, "bias_std", 0.5, allow_zero=True)
    output_std = _check_std(output_std, "output_std", 1.0 / np.sqrt(lin2.in_features))
    gen = torch.Generator(device="cpu").manual_seed(_torch_seed(random_state))

    def draw(param, std):
        values = torch.randn(param.shape, generator=gen, dtype=torch.float64) * std
        param.copy_(values.to(dtype=param.dtype, device=param.device))

    with torch.no_grad():
        draw(lin1.weight, weight_std)
        if lin1.bias is not None:
            draw(lin1.bias, bias_std)
        draw(lin2.weight, output_std)
        if lin2.bias is not None:
            lin2.bias.zero_()
    return model


def full_model_gradient(model):
    """Every parameter's gradient, by name, as NumPy arrays.

    For label recovery in deeper nets: once the samples are known, the
    server's forward pass gives each sample's last hidden features, and the
    last layer's gradient is linear in the per-sample output signals.

    Parameters
    ----------
    model : torch.nn.Module
        The model after ``loss.backward()``.

    Returns
    -------
    gradients : list of (str, ndarray)
        ``(name, grad)`` for each parameter that requires a gradient, in
        ``model.named_parameters()`` order (``"0.weight"``, ``"0.bias"``,
        ...), each ``grad`` of the parameter's shape (float64 for float64
        parameters, float32 otherwise), copied to the host. Frozen
        parameters (``requires_grad=False``) are left out.

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    ValueError
        If a parameter that requires a gradient has none (``.grad is
        None``: call ``loss.backward()`` first).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skrecon.torch import full_model_gradient
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    >>> model(torch.ones(1, 4)).sum().backward()
    >>> [(name, g.shape) for name, g in full_model_gradient(model)]
    [('0.weight', (3, 4)), ('0.bias', (3,)), ('2.weight', (2, 3)), ('2.bias', (2,))]
    """
    torch = _import_torch()
    _check_module(torch, model)
    out = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            raise ValueError(
                f"{name}.grad is None: call loss.backward() first, after the "
                "forward pass on the batch.")
        out.append((name, _to_numpy(torch, param.grad)))
    return out


def labels_from_output_layer(model, samples, *, last="auto"):
    """Labels of recovered samples from the output layer's gradient.

    In a net deeper than two layers the first layer's signals are not the
    output's, so the labels cannot be read off them. The server knows the
    whole model, though: a forward pass of the recovered ``samples`` gives
    each sample's input ``h_i`` to the last ``nn.Linear``, and that layer's
    gradient is linear in the per-sample output signals,
    ``dL/dW = sum_i delta_i h_i^T`` (and ``dL/db = sum_i delta_i``). The
    signals ``delta_i`` follow by least squares, and for softmax
    cross-entropy ``delta_i = (softmax(z_i) - onehot(y_i)) / B`` (or without
    ``1 / B`` for ``reduction="sum"``) has exactly one negative coordinate:
    the label.

    Parameters
    ----------
    model : torch.nn.Module
        The client's model after ``loss.backward()``, with the weights at
        which the gradient was taken.
    samples : array-like of shape (batch_size, n_inputs)
        The recovered batch, e.g. ``GradientReconstructor.samples_``.
    last : "auto" or str, default="auto"
        Name of the output layer in ``model.named_modules()``; ``"auto"``:
        the last ``nn.Linear``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``labels`` (ndarray of int64, shape (batch_size,), in the order of
        ``samples``: the coordinate of the smallest signal), ``signals``
        (ndarray of shape (batch_size, n_classes), the fitted
        ``delta_i``) and ``relative_residual`` (float,
        ``||dL/dW_fit - dL/dW|| / ||dL/dW||``: ~1e-15 when the samples are
        exact, large when they are not).

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    ValueError
        If ``samples`` is not a finite, non-empty 2-D array in the model's
        input layout, ``last`` names no ``nn.Linear``, the output layer has
        one unit, its gradient is missing or zero, or the samples' last
        hidden features have rank below ``batch_size`` (the signals are then
        not identifiable: the batch must not exceed the last hidden width,
        plus one with a bias).

    Warns
    -----
    UserWarning
        When a fitted signal does not look like a softmax cross-entropy one
        (coordinates summing to ~0, the label's carrying half of their
        absolute sum; with two classes, exactly one negative coordinate): not
        cross-entropy, or wrong samples. A trained net's near one-hot
        outputs pass (their other coordinates may be below round-off).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from skrecon.torch import labels_from_output_layer
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8),
    ...                       nn.Tanh(), nn.Linear(8, 5)).double()
    >>> batch = np.random.default_rng(0).uniform(size=(3, 4))
    >>> loss = nn.CrossEntropyLoss()(model(torch.as_tensor(batch)), torch.tensor([4, 0, 4]))
    >>> loss.backward()
    >>> result = labels_from_output_layer(model, batch)
    >>> result.labels, bool(result.relative_residual < 1e-12)
    (array([4, 0, 4]), True)
    """
    from sklearn.utils import Bunch

    torch = _import_torch()
    _check_module(torch, model)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or len(samples) == 0 or not np.all(np.isfinite(samples)):
        raise ValueError(
            f"samples must be a finite 2-D array (batch_size, n_inputs), got shape "
            f"{samples.shape}" + ("" if samples.ndim != 2 else " with NaN or inf") + ".")
    linears = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, torch.nn.Linear)]
    if last == "auto":
        if not linears:
            raise ValueError("The model has no nn.Linear output layer.")
        name, layer = linears[-1]
    else:
        found = dict(linears)
        if last not in found:
            raise ValueError(
                f"last={last!r} names no nn.Linear of the model; its nn.Linear "
                f"modules are {[n for n, _ in linears]}.")
        name, layer = last, found[last]
    grad_w = _to_numpy(torch, _grad(name, layer.weight, "weight"))
    if grad_w.shape[0] < 2:
        raise ValueError(
            f"The output layer {name!r} has {grad_w.shape[0]} output unit: labels "
            "need softmax cross-entropy over at least 2 classes.")
    if not np.any(grad_w):
        raise ValueError(
            f"The gradient of the output layer {name!r} is zero: it carries no "
            "signal (was the gradient zeroed, or the loss already minimal?).")
    captured = {}
    hook = layer.register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("h", inputs[0].detach()))
    try:
        with torch.no_grad():
            model(torch.as_tensor(samples, dtype=layer.weight.dtype,
                                  device=layer.weight.device))
    except RuntimeError as exc:
        raise ValueError(
            f"The forward pass of samples of shape {samples.shape} failed: {exc}. "
            "Pass the recovered samples in the model's input layout.") from exc
    finally:
        hook.remove()
    H = _to_numpy(torch, captured["h"]).astype(np.float64)
    G = grad_w.astype(np.float64)
    if layer.bias is not None:
        grad_b = _to_numpy(torch, _grad(name, layer.bias, "bias"))
        H = np.hstack([H, np.ones((len(H), 1))])
        G = np.hstack([G, grad_b.astype(np.float64)[:, None]])
    n = len(samples)
    rank = np.linalg.matrix_rank(H)
    if rank < n:
        raise ValueError(
            f"The last hidden features of the {n} samples have rank {rank} < "
            f"{n}: the output signals are not identifiable from layer {name!r} "
            f"(its input width is {H.shape[1]}). The batch must not exceed it.")
    signals = np.linalg.lstsq(H.T, G.T, rcond=None)[0]  # (B, K)
    residual = np.linalg.norm(H.T @ signals - G.T) / max(np.linalg.norm(G), 1e-300)
    # a trained net's near one-hot softmax gives coordinates below the
    # signals' round-off, whose signs are noise: the test is the
    # cross-entropy shape (sum ~0, the label's coordinate half the 1-norm)
    like = (looks_like_cross_entropy(signals) if signals.shape[1] >= 3
            else np.sum(signals < 0, axis=1) == 1)
    if not np.all(like):
        warnings.warn(
            f"{int(np.sum(~like))} of {n} output signals do not look like softmax "
            "cross-entropy signals (coordinates summing to ~0, the smallest one "
            "carrying half of their absolute sum): the loss is not cross-entropy, "
            f"or the samples are not the batch (relative residual {residual:.3g}). "
            "Their labels (the smallest coordinate) are then guesses.", UserWarning)
    return Bunch(labels=np.argmin(signals, axis=1).astype(np.int64), signals=signals,
                 relative_residual=float(residual))
