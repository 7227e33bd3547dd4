#!/usr/bin/env python
"""Activation sweep: exact recovery for every built-in activation.

A script, not a test. For each activation of ``skrecon.activations.ACTIVATIONS``
except ``"identity"`` it builds one exact first-layer gradient of a 2-layer
net (digits batch of ``--batch-size`` samples, ``load_digits_batch(B,
random_state=0)``; ``make_gradient_query(..., activation=a, bias="gaussian",
random_state=--seed)``, width ``--width``) and fits
``GradientReconstructor(activation=a, bias=True, batch_size=B,
random_state=0)``.

Table 1 (Gaussian bias), one row per activation: the tensor order used
(``order_``), the wall time of ``fit`` (s; building the query is not timed),
the worst relative error ``||x_i - xhat_i|| / ||x_i||`` and the worst matched
cosine over the batch (Hungarian matching on the cosine, *not*
sign-invariant: with a bias the sign is identified, so a flipped sample
counts as wrong), the searches started (``n_starts_``), the relative gradient residual and PASS
when the worst relative error is <= ``--exact-tol`` (1e-6).

Table 2 (identifiability limits): the identity activation (with a bias),
which must raise the "reveals only the span" ValueError; tanh without a bias
(even derivative: ``sign_identified_`` False; cosine and relative error are
sign-invariant there); relu without a bias (scale-free derivative:
``scale_identified_`` False, samples come back with unit norm, so only the
cosine is meaningful and the relative error column is left empty).

Examples
--------
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_activations.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_activations.py --quick
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_activations.py \
        --activations tanh relu --width 50000 --batch-size 4

Timings depend on the load of the machine; the header prints the load
average. Each fit has a best-effort wall-clock limit (``--fit-timeout``).
"""

import argparse
import os
import sys
import time
import warnings
from datetime import datetime

import numpy as np

from skrecon.activations import ACTIVATIONS
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import matched_cosine, relative_error
from skrecon.reconstructor import GradientReconstructor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import (FitTimeout, _fmt, _print_table,  # noqa: E402
                        _print_footer, _print_header, _short, time_limit)

DEFAULT_ACTIVATIONS = [a for a in ACTIVATIONS if a != "identity"]


def _log(msg):
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def fit_one(activation, *, bias, B, m, seed, n_jobs, timeout):
    """Build one query, fit it; return a dict of measurements (never raises)."""
    batch, _ = load_digits_batch(B, random_state=0)
    q = make_gradient_query(batch, n_neurons=m, activation=activation,
                            bias="gaussian" if bias else "none", random_state=seed)
    out = {"time": float("nan"), "order": "", "err": float("nan"),
           "cos": float("nan"), "starts": "", "resid": float("nan"),
           "sign": "", "scale": "", "error": None, "warned": ""}
    rec = GradientReconstructor(activation=activation, bias=bias, batch_size=B,
                                random_state=0, n_jobs=n_jobs)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, time_limit(timeout):
            warnings.simplefilter("always")
            rec.fit(q.grad, **q.fit_params)
    except (Exception, FitTimeout) as exc:  # reported in the table
        out["time"] = time.perf_counter() - t0
        out["error"] = exc
        out["order"] = str(getattr(rec, "order_", ""))
        return out
    out["time"] = time.perf_counter() - t0
    sign_inv = not bias  # without a bias an even sigma' loses the sign
    cos, _ = matched_cosine(batch, rec.samples_, sign_invariant=sign_inv)
    err, _ = relative_error(batch, rec.samples_, sign_invariant=sign_inv)
    out.update(order=str(rec.order_), cos=float(np.min(cos)),
               err=float(np.max(err)), starts=str(rec.n_starts_),
               resid=rec.gradient_residual_,
               sign=str(bool(np.all(rec.sign_identified_))),
               scale=str(bool(np.all(rec.scale_identified_))),
               warned=",".join(sorted({w.category.__name__ for w in caught})))
    if not np.all(rec.scale_identified_):
        out["err"] = float("nan")  # unit-norm samples: the error is meaningless
    return out


def activation_table(args):
    header = ["activation", "order", "fit time(s)", "worst relerr", "worst cos",
              "n_starts", "grad resid", "result", "warnings / error"]
    rows = []
    for a in args.activations:
        _log(f"{a}, Gaussian bias, B={args.batch_size}, m={args.width} ...")
        r = fit_one(a, bias=True, B=args.batch_size, m=args.width, seed=args.seed,
                    n_jobs=args.n_jobs, timeout=args.fit_timeout)
        if r["error"] is not None:
            result, note = "FAIL", _short(r["error"])
        else:
            ok = np.isfinite(r["err"]) and r["err"] <= args.exact_tol
            result, note = ("PASS" if ok else "FAIL"), r["warned"]
        _log(f"  {r['time']:.1f} s  worst relerr {_fmt(r['err'], '.2e')}  {result}"
             f"  {note}")
        rows.append([a, r["order"], _fmt(r["time"], ".1f"), _fmt(r["err"], ".2e"),
                     _fmt(r["cos"], ".8f"), r["starts"], _fmt(r["resid"], ".1e"),
                     result, note])
    print()
    print(f"Table 1: digits B={args.batch_size} (load_digits_batch seed 0), "
          f"m={args.width}, Gaussian bias (std 0.5), query seed {args.seed}, "
          f"GradientReconstructor(bias=True, batch_size={args.batch_size}, "
          f"random_state=0, n_jobs={args.n_jobs});")
    print(f"         PASS: worst relative error <= {args.exact_tol:g}; cosine "
          "matched by Hungarian, not sign-invariant")
    _print_table(header, rows, ["<"] + [">"] * 7 + ["<"])
    n_pass = sum(r[7] == "PASS" for r in rows)
    print(f"{n_pass} of {len(rows)} activations PASS")


def limits_table(args):
    header = ["case", "expected", "fit time(s)", "sign_identified_",
              "scale_identified_", "worst |cos|", "worst relerr", "as expected",
              "note"]
    rows = []
    B, m = args.batch_size, args.width
    # identity: must raise the "reveals only the span" ValueError
    _log("identity, Gaussian bias ...")
    r = fit_one("identity", bias=True, B=B, m=m, seed=args.seed,
                n_jobs=args.n_jobs, timeout=args.fit_timeout)
    exc = r["error"]
    ok = isinstance(exc, ValueError) and "reveals only the span" in str(exc)
    rows.append(["identity, bias", "ValueError (span only)", _fmt(r["time"], ".2f"),
                 "", "", "", "", "yes" if ok else "NO",
                 (_short(exc)[:100] + "...") if exc is not None else "no error raised"])
    # tanh without bias: sign not identified; relu without bias: scale not
    for a, expected, sign_inv in [("tanh", "sign_identified_ False", True),
                                  ("relu", "scale_identified_ False", False)]:
        if a not in ACTIVATIONS:
            continue
        _log(f"{a}, no bias ...")
        r = fit_one(a, bias=False, B=B, m=m, seed=args.seed, n_jobs=args.n_jobs,
                    timeout=args.fit_timeout)
        if r["error"] is not None:
            rows.append([f"{a}, no bias", expected, _fmt(r["time"], ".1f"), "", "",
                         "", "", "NO", "FAILED " + _short(r["error"])])
            continue
        flag = r["sign"] if a == "tanh" else r["scale"]
        ok = flag == "False"
        cos_note = "|cos| sign-invariant" if sign_inv else "cos (sign identified)"
        rows.append([f"{a}, no bias", expected, _fmt(r["time"], ".1f"), r["sign"],
                     r["scale"], _fmt(r["cos"], ".8f"),
                     _fmt(r["err"], ".2e") if r["scale"] == "True" else "n/a",
                     "yes" if ok else "NO",
                     f"{cos_note}; starts={r['starts']}; warned: {r['warned']}"])
    print()
    print(f"Table 2: identifiability limits (digits B={B}, m={m}, query seed "
          f"{args.seed}); flags are all() over the batch; relu without bias "
          "returns unit-norm samples (no relative error)")
    _print_table(header, rows, ["<", "<"] + [">"] * 6 + ["<"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", nargs="+", default=DEFAULT_ACTIVATIONS,
                   choices=DEFAULT_ACTIVATIONS, help="rows of table 1")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=20000, help="m, first-layer width")
    p.add_argument("--seed", type=int, default=0, help="query (network) seed")
    p.add_argument("--n-jobs", type=int, default=1, help="skrecon's n_jobs")
    p.add_argument("--exact-tol", type=float, default=1e-6)
    p.add_argument("--fit-timeout", type=float, default=300,
                   help="best-effort limit of each fit in seconds (0 = none)")
    p.add_argument("--no-limits", action="store_true", help="skip table 2")
    p.add_argument("--quick", action="store_true",
                   help="B=4, m=5000, tanh/relu/gelu only: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.width = 4, 5000
        args.activations = ["tanh", "relu", "gelu"]

    start = time.perf_counter()
    _print_header("bench_activations.py")
    activation_table(args)
    if not args.no_limits:
        limits_table(args)
    _print_footer(start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
