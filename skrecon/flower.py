"""Optional Flower adapter: a gradient query from one federated round.

In a `Flower <https://flower.ai>`_ round the server sends the global
parameters to a client, the client trains on its private data and sends its
parameters back. When the client takes **one** step of plain SGD on one
batch, the difference of the two parameter lists is the gradient of that
batch up to the learning rate::

    returned = sent - lr * gradient   =>   gradient = (sent - returned) / lr

and skrecon needs the gradient only up to a positive scale (the learning
rate is irrelevant). :func:`update_query` turns the parameters the server
sent and those the client returned into the query that
:class:`skrecon.GradientReconstructor` takes (the first linear layer's
gradient, its weights and the next layer's weights), and
:func:`client_update` runs the client's side of a round in-process: a Flower
``NumPyClient``, ``Client`` or ``ClientApp`` receives a real Flower *train*
message and replies, without network, SuperLink or Ray.

Several local steps (FedAvg with local epochs or several mini-batches) are
not one gradient: the update is then a sum of gradients taken at different
weights, and :func:`skrecon.fedavg.reconstruct_update` reconstructs it by
simulating the steps. Where the batch size is known (the server set it in the
config, or the client reported ``num_examples``), :func:`update_query`
detects the common case -- an update whose rank exceeds the batch size
(several mini-batches, or weight decay, which adds a full-rank term) -- and
raises. Several epochs over the *same* batch keep the rank at ``B`` and are
caught only after the fit: the relative gradient residual
(``gradient_residual_``) stays far above round-off.

:func:`update_query` needs PyTorch only (``pip install "skrecon[torch]"``);
:func:`client_update` needs Flower (``pip install "skrecon[flower]"``).
Both are imported when a function is called, so ``import skrecon.flower``
works without them.
"""

import copy
import dataclasses
import time
import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.utils import Bunch

from ._optional import import_optional
from .exceptions import BatchSizeWarning
from ._parameters import as_arrays, check_pair
from ._roundoff import count_above_floor, noise_floor, rounding_std
from .torch import first_layer_query

__all__ = ["update_query", "client_update"]

# an update less than this many times the round-off of the parameters
# (eps ||θ|| / lr) gives a gradient with errors above 1 %: warned
_MIN_UPDATE_DIGITS = 100


def _import_torch():
    return import_optional("torch", feature="skrecon.flower.update_query",
                           package="PyTorch", extra="torch")


def _update_roundoff(state, keys, sent, clients, returned, client_weights):
    """Each parameter's round-off in the update ``sent - returned`` (std per
    entry, float64 arrays in ``keys`` order): every client rounded its
    ``θ' = θ - lr g`` to the coarsest dtype among the model's and the arrays'
    (:func:`skrecon._roundoff.rounding_std`), a weighted sum of clients adds
    their roundings (weights squared), and an aggregate stored back in that
    dtype one more. The subtraction itself is exact (float64)."""
    if client_weights is None or len(clients) == 1:
        weights = np.ones(len(clients))
    else:
        weights = np.asarray(client_weights, dtype=np.float64)
    out = []
    for k, key in enumerate(keys):
        arrays = [client[k] for client in clients] + [sent[k], returned[k]]
        if not all(np.issubdtype(a.dtype, np.floating) for a in arrays):
            out.append(np.zeros(np.shape(returned[k])))
            continue
        names = [np.dtype(a.dtype) for a in arrays]
        try:  # the model's own dtype (a torch dtype NumPy may not know)
            names.append(np.dtype(str(state[key].dtype).replace("torch.", "")))
        except TypeError:
            pass
        dtype = max((d for d in names if np.issubdtype(d, np.floating)),
                    key=lambda d: np.finfo(d).eps)
        variance = sum((w * rounding_std(client[k], dtype)) ** 2
                       for w, client in zip(weights, clients))
        if len(clients) > 1:
            variance = variance + rounding_std(returned[k], dtype) ** 2
        out.append(np.sqrt(variance))
    return out


def _several_clients(returned, state):
    """Whether ``returned`` is a sequence of several clients' parameter sets
    (lists, mappings or ArrayRecords) rather than one list of arrays.

    One client's arrays given as nested Python lists (``w.tolist()``) are a
    list of lists too: they are one parameter set when there is one entry per
    ``state_dict`` entry and the first one has the first entry's shape.
    """
    if not isinstance(returned, (list, tuple)) or not returned:
        return False
    first = returned[0]
    if isinstance(first, Mapping) or hasattr(first, "to_numpy_ndarrays"):
        return True
    if not isinstance(first, (list, tuple)):
        return False
    shapes = [tuple(v.shape) for v in state.values()]
    try:
        as_one = np.asarray(first, dtype=np.float64).shape == shapes[0]
    except (TypeError, ValueError):  # ragged: a parameter set, not an array
        as_one = False
    return not (as_one and len(returned) == len(shapes))


def _aggregate(sent, clients, keys, client_weights):
    """``sent - sum_c w_c (sent - returned_c)``: the parameters after the
    (weighted) sum of the clients' one-step updates, in their dtype."""
    arrays = [as_arrays(r, keys, f"returned[{c}]") for c, r in enumerate(clients)]
    if client_weights is None:
        weights = np.ones(len(arrays))
    else:
        weights = np.asarray(client_weights, dtype=np.float64)
        if weights.shape != (len(arrays),) or not np.all(np.isfinite(weights)) \
                or np.any(weights <= 0):
            raise ValueError(
                f"client_weights must hold one positive finite weight per client "
                f"({len(arrays)}), got {client_weights!r}.")
    out = []
    for k, base in enumerate(sent):
        for c, client in enumerate(arrays):
            if client[k].shape != base.shape:
                raise ValueError(
                    f"returned[{c}][{keys[k]!r}] has shape {client[k].shape}, but "
                    f"the model's {keys[k]!r} has shape {base.shape}.")
        if not np.issubdtype(base.dtype, np.floating):
            out.append(arrays[0][k])
            continue
        dtype = np.result_type(*(client[k].dtype for client in arrays))
        update = sum(w * (base.astype(np.float64) - client[k].astype(np.float64))
                     for w, client in zip(weights, arrays))
        out.append((base.astype(np.float64) - update).astype(dtype))
    return out


def update_query(model, sent, returned, *, learning_rate=1.0, batch_size=None,
                 first="auto", second="auto", client_weights=None):
    """The gradient query of one SGD step, from the parameters before and after.

    Parameters
    ----------
    model : torch.nn.Module
        The model's architecture (its current values are not used, and it is
        not modified): the parameters are matched to it by
        ``model.state_dict()`` order or names. An Opacus
        ``GradSampleModule`` or the module it wraps both work.
    sent : list of ndarray, mapping or flwr.app.ArrayRecord
        The parameters the server sent: Flower's ``NumPyClient`` convention
        (one array per ``state_dict`` entry, in order, e.g.
        ``[v.cpu().numpy() for v in model.state_dict().values()]``), a
        mapping of ``state_dict`` names to arrays or tensors (a
        ``state_dict``; Opacus's ``"_module."`` prefix is ignored), or an
        ``ArrayRecord``. Each array has its parameter's shape.
    returned : same type as ``sent``, or a list of them
        The parameters the client returned after its step; or, for a FedSGD
        aggregate, the list of several clients' returned parameters (one
        step each from the same ``sent``), whose updates are summed
        (weighted by ``client_weights``). The server's aggregate itself
        (FedAvg's weighted mean of the returned parameters, which secure
        aggregation reveals) can be passed as one parameter set: either way
        the update is the gradient of the union of the clients' batches,
        one bigger batch (:ref:`theory-requirements`; pass its total size
        as ``batch_size``).
    learning_rate : float, default=1.0
        The client's SGD learning rate. It only scales the gradient, which
        skrecon does not need; pass it to get the gradient's true scale.
    batch_size : int or None, default=None
        The number of samples of the client's step, when the server knows it
        (it set it in the config, or the client reported ``num_examples``).
        Given, an update whose numerical rank exceeds it raises: it cannot
        be one step on one batch.
    first, second : "auto" or str, default="auto"
        Module names of the first layer and of the next ``nn.Linear``, as in
        :func:`skrecon.torch.first_layer_query`.
    client_weights : array-like of shape (n_clients,) or None, default=None
        With a list of clients' parameters as ``returned``: each update's
        positive weight in the aggregate (FedAvg's ``num_examples / total``);
        ``None``: their plain sum. The reconstruction does not depend on
        them (each sample's signal absorbs its client's weight).

    Returns
    -------
    query : skrecon.query.GradientQuery
        As :func:`skrecon.torch.first_layer_query` returns it: ``grad``
        (ndarray of shape ``(m, d)``, or ``(m, d + 1)`` with the bias
        gradient last: ``(sent - returned) / learning_rate``), ``weights``
        (the same shape: the *sent* first-layer weights), ``output_weights``
        (ndarray of shape ``(m, K)``: the sent next layer, transposed),
        ``activation``, ``bias``, ``has_bias``, ``layer_names``,
        ``noise_std`` (ndarray of ``grad``'s shape, float64: each entry's
        round-off, ``ulp(θ') / (sqrt(12) lr)``, the clients' roundings
        added for an aggregate) and ``fit_params``, so that ``rec.fit(q.grad,
        **q.fit_params)`` attacks it, judging the batch size and ``found_``
        against that round-off. Arrays are float64 for a float64 model,
        float32 otherwise.

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    TypeError
        If ``model`` is not a ``torch.nn.Module`` or ``sent``/``returned``
        are neither lists, mappings nor ``ArrayRecord``.
    ValueError
        If the parameters do not match the model (count, names or shapes),
        are not finite, ``learning_rate`` is not a positive finite number,
        ``batch_size`` is not a positive integer, the first layer did not
        change (no training step) or its change is below the round-off of
        the parameters (``eps ||θ|| / lr``: a float32 model with a tiny
        learning rate), the update's rank exceeds ``batch_size``
        (several local steps: use
        :func:`skrecon.fedavg.reconstruct_update`), or the model's layers are out of
        scope (see :func:`skrecon.torch.first_layer_query`).

    Warns
    -----
    UserWarning
        If the update is less than 100 times that round-off: the gradient
        carries relative errors above 1 %, and the reconstruction larger
        ones. The round-off is that of the coarsest dtype among the model
        and the parameter arrays (float64 parameters sent as float32 carry
        float32 round-off).

    See Also
    --------
    client_update : The client's side of one Flower round, in-process.
    skrecon.torch.first_layer_query : The same query from ``.grad``.

    Notes
    -----
    One SGD step from the sent weights ``θ`` gives ``θ' = θ - lr ∇L(θ)``,
    so ``(θ - θ') / lr`` is the gradient at the weights the server chose,
    and the query is exact up to the round-off of the subtraction (use a
    float64 model: in float32 the update loses the digits that ``θ`` and
    ``θ'`` share). That round-off is known entry by entry (``noise_std``):
    the fit reads the batch size as the singular values above its floor,
    and flags found only rows its misfit bounds to float32 precision (an
    Opacus float32 step, 64 -> 1024 -> 10 tanh, 16 digits, lr 0.1: batch
    size 16, where 17 was read without it; errors up to 1.3e-3, and 1.8e-5
    at lr 10, where the misfits still flag no row). Momentum does not matter for a first step from a fresh
    optimizer; weight decay adds ``lr λ θ``, a full-rank term that the rank
    check reports (subtract it before calling, if ``λ`` is known). Several
    local steps give a sum of gradients at different weights: with more
    than one mini-batch the rank is the number of distinct samples, which
    the ``batch_size`` check catches; several epochs on the same batch keep
    rank ``B`` and show only as a large ``gradient_residual_`` of the fit.

    References
    ----------
    .. [1] D. J. Beutel et al., "Flower: A Friendly Federated Learning
       Research Framework", arXiv:2007.14390, 2020.
    .. [2] Z. Wang, J. D. Lee and Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from skrecon.flower import update_query
    >>> model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    >>> sent = [v.numpy().copy() for v in model.state_dict().values()]
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.5)
    >>> x = torch.as_tensor(np.random.default_rng(0).uniform(size=(2, 4)))
    >>> nn.CrossEntropyLoss()(model(x), torch.tensor([0, 2])).backward()
    >>> opt.step()
    >>> returned = [v.numpy().copy() for v in model.state_dict().values()]
    >>> q = update_query(model, sent, returned, learning_rate=0.5, batch_size=2)
    >>> q.grad.shape, q.output_weights.shape, q.layer_names
    ((32, 5), (32, 3), ('0', '2'))
    >>> bool(np.allclose(q.grad[:, :4], model[0].weight.grad.numpy()))
    True
    >>> sorted(q.fit_params), q.noise_std.shape
    (['noise_std', 'output_weights', 'weights'], (32, 5))
    """
    torch = _import_torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number)) \
            or not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(
            f"learning_rate must be a positive finite number, got {learning_rate!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be None or a positive integer, got {batch_size!r}.")
    state = model.state_dict()
    keys = list(state)
    sent = as_arrays(sent, keys, "sent")
    several = _several_clients(returned, state)
    n_clients = len(returned) if several else 1
    if several:
        clients = [as_arrays(r, keys, f"returned[{c}]") for c, r in enumerate(returned)]
        returned = _aggregate(sent, returned, keys, client_weights)
    elif client_weights is not None:
        raise ValueError(
            "client_weights was given, but returned is one parameter set: pass the "
            "list of the clients' returned parameters to weight their updates.")
    else:
        returned = as_arrays(returned, keys, "returned")
        clients = [returned]
    check_pair(state, keys, sent, returned)
    # each entry's round-off (std, float64), before the learning rate
    std = _update_roundoff(state, keys, sent, clients, returned, client_weights)

    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    with torch.no_grad():
        work.load_state_dict({k: torch.as_tensor(v).to(state[k].dtype)
                              for k, v in zip(keys, sent)})
        for key, a, b in zip(keys, sent, returned):
            if key in params:
                p = params[key]
                diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
                p.grad = torch.as_tensor(diff / float(learning_rate)).to(p.dtype)
    query = first_layer_query(work, first=first, second=second)
    with torch.no_grad():  # the round-off, laid out as the query's gradient
        for key, sigma in zip(keys, std):
            if key in params:
                params[key].grad = torch.as_tensor(sigma / float(learning_rate)).to(
                    params[key].dtype)
    query = dataclasses.replace(query, noise_std=np.asarray(
        first_layer_query(work, first=first, second=second).grad, dtype=np.float64))
    grad = query.grad
    if not np.any(grad):
        raise ValueError(
            f"The first layer {query.layer_names[0]!r} did not change: the client "
            "returned the parameters it was sent (no training step, or a "
            "frozen first layer), so there is no gradient to reconstruct from.")
    sv = np.linalg.svd(grad.astype(np.float64), compute_uv=False)
    # the client rounded θ' = θ - lr g to its dtype: each entry of the
    # update carries up to eps |θ| / lr of round-off, a matrix of spectral
    # norm at most eps ||θ||_F / lr, far above eps ||g|| when lr |g| << |θ|
    # (the gallery's round: a flat bulk of 50 values at 5e-15 s_1); values
    # below it are not samples
    # (parameters that travelled in a coarser dtype than the model's carry
    # its round-off: a float64 model sent as float32 read rank 47)
    eps = max(np.finfo(a.dtype).eps for a in (grad, *sent, *returned)
              if np.issubdtype(a.dtype, np.floating))
    dtype = np.finfo(eps).dtype
    roundoff = eps * np.linalg.norm(query.weights) / learning_rate
    if sv[0] <= roundoff:
        raise ValueError(
            f"The update of the first layer is below the round-off of its "
            f"{dtype} parameters (largest singular value {sv[0]:.3g} of the "
            f"update / learning_rate, round-off level {roundoff:.3g}): the step "
            "did not register. Use a float64 model or a larger learning rate.")
    if sv[0] < _MIN_UPDATE_DIGITS * roundoff:
        warnings.warn(
            f"The update of the first layer is only {sv[0] / roundoff:.3g} times the "
            f"round-off of its {dtype} parameters: the gradient read off it "
            f"carries relative errors of about {roundoff / sv[0]:.1%}, and the "
            "reconstruction larger ones (float32 at lr 1e-4: 3 % in the gradient, "
            "0.3 in the samples). Use a float64 model or a larger learning rate.",
            UserWarning, stacklevel=2)
    # the rank: the singular values above the floor of the known round-off
    # (the bound eps ||θ||_F / lr above is 30 times that floor: 64 -> 1024,
    # float32, lr 0.1)
    # (refusing, it counts only values above the bound eps ||θ||_F / lr, 30
    # times the known round-off's floor at 64 -> 1024, float32, lr 0.1: a
    # mean of 16 clients' float64 returns, whose own rounding the
    # entrywise std does not know, read rank 149 for 48 against the floor)
    rank = count_above_floor(sv, max(noise_floor(query.noise_std), roundoff))
    if batch_size is None and rank >= min(grad.shape):
        warnings.warn(
            f"The update of the first layer has full rank ({rank}, shape "
            f"{grad.shape}) above the round-off of its parameters: either the "
            f"batch has at least {rank} samples, or the update is not one plain "
            "SGD step on one batch (weight decay, momentum, DP-SGD noise, several local "
            "steps). "
            "Pass batch_size (num_examples) to check it; for several local steps "
            "use skrecon.fedavg.reconstruct_update. Rows flagged found_ then fit "
            "the update only to its noise level.", BatchSizeWarning, stacklevel=2)
    if batch_size is not None and rank > batch_size:
        raise ValueError(
            f"The update of the first layer has rank {rank}, more than the "
            f"batch_size={batch_size} samples of one step: it is not one SGD step "
            "on one batch (several local steps over different mini-batches, as "
            "in FedAvg, or weight decay). For several local SGD steps use "
            "skrecon.fedavg.reconstruct_update, which simulates them given the "
            "client's learning_rate, n_samples (num_examples), batch_size and "
            "epochs."
            + (f" For an aggregate of {n_clients} clients' one-step updates, "
               "batch_size is the total over the clients (the sum of their "
               "num_examples)." if n_clients > 1 else ""))
    return query


def _check_config(config):
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or None, got {type(config).__name__}.")
    return dict(config)


def _client_app(client):
    """A ClientApp for a NumPyClient, a Client or a ClientApp, and its kind."""
    from flwr.client import Client, NumPyClient
    from flwr.clientapp import ClientApp

    if isinstance(client, NumPyClient):
        client = client.to_client()
    if isinstance(client, Client):
        return ClientApp(client_fn=lambda context: client), True
    if isinstance(client, ClientApp):
        # a ClientApp made from a client_fn speaks the legacy FitIns records;
        # one with @app.train() handlers the Message API's "arrays"/"config"
        return client, getattr(client, "_call", None) is not None
    raise TypeError(
        "client must be a flwr NumPyClient, Client or ClientApp, got "
        f"{type(client).__name__}.")


def client_update(client, parameters, *, config=None, node_id=1):
    """Run the client's side of one Flower round in-process.

    The server's *train* message, holding ``parameters`` and ``config``, is
    built as a Flower server builds it and handed to the client's
    ``ClientApp``, whose reply is decoded as the server decodes it: no
    network, SuperLink or Ray is involved, but the client's code runs
    exactly as in a deployment.

    Parameters
    ----------
    client : flwr.client.NumPyClient, flwr.client.Client or flwr.clientapp.ClientApp
        The client. A ``NumPyClient`` or ``Client`` is wrapped in a
        ``ClientApp``. A ``ClientApp`` made from a ``client_fn`` receives the
        legacy ``FitIns`` records; one with an ``@app.train()`` function
        receives the Message API's records, as
        ``flwr.serverapp.strategy.FedAvg`` sends them: an ``ArrayRecord``
        under ``"arrays"`` and a ``ConfigRecord`` under ``"config"``, and
        must reply with an ``ArrayRecord`` under ``"arrays"`` and a
        ``MetricRecord`` under ``"metrics"`` with ``"num-examples"``.
    parameters : list of ndarray or dict of str to array
        The global parameters the server sends: one array per
        ``state_dict`` entry of the client's model, in order, or the
        ``state_dict`` itself (names to arrays or tensors). A Message-API
        ``ClientApp`` that loads the record with ``to_torch_state_dict()``
        needs the names: pass a mapping (a list is sent with the names
        ``"0"``, ``"1"``, ...).
    config : dict or None, default=None
        The round's configuration (e.g. ``{"lr": 0.1}``): str keys, scalar
        values.
    node_id : int, default=1
        The client's node ID in the message and its ``Context``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``parameters`` (list of ndarray, the parameters the client
        returned, shapes as sent), ``num_examples`` (int, what the client
        reported) and ``metrics`` (dict).

    Raises
    ------
    ImportError
        If Flower is not installed.
    TypeError
        If ``client`` is none of the supported kinds, or ``config`` is not a
        mapping.
    ValueError
        If ``parameters`` is not a non-empty list of arrays or a mapping.
    RuntimeError
        If the client's reply is a Flower error message (its reason is
        included). An exception raised by the client's own code propagates
        unchanged.

    See Also
    --------
    update_query : The gradient query from the sent and returned parameters.

    References
    ----------
    .. [1] D. J. Beutel et al., "Flower: A Friendly Federated Learning
       Research Framework", arXiv:2007.14390, 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import pytest
    >>> flwr = pytest.importorskip("flwr")
    >>> from flwr.client import NumPyClient
    >>> from skrecon.flower import client_update
    >>> class Halve(NumPyClient):
    ...     def fit(self, parameters, config):
    ...         return [p * config["factor"] for p in parameters], 3, {"done": 1}
    >>> out = client_update(Halve(), [np.ones(2)], config={"factor": 0.5})
    >>> out.parameters, out.num_examples, out.metrics
    ([array([0.5, 0.5])], 3, {'done': 1})
    """
    import_optional("flwr", feature="skrecon.flower.client_update",
                    package="Flower (flwr)", extra="flower")
    from flwr.app import (DEFAULT_TTL, ArrayRecord, ConfigRecord, Context,
                          Message, Metadata, RecordDict)
    from flwr.common import (FitIns, MessageType, ndarrays_to_parameters,
                             parameters_to_ndarrays)
    from flwr.compat.common.recorddict_compat import (fitins_to_recorddict,
                                                      recorddict_to_fitres)

    config = _check_config(config)
    names = None
    if isinstance(parameters, Mapping):
        names = [str(k) for k in parameters]
        parameters = list(parameters.values())
    if not isinstance(parameters, (list, tuple)) or not parameters:
        raise ValueError(
            "parameters must be a non-empty list of arrays (one per state_dict "
            f"entry) or a state_dict, got {type(parameters).__name__}.")
    parameters = [np.asarray(p.detach().cpu().numpy() if hasattr(p, "detach") else p)
                  for p in parameters]
    app, legacy = _client_app(client)
    if legacy:
        content = fitins_to_recorddict(
            FitIns(ndarrays_to_parameters(parameters), config), keep_input=True)
    else:
        if names is None:
            arrays = ArrayRecord(parameters)
        else:
            torch = _import_torch()
            arrays = ArrayRecord({k: torch.as_tensor(v) for k, v in zip(names, parameters)})
        content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    # explicit metadata: a server's instruction message, without the global
    # task identity a running SuperLink would provide
    metadata = Metadata(run_id=0, message_id="skrecon-train-1", src_node_id=0,
                        dst_node_id=int(node_id), reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=DEFAULT_TTL,
                        message_type=MessageType.TRAIN)
    message = Message(content=content, metadata=metadata)
    context = Context(run_id=0, node_id=int(node_id), node_config={},
                      state=RecordDict(), run_config={})
    reply = app(message, context)
    if reply.has_error():
        raise RuntimeError(f"The client replied with an error: {reply.error.reason}")
    if legacy:
        res = recorddict_to_fitres(reply.content, keep_input=False)
        returned = parameters_to_ndarrays(res.parameters)
        num_examples, metrics = int(res.num_examples), dict(res.metrics)
    else:
        returned = reply.content["arrays"].to_numpy_ndarrays()
        metrics = dict(reply.content["metrics"]) if "metrics" in reply.content else {}
        num_examples = int(metrics.get("num-examples", 0))
    return Bunch(parameters=returned, num_examples=num_examples, metrics=metrics)
