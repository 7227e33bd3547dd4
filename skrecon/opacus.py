"""Optional Opacus adapter: DP-SGD clients and leakage against epsilon.

`Opacus <https://opacus.ai>`_ makes a PyTorch client differentially private
with DP-SGD: each sample's gradient is clipped to norm ``max_grad_norm``
(per-sample clipping), the clipped gradients are summed, Gaussian noise of
std ``noise_multiplier * max_grad_norm`` is added and the sum is divided by
the batch size. Opacus's accountant turns the noise multiplier, the sampling
rate and the number of steps into the ``(epsilon, delta)`` guarantee.

:func:`private_step` plays such a client for one step of DP-SGD with
Opacus's own ``PrivacyEngine`` and returns the parameters sent and returned,
the gradient query of the update (:func:`skrecon.flower.update_query`) and
Opacus's ``epsilon``. :func:`leakage_curve` attacks the update over a grid of
noise multipliers and reports the matched cosine, PSNR and label accuracy
of the reconstruction next to ``epsilon``.

**Clipping alone does not protect.** Per-sample clipping multiplies each
sample's back-propagated signal by ``c_i = min(1, C / ||g_i||) > 0``: the
first layer's gradient ``sum_i c_i (a_j . u_i) sigma'(w_j . x_i + b_j) x_i``
is again a gradient of the model of :ref:`theory-model`, with signals ``c_i u_i``.
The samples ``x_i`` are untouched and recovered exactly (the signals come
back rescaled, and labels, read off their sign pattern, too). Only the
noise protects.

Opacus is an optional dependency (``pip install "skrecon[opacus]"``,
which brings PyTorch); it is imported when a function is called, so
``import skrecon.opacus`` works without it. This module's name does not
shadow Opacus: inside it, ``import opacus`` is an absolute import of the real
package.
"""

import copy
import numbers
import warnings
from functools import partial

import numpy as np
from sklearn.utils import Bunch

from ._harness import (check_grid, empty_row, fit_quietly, run_trials, score,
                       seeded_attack)
from .exceptions import BatchSizeWarning
from .flower import update_query
from .reconstructor import GradientReconstructor
from .torch import gaussian_reinit_

__all__ = ["private_step", "leakage_curve"]

_INSTALL_HINT = 'pip install "skrecon[opacus]"'


def _import_opacus():
    try:
        import opacus
        import torch
    except ImportError as exc:  # pragma: no cover - exercised without opacus
        raise ImportError(
            "skrecon.opacus needs Opacus (and PyTorch), which is not installed. "
            f"Install the optional extra: {_INSTALL_HINT}") from exc
    return opacus, torch


def _check_nonnegative(value, name, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}.")
    return float(value)


def _check_seed(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)


def _check_batch(torch, model, batch, targets):
    dtype = next(model.parameters()).dtype
    batch = np.asarray(batch)
    targets = np.asarray(targets)
    if batch.ndim != 2 or batch.shape[0] < 1 or not np.all(np.isfinite(batch)):
        raise ValueError(
            "batch must be a finite 2-D array (batch_size, n_inputs), got shape "
            f"{batch.shape}.")
    if targets.shape != (batch.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"targets must be integer class labels of shape ({batch.shape[0]},), "
            f"got shape {targets.shape} and dtype {targets.dtype}.")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if linears and batch.shape[1] != linears[0].in_features:
        raise ValueError(
            f"batch has {batch.shape[1]} columns but the model's first linear layer "
            f"takes {linears[0].in_features} inputs.")
    if linears and (targets.min() < 0 or targets.max() >= linears[-1].out_features):
        raise ValueError(
            f"targets must be class labels in [0, {linears[-1].out_features}) (the "
            f"model's {linears[-1].out_features} outputs), got values in "
            f"[{targets.min()}, {targets.max()}].")
    return (torch.as_tensor(batch, dtype=dtype), torch.as_tensor(targets, dtype=torch.long))


def private_step(model, batch, targets, *, noise_multiplier, max_grad_norm=1.0,
                 learning_rate=0.1, delta=1e-5, accountant="rdp", random_state=0):
    """One step of DP-SGD with Opacus on one batch, and its gradient query.

    The client's side: a copy of ``model`` (the weights the server sent) is
    made private with ``opacus.PrivacyEngine.make_private`` (per-sample
    clipping to ``max_grad_norm``, Gaussian noise of std
    ``noise_multiplier * max_grad_norm``, the whole batch as one step, no
    Poisson sampling), takes one SGD step on the softmax cross-entropy loss
    of ``(batch, targets)`` and returns its parameters. ``model`` itself is
    not modified.

    Parameters
    ----------
    model : torch.nn.Module
        The model the server sent, e.g. after
        :func:`skrecon.torch.gaussian_reinit_`. Its first layer must be an
        ``nn.Linear`` followed by another (see
        :func:`skrecon.torch.first_layer_query`) and all its layers must be
        supported by Opacus.
    batch : array-like of shape (batch_size, n_inputs)
        The client's private batch.
    targets : array-like of int of shape (batch_size,)
        Its class labels.
    noise_multiplier : float
        Opacus's noise multiplier ``sigma`` (``>= 0``; ``0`` is clipping
        only).
    max_grad_norm : float, default=1.0
        The per-sample clipping norm ``C``.
    learning_rate : float, default=0.1
        The client's SGD learning rate.
    delta : float, default=1e-5
        The ``delta`` at which Opacus's accountant reports ``epsilon``.
    accountant : {"rdp", "prv", "gdp"}, default="rdp"
        Opacus's privacy accountant. Opacus's own default, ``"prv"``, fails
        for one step at sampling rate 1 with small noise multipliers (its
        discretisation does not converge); ``"rdp"`` gives a finite
        ``epsilon`` for every ``sigma > 0``.
    random_state : int, default=0
        Seeds the ``torch.Generator`` of Opacus's noise.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``query`` (:class:`~skrecon.query.GradientQuery`,
        :func:`skrecon.flower.update_query` of the update: ``query.grad``,
        ``query.fit_params`` ...),
        ``sent`` and ``returned`` (lists of ndarray, in ``state_dict``
        order), ``epsilon`` (float, Opacus's epsilon at ``delta``; ``inf``
        for ``noise_multiplier=0``), ``delta``, ``noise_multiplier``,
        ``max_grad_norm``, ``learning_rate``.

    Raises
    ------
    ImportError
        If Opacus is not installed.
    ValueError
        For a negative or non-finite ``noise_multiplier``, a non-positive
        ``max_grad_norm``, ``learning_rate`` or ``delta`` (``delta < 1``), a
        batch that is not a finite 2-D array with integer targets of matching
        length, an unknown ``accountant`` or one that cannot compute
        ``epsilon``, or a model that Opacus or :func:`update_query` refuses.

    See Also
    --------
    leakage_curve : The attack over a grid of noise multipliers.
    skrecon.flower.update_query : The query from any one-step update.

    Notes
    -----
    With ``noise_multiplier=0`` the update is the gradient of the model of
    :ref:`theory-model` with each sample's signal multiplied by its clipping factor
    ``min(1, C / ||g_i||)``, which the reconstruction absorbs into the
    unknown signals: the batch and its labels are recovered exactly. The
    accountant sees one step at sampling rate 1 (the whole local data set is
    the batch).

    References
    ----------
    .. [1] M. Abadi et al., "Deep Learning with Differential Privacy", ACM
       CCS 2016.
    .. [2] A. Yousefpour et al., "Opacus: User-Friendly Differential Privacy
       Library in PyTorch", arXiv:2109.12298, 2021.
    .. [3] I. Mironov, "Rényi Differential Privacy", IEEE CSF 2017.

    Examples
    --------
    >>> import numpy as np
    >>> import pytest
    >>> torch = pytest.importorskip("torch")
    >>> _ = pytest.importorskip("opacus")
    >>> from skrecon.opacus import private_step
    >>> from skrecon.torch import gaussian_reinit_
    >>> model = gaussian_reinit_(torch.nn.Sequential(
    ...     torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double())
    >>> x = np.random.default_rng(0).uniform(size=(2, 4))
    >>> step = private_step(model, x, [0, 2], noise_multiplier=1.0)
    >>> round(step.epsilon, 2), step.query.grad.shape
    (4.73, (16, 5))
    """
    opacus, torch = _import_opacus()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    noise_multiplier = _check_nonnegative(noise_multiplier, "noise_multiplier")
    max_grad_norm = _check_nonnegative(max_grad_norm, "max_grad_norm", positive=True)
    learning_rate = _check_nonnegative(learning_rate, "learning_rate", positive=True)
    delta = _check_nonnegative(delta, "delta", positive=True)
    if delta >= 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}.")
    if accountant not in ("rdp", "prv", "gdp"):
        raise ValueError(
            f"accountant must be 'rdp', 'prv' or 'gdp' (Opacus's accountants), got "
            f"{accountant!r}.")
    seed = _check_seed(random_state, "random_state")
    x, y = _check_batch(torch, model, batch, targets)

    work = copy.deepcopy(model)
    sent = [v.detach().cpu().numpy().copy() for v in work.state_dict().values()]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=len(x), shuffle=False)
    optimizer = torch.optim.SGD(work.parameters(), lr=learning_rate)
    with warnings.catch_warnings():
        # an experiment, not a deployment: Opacus's reminder that the
        # seeded (non-secure) RNG is not for production, and PyTorch's
        # notice that the inputs do not require gradients, are expected
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        engine = opacus.PrivacyEngine(accountant=accountant, secure_mode=False)
        try:
            private, dp_optimizer, dp_loader = engine.make_private(
                module=work, optimizer=optimizer, data_loader=loader,
                noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                poisson_sampling=False,
                noise_generator=torch.Generator().manual_seed(seed))
        except (ValueError, NotImplementedError) as exc:
            raise ValueError(f"Opacus cannot make this model private: {exc}") from exc
        for xb, yb in dp_loader:  # one batch: the whole data set
            dp_optimizer.zero_grad()
            torch.nn.CrossEntropyLoss()(private(xb), yb).backward()
            dp_optimizer.step()
    returned = [v.detach().cpu().numpy().copy() for v in work.state_dict().values()]
    if noise_multiplier == 0:
        epsilon = float("inf")  # no noise, no privacy (every accountant agrees)
    else:
        try:
            epsilon = float(engine.get_epsilon(delta))
        except (RuntimeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            raise ValueError(
                f"Opacus's {accountant!r} accountant cannot compute epsilon for "
                f"noise_multiplier={noise_multiplier} ({type(exc).__name__}: "
                f"{exc}); use accountant='rdp'.") from exc
    with warnings.catch_warnings():
        # (DP-SGD's noise makes the update full rank: known here, not a doubt)
        warnings.filterwarnings("ignore", "The update of the first layer has full rank",
                                BatchSizeWarning)
        query = update_query(model, sent, returned, learning_rate=learning_rate)
    return Bunch(query=query, sent=sent, returned=returned, epsilon=epsilon,
                 delta=delta, noise_multiplier=noise_multiplier,
                 max_grad_norm=max_grad_norm, learning_rate=learning_rate)


def _one_trial(defense, parameter, sigma, seed, batch, *, model, targets,
               reconstructor, step_params, reinit_params, data_range):
    """Draw the query, take the private step, attack and score once (the
    harness's trial, ``defense`` and ``parameter`` are the table's names)."""
    server = gaussian_reinit_(copy.deepcopy(model), random_state=seed, **reinit_params)
    step = private_step(server, batch, targets, noise_multiplier=sigma,
                        random_state=seed, **step_params)
    q = step.query
    row = empty_row(len(batch))
    row.update(epsilon=step.epsilon, delta=step.delta)
    if reconstructor is None:
        if q.activation is None:
            raise ValueError(
                "The activation between the first two layers could not be read off "
                "the model; pass reconstructor=GradientReconstructor(activation=...).")
        attack = GradientReconstructor(activation=q.activation, bias=q.has_bias,
                                       loss="cross_entropy", batch_size=len(batch),
                                       random_state=seed)
    else:
        attack = seeded_attack(reconstructor, seed)
    if fit_quietly(row, attack, q.grad, q.fit_params):
        score(row, batch, attack, labels=targets, data_range=data_range)
    return row


def leakage_curve(model, batch, targets, noise_multipliers, *, max_grad_norm=1.0,
                  learning_rate=0.1, delta=1e-5, accountant="rdp", seeds=(0,),
                  weight_std=None, bias_std=0.5, reconstructor=None,
                  data_range=None, n_jobs=None):
    """Reconstruction quality against Opacus's epsilon, over noise multipliers.

    For each noise multiplier and seed: the server draws Gaussian first two
    layers (:func:`skrecon.torch.gaussian_reinit_` with ``random_state=seed``),
    the client takes one DP-SGD step with Opacus (:func:`private_step`), and
    a :class:`~skrecon.GradientReconstructor` attacks the update. Every true
    sample is matched to its reconstruction (Hungarian algorithm) and scored.

    Parameters
    ----------
    model : torch.nn.Module
        The client's architecture: an ``nn.Linear`` first layer, an
        activation module, another ``nn.Linear``, and anything above. It is
        copied for every trial and not modified.
    batch : array-like of shape (batch_size, n_inputs)
        The private batch.
    targets : array-like of int of shape (batch_size,)
        Its class labels.
    noise_multipliers : sequence of float
        Opacus's noise multipliers to try (``>= 0``).
    max_grad_norm, learning_rate, delta, accountant
        As in :func:`private_step`.
    seeds : sequence of int, default=(0,)
        One trial per seed and noise multiplier: the seed draws the server's
        weights, Opacus's noise and the attack's random starts.
    weight_std, bias_std : float or None
        The server's weight and bias std, as in
        :func:`skrecon.torch.gaussian_reinit_`.
    reconstructor : GradientReconstructor or None, default=None
        The attack, cloned for every trial. ``None``:
        ``GradientReconstructor(activation=<read off the model>, bias=<the
        first layer's>, loss="cross_entropy", batch_size=len(batch))`` --
        the server knows the batch size from the ``num_examples`` that a
        Flower client reports.
    data_range : float or None, default=None
        Range of the data for PSNR (``1.0`` for images in ``[0, 1]``);
        ``None`` leaves the ``psnr`` column NaN.
    n_jobs : int or None, default=None
        Trials run in parallel with joblib.

    Returns
    -------
    table : dict of str to ndarray of shape (n_rows,)
        One row per (noise multiplier, seed, true sample), ``n_rows =
        len(noise_multipliers) * len(seeds) * batch_size``, in that nesting
        order, with the columns of :func:`skrecon.evaluation.leakage_curve`
        (one schema, which :func:`skrecon.plotting.plot_leakage_curve`
        draws, against ``strength`` or ``epsilon``): ``defense`` is
        ``"PrivacyEngine"`` (Opacus's), ``parameter`` is
        ``"noise_multiplier"`` and ``strength`` its value; ``epsilon`` is
        Opacus's at ``delta`` (``inf`` without noise); ``label_correct`` is
        1.0 when the recovered label of the matched reconstruction is the
        true label, 0.0 when not, NaN when unmatched or the attack gives no
        labels; ``fit_time`` covers the private step and the attack.
        ``pandas.DataFrame(table)`` makes a data frame of it.

    Raises
    ------
    ImportError
        If Opacus is not installed.
    ValueError
        If ``noise_multipliers`` or ``seeds`` is empty or invalid, or for the
        reasons of :func:`private_step`.

    See Also
    --------
    private_step : One DP-SGD step and its query.
    skrecon.evaluation.leakage_curve : The same for the gradient defences.

    References
    ----------
    .. [1] M. Abadi et al., "Deep Learning with Differential Privacy", ACM
       CCS 2016.
    .. [2] A. Yousefpour et al., "Opacus: User-Friendly Differential Privacy
       Library in PyTorch", arXiv:2109.12298, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> import pytest
    >>> torch = pytest.importorskip("torch")
    >>> _ = pytest.importorskip("opacus")
    >>> from skrecon import GradientReconstructor
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.opacus import leakage_curve
    >>> batch, labels = load_digits_batch(2, random_state=0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.Tanh(),
    ...                             torch.nn.Linear(512, 10)).double()
    >>> attack = GradientReconstructor(activation="tanh", bias=True,
    ...                                loss="cross_entropy", batch_size=2, max_starts=4)
    >>> table = leakage_curve(model, batch, labels, [0.0, 1.0], data_range=1.0,
    ...                       reconstructor=attack)
    >>> table["strength"].tolist(), table["epsilon"].round(2).tolist()
    ([0.0, 0.0, 1.0, 1.0], [inf, inf, 4.73, 4.73])
    >>> bool(table["relative_error"][:2].max() < 1e-6), table["label_correct"][:2].tolist()
    (True, [1.0, 1.0])
    """
    _import_opacus()
    batch = np.asarray(batch, dtype=np.float64)
    targets = np.asarray(targets)
    sigmas, seeds = check_grid(noise_multipliers, seeds, "noise_multipliers")
    for s in sigmas:
        _check_nonnegative(s, "each noise multiplier")
    seeds = [_check_seed(s, "each seed") for s in seeds]
    step_params = dict(max_grad_norm=max_grad_norm, learning_rate=learning_rate,
                       delta=delta, accountant=accountant)
    reinit_params = dict(weight_std=weight_std, bias_std=bias_std)
    trial = partial(_one_trial, model=model, targets=targets, reconstructor=reconstructor,
                    step_params=step_params, reinit_params=reinit_params,
                    data_range=data_range)
    trials = [("PrivacyEngine", "noise_multiplier", s, seed, batch)
              for s in sigmas for seed in seeds]
    return run_trials(trial, trials, n_jobs)
