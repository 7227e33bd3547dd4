#!/usr/bin/env python
"""The overcomplete frontier: batches with more samples than their rank.

A script, not a test. A random batch of 64 digits has rank 54 (border
pixels are zero in every digit): its samples are linearly dependent, the
gradient's rank is the batch's rank ``r < B``, and the column-space
condition of the search (theory page, F8) no longer holds. The gradient
still holds ``m (r + 1)`` equations for ``B (r + 1)`` unknowns in the span,
so a joint fit of all ``B`` samples can in principle recover them. This
script measures, per row:

* ``auto``: :class:`skrecon.GradientReconstructor` with its defaults
  (``batch_size="auto"``): the batch size it reads (the rank), the rows it
  flags found, and how many true samples it recovers to 1e-6;
* ``joint``: a joint Levenberg-Marquardt polish of all ``B`` samples in the
  span (``skrecon.refine.levenberg_marquardt``), started from the search's
  rows completed with random directions (the true ``B`` given), on a row
  subset of the neurons; how many true samples it recovers to 1e-6 and
  1e-2 (relative error after Hungarian matching), and its relative
  residual.

Rows: digits (d = 64) B = 56, 64, 96; scikit-learn's breast-cancer data
(d = 30, min-max scaled to [0, 1]) B = 32, 48, 64; tanh, Gaussian bias,
m = 20 000 unless said. It claims nothing: it prints what it measured.

Examples
--------
    python benchmarks/bench_overcomplete.py
    python benchmarks/bench_overcomplete.py --cases cancer --max-iter 100
    python benchmarks/bench_overcomplete.py --cases digits --batch-sizes 96
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import minmax_scale

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _fmt, _print_footer, _print_header, _print_table  # noqa: E402

from skrecon import GradientReconstructor, MomentTensorTransformer  # noqa: E402
from skrecon.activations import get_activation  # noqa: E402
from skrecon.clients import make_gradient_query  # noqa: E402
from skrecon.datasets import load_digits_batch  # noqa: E402
from skrecon.metrics import relative_error  # noqa: E402
from skrecon.refine import fit_signals, levenberg_marquardt  # noqa: E402


def _batch(name, B):
    if name == "digits":
        return load_digits_batch(B, random_state=0)[0]
    data = minmax_scale(load_breast_cancer().data)
    return data[np.random.default_rng(0).choice(len(data), B, replace=False)]


def _recovered(batch, samples, tol):
    """True samples matched to a recovered one within relative error ``tol``."""
    err, perm = relative_error(batch, samples)
    return int(np.sum((perm >= 0) & (err <= tol)))


def _joint(batch, q, rec, args):
    """Joint LM of all B samples in the span, from the search's rows."""
    B = len(batch)
    r = rec.batch_size_
    # the span and the projected query at the batch size the spectrum shows
    # (the estimator's own projection: a private helper, for the benchmark)
    mt = MomentTensorTransformer(bias=True, n_components=r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proj = mt._fit(q.grad, q.weights, q.output_weights, tensor=False)
    basis = np.asarray(proj.scaled_basis)  # (d + 1, r)
    scale = proj.column_scale
    x_aug = np.hstack([np.asarray(rec.samples_), np.ones((r, 1))])
    V0 = (x_aug * scale) @ basis  # the search's rows in span coordinates
    e, c = basis[-1], scale[-1]  # the bias input is 1: e . v = c
    rng = np.random.default_rng(0)
    typical = np.median(np.linalg.norm(V0, axis=1))
    extra = rng.standard_normal((B - r, r)) * typical / np.sqrt(r)
    extra += ((c - extra @ e) / (e @ e))[:, None] * e
    V = np.vstack([V0, extra])
    rows = np.sort(rng.choice(q.grad.shape[0], min(args.rows, q.grad.shape[0]),
                              replace=False))
    P, Omega, A = (np.asarray(a)[rows] for a in (proj.P, proj.Omega, proj.A))
    tanh = get_activation("tanh")
    U = fit_signals(V, P, Omega, A, tanh, proj.bias_mean)
    start = time.perf_counter()
    fit = levenberg_marquardt(V, U, P, Omega, A, tanh, proj.bias_mean, fixed=(e, c),
                              max_iter=args.max_iter)
    seconds = time.perf_counter() - start
    x_fit = (fit.V @ basis.T) / scale
    samples = x_fit[:, :-1] / x_fit[:, -1:]
    return dict(exact=_recovered(batch, samples, 1e-6),
                close=_recovered(batch, samples, 1e-2),
                resid=fit.relative_residual, iters=fit.n_iter, time=seconds)


def run_case(name, B, args):
    batch = _batch(name, B)
    rank = int(np.linalg.matrix_rank(np.hstack([batch, np.ones((B, 1))])))
    q = make_gradient_query(batch, n_neurons=args.width, bias="gaussian", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
        auto_time = time.perf_counter() - start
    kinds = sorted({w.category.__name__ for w in caught})
    full_rank = any("full column rank" in str(w.message) for w in caught)
    joint = _joint(batch, q, rec, args) if rec.batch_size_ < B else None
    row = [name, str(batch.shape[1]), str(B), str(rank), str(rec.batch_size_),
           f"{rec.n_found_}", str(_recovered(batch, np.asarray(rec.samples_), 1e-6)),
           _fmt(auto_time, ".1f"), ",".join(kinds) + (" (full column rank)"
                                                      if full_rank else "")]
    if joint is None:
        row += ["", "", "", "", ""]
    else:
        row += [str(joint["exact"]), str(joint["close"]), _fmt(joint["resid"], ".1e"),
                str(joint["iters"]), _fmt(joint["time"], ".1f")]
    print("  ".join(row), flush=True)
    return row


CASES = {"digits": [56, 64, 96], "cancer": [32, 48, 64]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    p.add_argument("--width", type=int, default=20000)
    p.add_argument("--rows", type=int, default=4000,
                   help="neurons of the joint polish (a random subset)")
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="only the rows of these batch sizes (default: every row)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_overcomplete.py")
    print(f"width {args.width}, joint polish on {args.rows} neurons, at most "
          f"{args.max_iter} steps; recovered = true samples matched within the "
          "relative error given\n")
    rows = [run_case(name, B, args) for name in args.cases for B in CASES[name]
            if args.batch_sizes is None or B in args.batch_sizes]
    print()
    _print_table(["data", "d", "B", "rank", "auto B", "auto found", "auto <=1e-6",
                  "auto s", "auto warnings", "joint <=1e-6", "joint <=1e-2",
                  "joint resid", "joint steps", "joint s"], rows,
                 ["<", ">", ">", ">", ">", ">", ">", ">", "<", ">", ">", ">", ">", ">"])
    _print_footer(start)


if __name__ == "__main__":
    main()
