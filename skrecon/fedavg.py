"""FedAvg: the batch behind several local SGD steps (:ref:`user-guide-fedavg`).

In FedAvg a client runs ``T`` local steps of SGD over its ``N`` samples
(``E`` epochs of mini-batches of ``b``, reshuffled by its own RNG) and returns
its parameters. The update is then no longer one gradient: it is a sum of
gradients taken at ``T`` different weights, and
:func:`skrecon.flower.update_query` refuses it. :func:`reconstruct_update`
reconstructs it anyway, from what the server knows -- the parameters it sent
and those it got back, the learning rate, the batch size, the epochs (Flower's
config) and ``N`` (the client's ``num_examples``) -- in five stages:

1. *Span.* Every row of the first layer's part of
   ``Delta = (c theta_0 - theta_T) / lr`` lies in ``span{(x_i, 1)}``
   (``c = 1`` without weight decay), whatever the weights were at each step:
   the span of the ``N`` samples is exact.
2. *Start.* In it, each sample alone is found by the column-space search of
   :mod:`skrecon.search` with the family ``diag(sigma'(Omega_0 v + b_0))
   [A_0, A_T]`` (the output layers sent and returned, both as output
   weights), and soft labels are read off the output layer's update.
3. *Order* (mini-batches only). Each sample's steps are those whose
   weights make its family fit the update's column space best, first on
   the straight line from ``theta_0`` to ``theta_T``, then on the
   trajectory the start simulates; one assignment problem per epoch turns
   the misfits into an order. With several epochs of mini-batches that
   trajectory comes from a misplaced order, and the order and the labels are
   searched on the residual of the simulated steps
   (:mod:`skrecon._order_search`: the best few exchanges of two samples in
   each epoch and label changes, combined across the epochs).
4. *Refit.* On the trajectory the batch simulates in that order, each
   sample is fitted alone to the column space with the family of its own
   steps (the samples already exact deflated), its label is read off the
   fitted signal (``p - q`` up to scale), and the order is assigned again;
   a few rounds make most batches exact already.
5. *Polish.* Levenberg-Marquardt on ``(theta_T(X, q) - theta_T) / lr``,
   which simulates the ``T`` local steps exactly in that order
   (:mod:`skrecon._unroll`, ``torch.optim.SGD``'s rule with momentum and
   weight decay, the first layer in the samples' span coordinates), over
   the samples' span coordinates and their soft targets ``q_i``; where it
   stalls, the order is re-assigned from the trajectory the polished batch
   simulates, and the polish runs again. For ReLU and leaky ReLU the update
   is discontinuous in the samples (each step's ``sigma'`` is a step
   function) and the polish stalls where every step flips some pattern
   entry; it goes on with the pattern of every (step, sample, neuron) held
   fixed, the first layer's rows near a kink left out, and the patterns
   read again after each solve (:mod:`skrecon._fedavg_patterns`).

One full-batch step (``epochs=1``, ``batch_size=n_samples``) is the batch's
gradient at the sent weights: :class:`skrecon.GradientReconstructor` inverts
it first (ReLU's activation patterns included, where the polish alone
stalls), and the stages above run only when its batch does not reproduce the
update.

The result is exact (the returned parameters reproduced to round-off) or
flagged: ``found`` is all False and a ``ConvergenceWarning`` says why.
PyTorch is needed (``pip install "skrecon[torch]"``); it is imported when
the function is called.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._fedavg_start import (assign_steps, interpolated, one_hot,
                            refined_start, search_start, soft_targets, span,
                            span_coordinates, trajectory)
from ._optional import import_optional
from ._order_search import ResidualScore, hyperparameter_hint, search_order
from ._parameters import as_arrays, check_pair
from ._threads import blas_threads
from ._update_problem import UpdateProblem, decay_factor, update_error_bounds
from ._fedavg_patterns import pattern_polish
from ._unroll import (Schedule, Unknowns, flat_parameters, levenberg_marquardt,
                      memberships, mlp_layers, simulate)
from .activations import get_activation
from .exceptions import BatchSizeWarning, IdentifiabilityWarning

__all__ = ["UpdateReconstruction", "reconstruct_update"]

# polishes with an order re-assigned from the simulated trajectory
_ORDER_ROUNDS = 4
# a row is found when its first-order error bound (this many standard
# errors) is below this (relative), as the reconstructor's float64 rows
_ROW_PRECISION = 1e-6
_HYPERPARAMETERS = (
    "learning_rate (the client's SGD learning rate, e.g. Flower's config['lr']), "
    "n_samples (the number of samples it trained on: the num_examples of its "
    "reply), batch_size (its mini-batch size, e.g. config['batch_size']; equal to "
    "n_samples for full-batch steps), epochs (its local epochs, e.g. "
    "config['local_epochs']), and momentum and weight_decay when it used them")


@dataclass(frozen=True)
class UpdateReconstruction:
    """What :func:`reconstruct_update` recovered from one FedAvg update.

    Attributes
    ----------
    samples : ndarray of shape (n_samples, n_inputs), dtype float64
        The client's samples, in no particular order (the first layer's
        input layout).
    labels : ndarray of shape (n_samples,), dtype int64
        The class of each row of ``samples`` (the largest coordinate of its
        fitted soft target; exact when ``found``).
    found : ndarray of shape (n_samples,), dtype bool
        Whether each row is certified: the local steps simulated from the
        recovered samples, labels and order reproduce the returned
        parameters to ``update_residual <= tol``, and five standard errors
        of the row (from the residual and the Jacobian of the simulated
        steps, to first order) are below 1e-6 relative; near-duplicate samples that the
        update barely tells apart are not found even at an exact fit (an
        ``IdentifiabilityWarning`` names them). When the residual is above
        ``tol``, no row is certified (all False) and the rows are best
        guesses.
    update_residual : float
        ``||theta_T(samples, labels, order) - theta_T|| / ||theta_0 - theta_T||``
        over all parameters (dimensionless; ~1e-13 when exact in float64).
    order : ndarray of shape (epochs, n_samples), dtype int64
        The rows of ``samples`` in the order the client's steps used them,
        one row per epoch: step ``t`` of an epoch took entries
        ``t * batch_size`` to ``(t + 1) * batch_size - 1`` (sorted within a
        step: the order inside a mini-batch does not change the update and
        is not identifiable). With full-batch steps every row is ``0 .. N-1``.
    start_samples : ndarray of shape (n_samples, n_inputs)
        The start of the polish (the column-space search, refitted with
        each sample's steps), rows as in ``samples``.
    n_iter : int
        Normal matrices ``J^T J`` formed by the polish (its costly unit; 0
        when the refitted start is exact already).
    nfev : int
        Simulations of the local steps run by the polish.
    status : int
        1: exact (``update_residual <= tol``); 2: the polish stalled above
        ``tol`` (a local minimum: a poor start, a wrong label or order, or
        hyperparameters that are not the client's); 0: ``max_iter`` was
        reached.
    message : str
        The status in words, with the residual.
    success : bool
        ``status == 1``.
    """

    samples: np.ndarray
    labels: np.ndarray
    found: np.ndarray
    update_residual: float
    order: np.ndarray
    start_samples: np.ndarray
    n_iter: int
    nfev: int
    status: int
    message: str
    success: bool


def _check_number(value, name, *, low, low_open, high=None):
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.number))
          and np.isfinite(value) and (value > low if low_open else value >= low)
          and (high is None or value < high))
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_optimizer(torch, optimizer):
    if isinstance(optimizer, str):
        if optimizer.lower() == "sgd":
            return
        name = optimizer
    elif optimizer is torch.optim.SGD:
        return
    elif isinstance(optimizer, torch.optim.SGD):
        group = optimizer.param_groups[0]
        if group.get("nesterov") or group.get("dampening", 0):
            raise ValueError(
                "skrecon.fedavg simulates torch.optim.SGD without Nesterov momentum "
                f"and without dampening; got nesterov={group.get('nesterov')}, "
                f"dampening={group.get('dampening')}.")
        keys = ("lr", "momentum", "weight_decay")
        if any(g.get(k) != group.get(k) for g in optimizer.param_groups for k in keys):
            raise ValueError(
                "skrecon.fedavg simulates one SGD setting for all parameters; the "
                "optimizer's parameter groups differ in lr, momentum or weight_decay.")
        return
    else:
        name = getattr(optimizer, "__name__", type(optimizer).__name__)
    raise ValueError(
        f"skrecon.fedavg simulates the client's local steps exactly only for plain "
        f"SGD (torch.optim.SGD, optimizer='sgd') with momentum and weight_decay; "
        f"got {name!r}. Adaptive optimisers (Adam, AdamW, RMSprop, ...) keep "
        "per-parameter state the server does not see, and are not supported.")


def _from_optimizer(torch, optimizer, learning_rate, momentum, weight_decay):
    """The SGD hyperparameters, filled in from an SGD instance's settings;
    a keyword that contradicts the instance raises."""
    if not isinstance(optimizer, torch.optim.SGD):
        return learning_rate, momentum, weight_decay
    group = optimizer.param_groups[0]
    given = {"learning_rate": (learning_rate, None, group["lr"]),
             "momentum": (momentum, 0.0, group["momentum"]),
             "weight_decay": (weight_decay, 0.0, group["weight_decay"])}
    out = []
    for name, (value, default, held) in given.items():
        if value is None or (value == default and held != default):
            out.append(held)
        elif value != held:
            raise ValueError(
                f"{name}={value!r} contradicts the SGD instance passed as optimizer, "
                f"whose {'lr' if name == 'learning_rate' else name} is {held!r}; pass "
                "the client's own settings once (the instance alone carries them).")
        else:
            out.append(value)
    return tuple(out)


def _one_gradient(query, n_samples, random_state):
    """The batch and labels of one full-batch step's update, which is the
    batch's gradient at the sent weights, by :class:`GradientReconstructor`
    (rows ``(n_samples, n_inputs)`` and labels ``(n_samples,)``), or
    ``(None, None)`` when it gives fewer rows or no labels.

    The estimator's own flags are not used: :func:`reconstruct_update`
    certifies the rows by its simulated step and error bounds.
    """
    from .reconstructor import GradientReconstructor

    if isinstance(random_state, np.random.Generator):
        random_state = int(random_state.integers(2 ** 31))
    with warnings.catch_warnings():
        # its warnings speak of the gradient; the verdict is the simulation's
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(**query.estimator_params, batch_size=n_samples,
                                    random_state=random_state)
        rec.fit(query.grad, **query.fit_params)
    if rec.labels_ is None or len(rec.samples_) != n_samples:
        return None, None
    return (np.asarray(rec.samples_, dtype=np.float64),
            np.asarray(rec.labels_, dtype=np.int64))


def reconstruct_update(model, sent, returned, *, learning_rate=None, n_samples=None,
                       batch_size=None, epochs=1, momentum=0.0, weight_decay=0.0,
                       optimizer="sgd", max_iter=30, tol=1e-9, random_state=None,
                       verbose=0):
    """Reconstruct a client's samples from its parameters after local SGD steps.

    Parameters
    ----------
    model : torch.nn.Module
        The model's architecture: ``nn.Linear`` layers and element-wise
        activations in order (e.g. ``nn.Sequential(nn.Linear(64, 1024),
        nn.Tanh(), nn.Linear(1024, 10))``), trained by the client with
        softmax cross-entropy (``nn.CrossEntropyLoss``, mean reduction). Its
        current values are not used and it is not modified.
    sent : list of ndarray, mapping or flwr.app.ArrayRecord
        The parameters the server sent, as :func:`skrecon.flower.update_query`
        takes them: one array per ``state_dict`` entry in order (Flower's
        ``NumPyClient`` convention), a mapping of ``state_dict`` names to
        arrays or tensors, or an ``ArrayRecord``.
    returned : same type as ``sent``
        The parameters the client returned after its local training.
    learning_rate : float
        The client's SGD learning rate (required).
    n_samples : int
        The number of samples the client trained on (required): Flower's
        ``num_examples``.
    batch_size : int
        The client's mini-batch size (required; ``n_samples`` for full-batch
        steps). Each epoch has ``ceil(n_samples / batch_size)`` steps, the
        last one shorter when ``batch_size`` does not divide ``n_samples``
        (a ``DataLoader`` with ``drop_last=False``).
    epochs : int, default=1
        Local epochs; each epoch visits every sample once, in an order the
        server does not know (recovered in ``order``).
    momentum : float, default=0.0
        ``torch.optim.SGD``'s momentum, in ``[0, 1)``.
    weight_decay : float, default=0.0
        ``torch.optim.SGD``'s weight decay (L2 penalty), ``>= 0``.
    optimizer : "sgd", torch.optim.SGD or an SGD instance, default="sgd"
        The client's optimiser. Only SGD (with momentum and weight decay;
        no Nesterov, no dampening) is simulated; anything else raises. An
        instance's ``lr``, ``momentum`` and ``weight_decay`` fill in the
        keywords left out (a keyword that contradicts them raises).
    max_iter : int, default=30
        Bound on the normal matrices ``J^T J`` each polish forms (each costs
        one Jacobian-vector product of the simulated steps per unknown).
    tol : float, default=1e-9
        ``update_residual`` at or below which the result is exact and every
        row ``found``.
    random_state : int, Generator or None, default=None
        Seed of the random starts of the column-space search.
    verbose : int, default=0
        Print the stages and the polish's iterations when positive. Without
        it nothing is printed until the result. Typical times (64 -> 1024
        -> 10 MLP, one thread, two cores shared with other jobs): 16 digits
        with full-batch epochs or one epoch of mini-batches of 4, 1-80 s
        (tanh; ReLU, whose polish holds the patterns fixed in rounds,
        2-13 min for 3 and 5 full-batch epochs under load 10);
        8 digits with 3 epochs of mini-batches of 4, 20-35 s; 48 digits,
        3 full-batch epochs, about 5 min. A run that ends flagged takes
        longest (it tries other orders and labels): 1-6 min for 8 digits
        in 3 epochs of mini-batches of 4, 11 min for 16 digits in 2 epochs
        of mini-batches of 4.

    Returns
    -------
    result : UpdateReconstruction
        ``samples``, ``labels``, ``found``, ``update_residual``, ``order``,
        ``start_samples``, ``n_iter``, ``nfev``, ``status``, ``message`` and
        ``success`` (see :class:`UpdateReconstruction`).

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    TypeError
        If ``model`` is not a ``torch.nn.Module`` or ``sent``/``returned``
        are neither lists, mappings nor ``ArrayRecord``.
    ValueError
        If a hyperparameter the server must know is missing (the message
        lists them all) or invalid, the optimiser is not SGD, the model is
        not an MLP, the parameters do not match the model, the first
        layer did not change, or the update's rank exceeds ``n_samples``
        (also for float32 or lower-precision parameters, whose round-off
        the float64 simulation does not model: not supported).

    Warns
    -----
    ConvergenceWarning
        If the polish does not reach ``tol``: the rows are best guesses and
        ``found`` is all False. The message names a learning rate (twice or
        half the given one) or a number of epochs (one more or one fewer)
        when the batch found fits it 10x better than the given ones: a hint,
        measured to work for full-batch steps (256 neurons: lr x2, x1/2 and
        E +-1 named); with several epochs of mini-batches the batch found
        under wrong hyperparameters is usually too far off for it (8 digits,
        b = 4, E = 3, lr x2 or E - 1: not named).
    BatchSizeWarning
        If the update shows fewer than ``n_samples`` samples (two identical
        samples, or ``n_samples`` larger than the truth).
    IdentifiabilityWarning
        If the fit is exact but some rows' error bounds exceed 1e-6
        (near-duplicate samples): ``found`` is False for them.

    See Also
    --------
    skrecon.flower.update_query : The query of one local step.
    skrecon.flower.client_update : Run a Flower client's round in-process.

    Notes
    -----
    With ``D_t`` the samples of step ``t``, SGD gives
    ``theta_T = c theta_0 - lr sum_t a_t grad L(theta_{t-1}; D_t)`` with
    scalars ``c`` and ``a_t`` fixed by the momentum and weight decay, so the
    first layer's rows of ``(c theta_0 - theta_T) / lr`` lie in the span of
    the samples (with the bias input 1): the span and ``N`` are exact. The
    search in it starts the samples; the polish (Gauss-Newton /
    Levenberg-Marquardt, ``J^T J`` from batched ``torch.func`` Jacobian
    products of the unrolled steps) makes them exact, with soft targets
    whose largest coordinate is the label. For mini-batches the order comes
    first: sample ``i``'s column of the first layer's update is
    ``sum_e (A_{t_e} u_{i,e}) * sigma'(Omega_{t_e} x_i + b_{t_e})`` over its
    steps ``t_e``, so the steps whose weights fit it best are its steps
    (scored on an estimated trajectory, assigned by one assignment problem
    per epoch; with several epochs the order and the labels are then
    searched on the simulated residual). With the order, the same column is
    fitted for each sample alone on the simulated trajectory (the family of
    its own steps, the samples already exact deflated from the column
    space); its signal
    ``u_{i,e}`` is ``p_i - q_i`` up to scale, which names the label. A few
    such rounds bring most batches to round-off before the polish.
    The result is certified by the simulation itself: ``update_residual``.

    References
    ----------
    .. [1] H. B. McMahan et al., "Communication-Efficient Learning of Deep
       Networks from Decentralized Data", AISTATS 2017 (FedAvg).
    .. [2] D. I. Dimitrov et al., "Data Leakage in Federated Averaging",
       TMLR 2022.
    .. [3] Z. Wang, J. D. Lee and Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from skrecon.fedavg import reconstruct_update
    >>> rng = np.random.default_rng(0)
    >>> model = nn.Sequential(nn.Linear(6, 256), nn.Tanh(), nn.Linear(256, 3)).double()
    >>> sent = [v.detach().numpy().copy() for v in model.state_dict().values()]
    >>> x, y = torch.as_tensor(rng.uniform(size=(3, 6))), torch.tensor([0, 2, 1])
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for epoch in range(3):                       # 3 local full-batch epochs
    ...     opt.zero_grad()
    ...     nn.functional.cross_entropy(model(x), y).backward()
    ...     opt.step()
    >>> returned = [v.detach().numpy() for v in model.state_dict().values()]
    >>> res = reconstruct_update(model, sent, returned, learning_rate=0.1,
    ...                          n_samples=3, batch_size=3, epochs=3, random_state=0)
    >>> res.success, res.found.tolist()
    (True, [True, True, True])
    >>> from skrecon.metrics import relative_error
    >>> errors, match = relative_error(x.numpy(), res.samples)
    >>> bool(errors.max() < 1e-8), res.labels[match].tolist()
    (True, [0, 2, 1])
    """
    torch = import_optional("torch", feature="skrecon.fedavg.reconstruct_update",
                            package="PyTorch", extra="torch")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    threads = torch.get_num_threads()
    # the unrolled steps are many small tensor operations: one thread is
    # faster than several (4x under load on two cores), and never slower here;
    # so are the refits' small SVDs (1024 x 30: 1.5 ms with one BLAS thread,
    # 13-60 ms with two under load)
    torch.set_num_threads(1)
    try:
        with blas_threads(1):
            return _reconstruct(torch, model, sent, returned, learning_rate, n_samples,
                                batch_size, epochs, momentum, weight_decay, optimizer,
                                max_iter, tol, random_state, verbose)
    finally:
        torch.set_num_threads(threads)


def _reconstruct(torch, model, sent, returned, learning_rate, n_samples, batch_size,
                 epochs, momentum, weight_decay, optimizer, max_iter, tol,
                 random_state, verbose):
    _check_optimizer(torch, optimizer)
    learning_rate, momentum, weight_decay = _from_optimizer(
        torch, optimizer, learning_rate, momentum, weight_decay)
    missing = [name for name, value in (("learning_rate", learning_rate),
                                        ("n_samples", n_samples),
                                        ("batch_size", batch_size),
                                        ("epochs", epochs)) if value is None]
    if missing:
        raise ValueError(
            f"reconstruct_update needs the client's local training, which the "
            f"server must know; missing: {', '.join(missing)}. Pass {_HYPERPARAMETERS}.")
    schedule = Schedule(
        learning_rate=_check_number(learning_rate, "learning_rate", low=0.0, low_open=True),
        momentum=_check_number(momentum, "momentum", low=0.0, low_open=False, high=1.0),
        weight_decay=_check_number(weight_decay, "weight_decay", low=0.0, low_open=False),
        n_samples=_check_count(n_samples, "n_samples"),
        batch_size=_check_count(batch_size, "batch_size"),
        epochs=_check_count(epochs, "epochs"))
    if schedule.batch_size > schedule.n_samples:
        raise ValueError(
            f"batch_size={schedule.batch_size} exceeds n_samples={schedule.n_samples}: "
            "a mini-batch cannot hold more samples than the client has (pass "
            "batch_size=n_samples for full-batch steps).")
    max_iter = _check_count(max_iter, "max_iter")
    tol = _check_number(tol, "tol", low=0.0, low_open=True)
    rng = np.random.default_rng(random_state)
    layers = mlp_layers(torch, model)

    from .flower import update_query

    state = model.state_dict()
    keys = list(state)
    sent = as_arrays(sent, keys, "sent")
    returned = as_arrays(returned, keys, "returned")
    check_pair(state, keys, sent, returned)
    low = sorted({np.asarray(a).dtype.name for a in (*sent, *returned)
                  if np.asarray(a).dtype.kind == "f" and np.asarray(a).dtype.itemsize < 8})
    sent = [np.asarray(a, dtype=np.float64) for a in sent]
    returned = [np.asarray(a, dtype=np.float64) for a in returned]
    c = decay_factor(schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        query = update_query(model, [c * a for a in sent], returned,
                             learning_rate=schedule.learning_rate)
    first, second = query.layer_names
    by_name = dict(zip(keys, sent))
    by_name_T = dict(zip(keys, returned))
    has_bias = bool(query.has_bias)
    W0 = by_name[f"{first}.weight"]
    if has_bias:
        W0 = np.column_stack([W0, by_name[f"{first}.bias"]])
    A = np.column_stack([by_name[f"{second}.weight"].T, by_name_T[f"{second}.weight"].T])
    D = np.asarray(query.grad, dtype=np.float64)
    N = schedule.n_samples
    if N > D.shape[1]:
        raise ValueError(
            f"n_samples={N} exceeds the first layer's {D.shape[1]} inputs (bias "
            "included): the samples' span is then the whole input space and the "
            "update does not single them out.")
    # the parameters' rounding, as update_query bounds it: eps ||theta||_F / lr
    roundoff = np.finfo(np.float64).eps * np.linalg.norm(W0) / schedule.learning_rate
    U, left, rank = span(D, N, np.float64, roundoff)
    if rank > N and low:
        raise ValueError(
            f"The first layer's update has rank {rank}, more than n_samples={N}: "
            f"the parameters are {'/'.join(low)}, and their round-off (eps |θ| / lr "
            "per entry) fills the update's spectrum. skrecon.fedavg simulates the "
            "local steps in float64 and does not model that rounding: FedAvg updates "
            "of lower-precision clients are not supported (a float64 client's are: "
            "model.double()). One local step's update is: skrecon.flower.update_query "
            "reads its batch size above the round-off.")
    if rank > N:
        raise ValueError(
            f"The first layer's update has rank {rank}, more than n_samples={N}: "
            "it cannot come from that many samples with the hyperparameters given "
            "(check num_examples, weight_decay and momentum).")
    if rank < N:
        warnings.warn(
            f"The first layer's update shows {rank} samples, fewer than "
            f"n_samples={N}: two samples are identical, or num_examples is larger "
            "than the samples trained on (a DataLoader with drop_last=True skips the "
            "last short mini-batch); the extra rows are not identifiable.",
            BatchSizeWarning, stacklevel=3)
    if verbose:
        print(f"fedavg: span of {N} samples, {schedule.n_steps} local steps")
    activation = get_activation(query.activation)
    names = [k for k, _ in model.named_parameters()]
    p0 = {k: torch.as_tensor(by_name[k]) for k in names}
    pT_dict = {k: torch.as_tensor(by_name_T[k]) for k in names}
    pT = flat_parameters(torch, pT_dict, names)
    last_w, last_b = layers[-1][1], layers[-1][2]
    last_delta = ((c * by_name[last_w] - by_name_T[last_w]) / schedule.learning_rate,
                  None if last_b is None else
                  (c * by_name[last_b] - by_name_T[last_b]) / schedule.learning_rate)
    offset, basis = span_coordinates(U, has_bias)
    act = layers[1][1]
    scale = float(torch.linalg.norm(pT - flat_parameters(torch, p0, names))) \
        / schedule.learning_rate
    ftol = 0.5 * (1e-4 * tol * scale) ** 2
    K = by_name[last_w].shape[0]
    unknowns = Unknowns(schedule, torch.as_tensor(basis), torch.as_tensor(offset), K)
    multi = schedule.steps_per_epoch > 1 and schedule.epochs > 1
    score = None
    counts = [0, 0, 0]  # normal matrices, simulations, fixed-pattern polishes

    def polish(X0, order, passes):
        """The best of Levenberg-Marquardt polishes from ``X0`` with each
        targets of ``passes``: ``(residual, X, labels, order, fit)``."""
        best = None
        for Q0 in passes:
            X, Q, tried = X0, Q0, []
            order_try, W = order, memberships(order, schedule)
            for _ in range(_ORDER_ROUNDS):
                tried.append(order_try)
                problem = UpdateProblem(torch, layers, names, p0, pT_dict, U, schedule,
                                   unknowns, W)
                if verbose:
                    shown = (order_try.tolist() if schedule.steps_per_epoch > 1
                             else "not needed")
                    print(f"fedavg: polish over {unknowns.size} unknowns, order {shown}")
                z = problem.pack(X, Q)
                fit = levenberg_marquardt(torch, problem, z, max_iter=max_iter,
                                          ftol=ftol, verbose=verbose)
                counts[0] += fit.n_iter
                counts[1] += fit.nfev
                # mini-batches: once, for the first order (every order and
                # target pass tried it, 27-28 min a flagged 16-digit ReLU run
                # against 10-249 s before it; no later order was ever right)
                if fit.status != 1 and kinks and (schedule.steps_per_epoch == 1
                                                  or not counts[2]):
                    fit = pattern_polish(torch, problem, fit, max_iter=max_iter,
                                         ftol=ftol, verbose=verbose)
                    counts[0] += fit.n_iter
                    counts[1] += fit.nfev
                    counts[2] += 1
                X, Q = problem.parts(fit.z)
                if fit.status == 1 or schedule.steps_per_epoch == 1:
                    break
                # the order again, from the trajectory the polished batch simulates
                thetas = trajectory(torch, layers, p0, X, Q, order_try, schedule)
                order_try = assign_steps(torch, X, thetas, first, second, act, has_bias,
                                         left, schedule)
                if multi:
                    # the polished batch tells the orders apart better than the start
                    hard = np.argmax(Q, axis=1)
                    if score(X, hard, tried[-1]) < score(X, hard, order_try):
                        order_try = tried[-1]
                    new_labels, order_try, _ = search_order(score, X, hard, order_try,
                                                            schedule)
                    changed = new_labels != hard
                    Q = Q.copy()
                    Q[changed] = np.eye(K)[new_labels[changed]]
                if any(np.array_equal(order_try, seen) for seen in tried):
                    break
                W = memberships(order_try, schedule)
                if verbose:
                    print("fedavg: order re-assigned from the simulated trajectory")
            labels = np.argmax(Q, axis=1).astype(np.int64)
            with torch.no_grad():
                hard = torch.nn.functional.one_hot(torch.as_tensor(labels), K).to(
                    torch.float64)
                out = simulate(torch, layers, p0, torch.as_tensor(X), hard,
                               torch.as_tensor(W), schedule)
                residual = float(torch.linalg.norm(
                    flat_parameters(torch, out, names) - pT)) \
                    / (scale * schedule.learning_rate)
            if best is None or residual < best[0]:
                best = (residual, X, labels, order_try, fit)
            if residual <= tol:
                break
        return best

    kinks = bool(getattr(activation, "kinks", ()))

    best = X0 = None
    if schedule.n_steps == 1:
        # one local step on the whole batch: the update IS the batch's
        # gradient at the sent weights, and the main estimator inverts it
        # for every activation it handles (ReLU's patterns included, where
        # the polish below, blind to pattern flips, stalls: 8 digits, ReLU,
        # lr 0.05, worst error 2.4e-2 without it)
        tic = time.perf_counter()
        X1, labels1 = _one_gradient(query, N, random_state)
        if verbose:
            print(f"fedavg: one full-batch step, the gradient inverted by "
                  f"GradientReconstructor ({time.perf_counter() - tic:.1f} s)")
        if X1 is not None:
            order = np.zeros((1, N), dtype=np.int64) + np.arange(N)
            X0, best = X1, polish(X1, order, [np.eye(K)[labels1]])
    if best is None or best[0] > tol:
        tic = time.perf_counter()
        start = search_start(D, W0, A, activation, has_bias, U, N, rng)
        if verbose:
            print(f"fedavg: start by the column-space search "
                  f"({time.perf_counter() - tic:.1f} s)")
        if schedule.steps_per_epoch == 1:
            order = np.tile(np.arange(N), (schedule.epochs, 1))
        else:
            order = assign_steps(torch, start,
                                 interpolated(p0, pT_dict, schedule.n_steps),
                                 first, second, act, has_bias, left, schedule)
        W = memberships(order, schedule)
        soft = soft_targets(torch, layers, p0, start, last_delta, W, schedule)
        for _ in range(_ORDER_ROUNDS if schedule.steps_per_epoch > 1 else 0):
            # the order again, from the trajectory the start simulates in it (the
            # straight line from theta_0 to theta_T misplaces a sample or two)
            thetas = trajectory(torch, layers, p0, start, one_hot(soft), order, schedule)
            new = assign_steps(torch, start, thetas, first, second, act, has_bias, left,
                               schedule)
            if np.array_equal(new, order):
                break
            order, W = new, memberships(new, schedule)
            soft = soft_targets(torch, layers, p0, start, last_delta, W, schedule)
        labels0 = None
        # several epochs of mini-batches: the assignment misplaces samples (its
        # trajectory comes from the order itself); the order and the labels are
        # searched on the residual of the simulated steps (_order_search)
        if multi:
            tic = time.perf_counter()
            score = ResidualScore(torch, layers, p0, pT_dict, names, schedule, K)
            before = score(start, np.argmax(soft, axis=1), order)
            labels0, order, after = search_order(score, start, np.argmax(soft, axis=1),
                                                 order, schedule)
            W = memberships(order, schedule)
            soft = soft_targets(torch, layers, p0, start, last_delta, W, schedule)
            if verbose:
                print(f"fedavg: order and labels searched on the simulated residual, "
                      f"{before:.1e} -> {after:.1e} ({score.n_calls} simulations, "
                      f"{time.perf_counter() - tic:.1f} s)")
        X0_search, order, soft, targets = refined_start(
            torch, layers, p0, start, soft, order, first, second, activation, has_bias,
            U, D @ U, left, last_delta, schedule, verbose, labels=labels0, score=score)
        # every row one-hot (its likeliest label), then one-hot only where the
        # label is clear, then all soft: a wrong one-hot label stalls the
        # polish, and so can soft rows (16 digits, E = 5, lr 0.1: two soft rows
        # stall at 1.5e-1 error, one-hot rows give the batch in 3 iterations)
        passes = []
        for Q0 in (one_hot(targets, 0.0), targets, soft):
            if not any(np.array_equal(Q0, seen) for seen in passes):
                passes.append(Q0)
        found_by_search = polish(X0_search, order, passes)
        if best is None or found_by_search[0] < best[0]:
            X0, best = X0_search, found_by_search
    n_iter, nfev = counts[:2]
    residual, X, labels, order, fit = best
    loose = np.zeros(N, dtype=bool)
    if residual <= tol:
        problem = UpdateProblem(torch, layers, names, p0, pT_dict, U, schedule, unknowns,
                           memberships(order, schedule))
        loose = update_error_bounds(torch, problem, X, labels, K) > _ROW_PRECISION
    if residual <= tol and not np.any(loose):
        status = 1
        message = (f"The local steps simulated from the samples, labels and order "
                   f"reproduce the returned parameters (relative residual "
                   f"{residual:.2g} <= tol={tol:g}): every sample found.")
    elif residual <= tol:
        status = 1
        message = (f"The local steps simulated from the samples, labels and order "
                   f"reproduce the returned parameters (relative residual "
                   f"{residual:.2g} <= tol={tol:g}), but rows "
                   f"{np.flatnonzero(loose).tolist()} are not pinned by it: their "
                   f"first-order error bounds exceed {_ROW_PRECISION:g} (near-duplicate "
                   "samples, whose difference the update barely shows); found is False "
                   "there.")
        warnings.warn(message, IdentifiabilityWarning, stacklevel=3)
    else:
        status = 0 if fit.status == 0 else 2
        why = (f"max_iter={max_iter} normal matrices were formed" if status == 0 else
               "the polish stalled in a local minimum (a poor start, a wrong label "
               "or a wrong order, or hyperparameters that are not the client's: "
               "learning_rate, batch_size, epochs, momentum, weight_decay)")
        message = (f"The simulated local steps miss the returned parameters by a "
                   f"relative residual of {residual:.2g} > tol={tol:g}: {why}. No "
                   "sample is certified; the rows are best guesses."
                   + hyperparameter_hint(torch, layers, p0, pT_dict, names, schedule, K,
                                         X, labels, order, residual))
        warnings.warn(message, ConvergenceWarning, stacklevel=3)
    found = np.full(N, status == 1) & ~loose
    return UpdateReconstruction(
        samples=X, labels=labels, found=found, update_residual=residual, order=order,
        start_samples=X0, n_iter=n_iter, nfev=nfev, status=status, message=message,
        success=status == 1)
