"""The one leakage harness: trials in parallel, scored into one table schema.

A leakage experiment is a list of trials, each a defence at one strength, one
seed and one private batch. A trial function (the gradient defences' in
:mod:`skrecon.evaluation`, the DP-SGD client's in :mod:`skrecon.opacus`)
draws the query, applies the defence, attacks and fills a row with
:func:`empty_row` and :func:`score`; :func:`run_trials` runs the trials on
any joblib backend and stacks the rows into a table of :data:`COLUMNS`, one
row per (trial, true sample), that :func:`skrecon.plotting.plot_leakage_curve`
draws whichever module made it.
"""

import time
import warnings

from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils.parallel import Parallel, delayed

from .metrics import reconstruction_report

__all__ = ["COLUMNS", "check_grid", "seeded_attack", "empty_row", "fit_quietly",
           "score", "run_trials"]

COLUMNS = ("defense", "parameter", "strength", "epsilon", "delta", "seed", "batch_size",
           "sample", "cosine", "relative_error", "psnr", "label_correct", "found",
           "gradient_residual", "batch_size_found", "converged", "fit_time", "status")
"""The table's columns, in order (see :func:`skrecon.evaluation.leakage_curve`)."""

# one value per true sample, and one per trial (repeated over its samples)
_SAMPLE_COLUMNS = ("cosine", "relative_error", "psnr", "label_correct", "found")
_TRIAL_COLUMNS = ("epsilon", "delta", "gradient_residual", "batch_size_found",
                  "converged", "fit_time", "status")


def check_grid(values, seeds, name):
    """``(values, seeds)`` of a leakage grid as lists (integers stay
    integers, so that ``UniformQuantization(n_bits)`` can be swept; other
    numbers become floats); a clear error when either is not a non-empty
    sequence of numbers."""
    try:
        values = [int(s) if isinstance(s, Integral) and not isinstance(s, bool)
                  else float(s) for s in values]
        seeds = list(seeds)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} and seeds must be sequences of numbers ({exc}).") from exc
    if not values or not seeds:
        raise ValueError(f"{name} and seeds must each hold at least one value.")
    return values, seeds


def seeded_attack(reconstructor, seed):
    """A clone of the attack, with ``random_state=seed`` unless it has its own."""
    attack = clone(reconstructor)
    if attack.random_state is None:
        attack.set_params(random_state=seed)
    return attack


def empty_row(batch_size):
    """A trial's row before the attack: NaN metrics, ``batch_size_found``
    -1, not converged, no privacy accounting (NaN ``epsilon`` and
    ``delta``), status ``"ok"``."""
    nan = np.full(batch_size, np.nan)
    return {"cosine": nan.copy(), "relative_error": nan.copy(), "psnr": nan.copy(),
            "label_correct": nan.copy(), "found": np.zeros(batch_size, bool),
            "epsilon": np.nan, "delta": np.nan,
            "gradient_residual": np.nan, "batch_size_found": -1, "converged": False,
            "fit_time": np.nan, "status": "ok"}


def fit_quietly(row, reconstructor, grad, fit_params):
    """Fit the attack, silently (the table records the outcome; the
    warnings of deliberately broken gradients would only be noise here).
    A ``ValueError`` becomes the row's status; returns whether it fitted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reconstructor.fit(grad, **fit_params)
    except ValueError as exc:
        row["status"] = f"{type(exc).__name__}: {exc}"
        return False
    return True


def score(row, batch, reconstructor, *, labels=None, data_range=None):
    """Match every true sample to a recovered one (Hungarian, by the absolute
    cosine when the attack cannot identify signs) and fill the row's
    metrics; ``found`` is the attack's ``found_`` flag of the matched
    reconstruction (False when unmatched); ``label_correct`` only when
    ``labels`` and the attack's ``labels_`` are both known."""
    signs_known = bool(np.all(reconstructor.sign_identified_))
    report = reconstruction_report(batch, reconstructor.samples_, data_range=data_range,
                                   sign_invariant=not signs_known)
    row.update(cosine=report.cosine, relative_error=report.relative_error,
               psnr=report.get("psnr", row["psnr"]),
               gradient_residual=float(reconstructor.gradient_residual_),
               batch_size_found=int(reconstructor.batch_size_),
               converged=bool(reconstructor.converged_))
    perm = report.permutation
    matched = perm >= 0
    found = np.zeros(len(batch), bool)
    found[matched] = np.asarray(reconstructor.found_, dtype=bool)[perm[matched]]
    row["found"] = found
    if labels is not None and reconstructor.labels_ is not None:
        correct = np.full(len(batch), np.nan)
        correct[matched] = (np.asarray(reconstructor.labels_)[perm[matched]]
                            == np.asarray(labels)[matched]).astype(float)
        row["label_correct"] = correct
    return row


def _timed(trial_function, trial):
    start = time.perf_counter()
    row = trial_function(*trial)
    row["fit_time"] = time.perf_counter() - start
    return row


def run_trials(trial_function, trials, n_jobs):
    """Run ``trial_function(defense, parameter, strength, seed, batch)`` on
    every trial through joblib (any backend: each trial depends on its
    seed alone) and stack the rows it returns into the table, one row per
    (trial, true sample) in the order of ``trials``. ``defense`` is the
    defence (its class name goes into the table) or its name (a str)."""
    rows = Parallel(n_jobs=n_jobs)(delayed(_timed)(trial_function, t) for t in trials)
    sizes = [len(t[4]) for t in trials]

    def per_trial(values):
        return np.repeat(values, sizes)

    names = [d if isinstance(d, str) else type(d).__name__ for d, *_ in trials]
    table = {
        "defense": per_trial(names),
        "parameter": per_trial([t[1] for t in trials]),
        "strength": per_trial([t[2] for t in trials]).astype(float),
        "seed": per_trial([t[3] for t in trials]).astype(int),
        "batch_size": per_trial(sizes).astype(int),
        "sample": np.concatenate([np.arange(n) for n in sizes]).astype(int),
    }
    for key in _SAMPLE_COLUMNS:
        table[key] = np.concatenate([r[key] for r in rows])
    for key in _TRIAL_COLUMNS:
        table[key] = per_trial([r[key] for r in rows])
    table["epsilon"] = table["epsilon"].astype(float)
    table["delta"] = table["delta"].astype(float)
    table["converged"] = table["converged"].astype(bool)
    return {key: table[key] for key in COLUMNS}
