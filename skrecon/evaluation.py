"""Leakage curves: how much of a batch a defence lets through, by strength.

An auditor asks "how strong must this defence be before the batch stops
leaking?". :func:`leakage_curve` answers with a grid: for every strength of a
defence and every seed, a server draws a fresh query (Gaussian first layer,
:func:`skrecon.clients.make_gradient_query`), the client's gradient passes
through the defence, and a :class:`~skrecon.GradientReconstructor` attacks
it. Every true sample is then matched to its reconstruction (Hungarian
algorithm) and scored. The result is a tidy table - one row per (strength,
seed, true sample) - that ``pandas.DataFrame(table)`` reads directly and
:func:`skrecon.plotting.plot_leakage_curve` draws. The trials run through
skrecon's one leakage harness, which :func:`skrecon.opacus.leakage_curve`
feeds with its DP-SGD trial: every leakage table has the same columns.
"""

import inspect
from functools import partial
from numbers import Integral

import numpy as np
from sklearn.base import clone

from ._harness import (check_grid, empty_row, fit_quietly, run_trials, score,
                       seeded_attack)
from .clients import make_gradient_query
from .reconstructor import GradientReconstructor

__all__ = ["leakage_curve", "leakage_grid"]


def _one_trial(defense, parameter, strength, seed, batch, *, reconstructor,
               query_params, data_range):
    """Query, defend, attack and score once; never raises a ValueError."""
    query = make_gradient_query(batch, random_state=seed, **query_params)
    defended = clone(defense).set_params(**{parameter: strength})
    # every random step seeded, a Pipeline's steps too (only the top level
    # was: a pipeline's noise differed between two identical calls)
    defended.set_params(**{key: seed for key in defended.get_params(deep=True)
                           if key == "random_state" or key.endswith("__random_state")})
    attack = seeded_attack(reconstructor, seed)
    row = empty_row(len(batch))
    try:
        grad = defended.fit_transform(query.grad)
    except ValueError as exc:
        row["status"] = f"{type(exc).__name__}: {exc}"
        return row
    if fit_quietly(row, attack, grad, query.fit_params):
        labels = query.targets if query.loss == "cross_entropy" else None
        score(row, batch, attack, labels=labels, data_range=data_range)
    return row


def leakage_curve(batch, defense, parameter, strengths, *, reconstructor=None,
                  seeds=(0, 1, 2), query_params=None, data_range=None, n_jobs=None):
    """Reconstruction quality of a batch under a defence of growing strength.

    For each ``strength`` in ``strengths`` and each ``seed`` in ``seeds``: a
    query is drawn with ``make_gradient_query(batch, random_state=seed,
    **query_params)``, its gradient is passed through ``defense`` with
    ``parameter`` set to ``strength`` (and ``random_state=seed`` when the
    defence is random), ``reconstructor`` is fitted on the result (with
    ``random_state=seed`` unless it has its own), and every true sample is
    matched to a recovered one by :func:`~skrecon.metrics.reconstruction_report`.

    Parameters
    ----------
    batch : array-like of shape (batch_size, n_inputs)
        The private batch the client trains on, one sample per row.
    defense : estimator
        A transformer of the gradient, e.g.
        :class:`~skrecon.defenses.GaussianGradientNoise` or
        :class:`~skrecon.defenses.TopKPruning`. It is cloned for every trial.
    parameter : str
        The name of the defence's parameter that sets its strength, e.g.
        ``"scale"`` or ``"keep_fraction"``.
    strengths : sequence of float
        The values of ``parameter`` to try (the curve's x axis).
    reconstructor : GradientReconstructor or None, default=None
        The attack, cloned for every trial. ``None`` means
        ``GradientReconstructor(activation=..., bias=...)`` matching the
        query (``query_params["activation"]``, ``"tanh"`` by default, and
        ``query_params["bias"]``, ``"gaussian"`` by default).
    seeds : sequence of int, default=(0, 1, 2)
        One trial per seed and strength: the seed draws the server's weights,
        the defence's randomness and the attack's random starts.
    query_params : dict or None, default=None
        Keyword arguments of :func:`~skrecon.clients.make_gradient_query`
        (``n_neurons``, ``activation``, ``bias``, ``loss`` ...).
    data_range : float or None, default=None
        Range of the data for PSNR (e.g. ``1.0`` for images in ``[0, 1]``);
        ``None`` leaves the ``psnr`` column NaN.
    n_jobs : int or None, default=None
        Trials run in parallel with joblib.

    Returns
    -------
    table : dict of str to ndarray of shape (n_rows,)
        One row per (strength, seed, true sample), ``n_rows =
        len(strengths) * len(seeds) * batch_size``, in that nesting order.
        The columns, in this order (the one schema of skrecon's leakage
        tables, :func:`skrecon.opacus.leakage_curve`'s too):

        - ``defense`` (str): the defence's class name;
        - ``parameter`` (str): the name of its strength parameter;
        - ``strength`` (float): the parameter's value;
        - ``epsilon``, ``delta`` (float): the privacy guarantee of a
          DP-SGD step (:func:`skrecon.opacus.leakage_curve`); NaN here,
          where the defence has no accountant;
        - ``seed`` (int);
        - ``batch_size`` (int): the batch's rows;
        - ``sample`` (int): the row of ``batch``;
        - ``cosine`` (float in [-1, 1]): the matched cosine, matched by the
          absolute cosine when the attack cannot identify signs;
        - ``relative_error`` (float): ``||x_hat - x|| / ||x||``;
        - ``psnr`` (float, dB);
        - ``label_correct`` (float): 1.0 when the label the attack
          recovered for the matched sample is the true one, 0.0 when not,
          NaN when the sample is unmatched, the attack gives no labels or
          the loss has none (squared loss);
        - ``found`` (bool): the attack's ``found_`` flag of the matched
          reconstruction (False when the sample is unmatched);
        - ``gradient_residual`` (float): the attack's relative gradient
          residual;
        - ``batch_size_found`` (int): the attack's batch size, ``-1`` when
          it failed;
        - ``converged`` (bool): the attack's ``converged_``;
        - ``fit_time`` (float, seconds): the whole trial (query, defence
          and attack);
        - ``status`` (str): ``"ok"``, or the ``ValueError`` that the
          defence or the attack raised.

        A sample the attack did not recover (it found fewer samples, or
        failed) has NaN metrics. ``pandas.DataFrame(table)`` makes a data
        frame of it.

    Raises
    ------
    ValueError
        If ``strengths`` or ``seeds`` is empty or not a sequence of numbers
        (non-negative integers for ``seeds``), ``defense`` is not an estimator
        instance, ``parameter`` is not a parameter of ``defense`` or a
        strength is invalid for it, ``query_params`` sets ``batch`` or
        ``random_state``, or ``batch`` is not a 2-D array with at least one
        row.

    See Also
    --------
    skrecon.plotting.plot_leakage_curve : Draws the table.

    Examples
    --------
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.defenses import GaussianGradientNoise
    >>> from skrecon.evaluation import leakage_curve
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> table = leakage_curve(batch, GaussianGradientNoise(relative=True), "scale",
    ...                       [1e-6, 1e-1], seeds=[0], data_range=1.0,
    ...                       query_params={"n_neurons": 4000})
    >>> table["strength"].tolist()
    [1e-06, 1e-06, 0.1, 0.1]
    >>> bool(table["relative_error"][:2].max() < 1e-4)
    True
    """
    batch = np.asarray(batch, dtype=np.float64)
    if batch.ndim != 2 or batch.shape[0] < 1:
        raise ValueError(
            f"batch must be a 2-D array with one sample per row, got shape {batch.shape}."
        )
    strengths, seeds = check_grid(strengths, seeds, "strengths")
    if not all(isinstance(s, Integral) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds!r}.")
    seeds = [int(s) for s in seeds]
    _check_defense(defense, parameter, strengths)
    query_params = _check_query_params(query_params, "leakage_curve")
    reconstructor = _default_reconstructor(reconstructor, query_params)
    trials = [(defense, parameter, s, seed, batch) for s in strengths for seed in seeds]
    return run_trials(partial(_one_trial, reconstructor=reconstructor,
                              query_params=query_params, data_range=data_range),
                      trials, n_jobs)


def _check_query_params(query_params, name):
    """``query_params`` as a dict, without the keys the harness sets."""
    query_params = dict(query_params or {})
    clash = sorted({"batch", "random_state"} & set(query_params))
    if clash:
        raise ValueError(
            f"query_params must not set {clash}: {name} passes the batch "
            "and draws each query with random_state=seed.")
    known = set(inspect.signature(make_gradient_query).parameters) - {"batch",
                                                                      "random_state"}
    unknown = sorted(set(query_params) - known)
    if unknown:
        raise ValueError(
            f"query_params has unknown key(s) {unknown}: they are passed to "
            f"skrecon.clients.make_gradient_query, which takes {sorted(known)}.")
    return query_params


def _default_reconstructor(reconstructor, query_params):
    """The attack: the one given, or one that matches the query."""
    if reconstructor is not None:
        return reconstructor
    return GradientReconstructor(
        activation=query_params.get("activation", "tanh"),
        bias=query_params.get("bias", "gaussian") != "none")


def _check_defense(defense, parameter, strengths):
    """A defence, its strength parameter and strengths, checked: the
    strengths as a list of floats."""
    if isinstance(defense, type) or not hasattr(defense, "get_params"):
        raise ValueError(
            f"defense must be an estimator instance such as "
            f"GaussianGradientNoise(relative=True), got {defense!r}.")
    if parameter not in defense.get_params():
        raise ValueError(
            f"{type(defense).__name__} has no parameter {parameter!r}; its "
            f"parameters are {sorted(defense.get_params())}."
        )
    # a strength the defence refuses is a mistake in the grid, not a result
    for s in strengths:
        trial = clone(defense).set_params(**{parameter: s})
        if hasattr(trial, "_validate_params"):
            trial._validate_params()
    return strengths


def leakage_grid(data, batch_sizes, defenses, *, reconstructor=None, seeds=(0, 1, 2),
                 query_params=None, data_range=None, n_jobs=None):
    """Reconstruction quality over a grid of defences, strengths, seeds and batch sizes.

    :func:`leakage_curve` for several defences and batch sizes at once, in
    one table of the same schema: for each defence ``(defense, parameter,
    strengths)`` in ``defenses``, each strength, each seed and each batch
    size ``B``, the batch is ``B`` rows of ``data`` drawn without
    replacement by ``numpy.random.default_rng(seed)`` (the same batch for
    every defence and strength), and the trial is that of
    :func:`leakage_curve`. Every trial depends on its seed alone, so the
    table is the same whatever joblib backend runs it: one process, a pool
    of processes (``n_jobs``), or a Dask cluster through joblib's ``"dask"``
    backend; ``fit_time`` differs, and the errors of exact reconstructions
    in their last bits (the backends run BLAS with different thread counts).

    Parameters
    ----------
    data : array-like of shape (n_samples, n_inputs)
        The pool of samples the client's batches are drawn from.
    batch_sizes : sequence of int
        Batch sizes ``B``, each at most ``n_samples``.
    defenses : sequence of (defense, parameter, strengths)
        Each a defence (a transformer of the gradient, cloned for every
        trial), the name of its strength parameter, and the strengths to
        try, as in :func:`leakage_curve`.
    reconstructor : GradientReconstructor or None, default=None
        The attack; see :func:`leakage_curve`.
    seeds : sequence of int, default=(0, 1, 2)
        One trial per seed, defence, strength and batch size: the seed draws
        the batch, the server's weights, the defence's randomness and the
        attack's random starts.
    query_params : dict or None, default=None
        Keyword arguments of :func:`~skrecon.clients.make_gradient_query`.
    data_range : float or None, default=None
        Range of the data for PSNR; ``None`` leaves ``psnr`` NaN.
    n_jobs : int or None, default=None
        joblib jobs for the trials (with the ``"dask"`` backend: ``-1``
        uses every worker thread of the cluster).

    Returns
    -------
    table : dict of str to ndarray of shape (n_rows,)
        The columns of :func:`leakage_curve`, one row per (defence,
        strength, seed, batch size, true sample) in that nesting order;
        ``batch_size`` is ``B`` and ``sample`` the row within the batch.

    Raises
    ------
    ValueError
        If ``data`` is not a 2-D array, a batch size is not an integer in
        ``[1, n_samples]``, ``defenses`` is empty or an entry is not a
        ``(defense, parameter, strengths)`` triple that
        :func:`leakage_curve` accepts, ``seeds`` is empty or holds a
        negative or non-integer value, or ``query_params`` sets ``batch``
        or ``random_state``.

    See Also
    --------
    leakage_curve : One defence, one batch.
    skrecon.plotting.plot_leakage_curve : Draws the table (one defence and
        batch size at a time).

    Examples
    --------
    >>> import joblib
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.defenses import GaussianGradientNoise, GlobalNormClipping
    >>> from skrecon.evaluation import leakage_grid
    >>> data, _ = load_digits_batch(20, random_state=0)
    >>> defenses = [(GaussianGradientNoise(relative=True), "scale", [1e-6]),
    ...             (GlobalNormClipping(), "max_norm", [1e-3])]
    >>> table = leakage_grid(data, [2, 3], defenses, seeds=[0],
    ...                      query_params={"n_neurons": 2000})
    >>> table["batch_size"].tolist()
    [2, 2, 3, 3, 3, 2, 2, 3, 3, 3]
    >>> with joblib.parallel_config(backend="threading", n_jobs=2):
    ...     threaded = leakage_grid(data, [2, 3], defenses, seeds=[0],
    ...                             query_params={"n_neurons": 2000})
    >>> bool(np.allclose(threaded["relative_error"], table["relative_error"],
    ...                  rtol=1e-6, atol=1e-12))
    True
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(
            f"data must be a 2-D array with one sample per row, got shape {data.shape}.")
    sizes = list(batch_sizes) if np.ndim(batch_sizes) == 1 else None
    if not sizes or not all(isinstance(B, Integral) and 1 <= B <= data.shape[0]
                            for B in sizes):
        raise ValueError(
            f"batch_sizes must be a non-empty sequence of integers in [1, "
            f"{data.shape[0]}] (the samples in data), got {batch_sizes!r}.")
    seeds = list(seeds) if np.ndim(seeds) == 1 else []
    if not seeds or not all(isinstance(s, Integral) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of non-negative "
                         f"integers, got {seeds!r}.")
    try:
        defenses = [tuple(d) for d in defenses]
    except TypeError:
        defenses = None
    if not defenses or any(len(d) != 3 for d in defenses):
        raise ValueError(
            "defenses must be a non-empty sequence of (defense, parameter, "
            "strengths) triples, e.g. [(GaussianGradientNoise(relative=True), "
            f"'scale', [1e-3, 1e-1])], got {defenses!r}.")
    checked = []
    for defense, parameter, strengths in defenses:
        strengths, _ = check_grid(strengths, seeds, "strengths")
        checked.append((defense, parameter, _check_defense(defense, parameter, strengths)))
    query_params = _check_query_params(query_params, "leakage_grid")
    reconstructor = _default_reconstructor(reconstructor, query_params)
    batches = {(int(seed), int(B)): data[np.random.default_rng(int(seed)).choice(
        data.shape[0], int(B), replace=False)] for seed in seeds for B in sizes}
    trials = [(defense, parameter, s, int(seed), batches[int(seed), int(B)])
              for defense, parameter, strengths in checked for s in strengths
              for seed in seeds for B in sizes]
    return run_trials(partial(_one_trial, reconstructor=reconstructor,
                              query_params=query_params, data_range=data_range),
                      trials, n_jobs)
