#!/usr/bin/env python
"""Rate of the pure moment estimate: angular error against the width m.

A script, not a test. It measures the tensor (moment) estimate alone - no
Levenberg-Marquardt refinement, no restarts, no re-seeding - on a fixed
digits batch (``load_digits_batch(B, random_state=0)``, default B = 4; with
``--vary-batch`` the batch seed follows the query seed), tanh with Gaussian
bias (std 0.5), at several widths m and query seeds (the network draw,
``make_gradient_query(..., random_state=seed)``).

The estimate, for one query: ``MomentTensorTransformer(activation, bias=True,
n_components=B)._fit`` (span, order-3 Hermite moment tensor), then as in one
decomposition of ``skrecon.decomposition.tensor_starts``: extra modes contracted, one
Jennrich decomposition (``rng = default_rng(seed)``), CP-ALS (300 sweeps),
``start_from_factors`` (first-mode vectors scaled so that the bias
coordinate is exactly 1), mapped back to input coordinates:
``x_aug = (V @ scaled_basis.T) / column_scale``, ``xhat = x_aug[:, :-1] /
x_aug[:, -1:]``. ``--cp-starts N`` keeps the lowest-CP-error of N
Jennrich + CP-ALS runs instead of one.

Error: the angle (radians) between each true sample ``x_i`` and the
estimated sample ``xhat`` matched to it (Hungarian matching on the absolute
cosine, ``matched_cosine(..., sign_invariant=True)``), i.e. the error of the
*sample itself* in input space (64 pixels). The column "aug median" gives
the same for the bias-augmented direction ``[x_i, 1]`` vs ``x_aug`` (the
quantity the tensor decomposition estimates directly); the two differ little
because the bias coordinate is a small part of ``[x, 1]``.

For each m: the median over all samples and seeds (B x n_seeds angles), the
quartiles and the worst, and the mean wall time of one estimate (the moment
step plus the decomposition; building the query is not timed). The slope of
log(median angle) against log(m) is fitted by least squares; the paper's
1/sqrt(m) rate (Wang, Lee & Lei, AISTATS 2023) predicts -0.5, and the
script reports whether the slope lies in -0.5 +- 0.2. A log-log plot is
saved to ``--plot`` (matplotlib, Agg).

Memory: at m = 512 000 each (m, 65) float64 array is 266 MB; the query and
the moment step hold a few of them (~2-3 GB peak). Queries are deleted
between runs.

Examples
--------
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_moment_rate.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_moment_rate.py --quick
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_moment_rate.py \
        --widths 16000 64000 256000 --seeds 10 --plot /tmp/rate.png
"""

import argparse
import gc
import os
import sys
import time
from datetime import datetime

import numpy as np

from skrecon import MomentTensorTransformer, decomposition
from skrecon.activations import get_activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import matched_cosine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _print_footer, _print_header, _print_table  # noqa: E402

EXPECTED_SLOPE, SLOPE_TOL = -0.5, 0.2


def moment_estimate(q, B, activation, seed, n_starts=1):
    """(samples, augmented directions, cp_error) of the pure tensor estimate.

    ``n_starts`` > 1 keeps, of that many Jennrich + CP-ALS runs, the one
    with the lowest CP error (the refinement is never used to choose).
    """
    act = get_activation(activation)
    mt = MomentTensorTransformer(activation=activation, bias=True, n_components=B)
    proj = mt._fit(q.grad, q.weights, q.output_weights)
    rng = np.random.default_rng(seed)
    folded, etas = decomposition._contract_extra_modes(
        mt._moment_tensor_host.reshape((-1,) + mt._moment_tensor_host.shape[3:]), rng)
    factors, cp_err = None, np.inf
    for _ in range(n_starts):
        start = decomposition.jennrich(folded, B, rng)
        f, err = decomposition.cp_als(folded, start, max_iter=300)
        if err < cp_err:
            factors, cp_err = f, err
    v = decomposition._first_mode_vectors(factors[0], B)
    V = v * (proj.column_scale[-1] / (v @ proj.bias_row))[:, None]  # bias input 1
    x_aug = (V @ proj.scaled_basis.T) / proj.column_scale
    return x_aug[:, :-1] / x_aug[:, -1:], x_aug, float(cp_err)


def angles(true, est):
    """Angle (rad) of each true row to its matched estimate (sign-invariant)."""
    if not np.all(np.isfinite(est)):
        return np.full(len(true), np.nan)
    cos, _ = matched_cosine(true, est, sign_invariant=True)
    return np.arccos(np.clip(cos, 0.0, 1.0))


def run(args):
    rows, med, med_aug, per_m = [], [], [], {}
    for m in args.widths:
        ang, ang_aug, times, cp_errs = [], [], [], []
        for seed in range(args.seeds):
            batch, _ = load_digits_batch(
                args.batch_size, random_state=seed if args.vary_batch else 0)
            q = make_gradient_query(batch, n_neurons=m, activation=args.activation,
                                    bias="gaussian", random_state=seed)
            t0 = time.perf_counter()
            xhat, x_aug, cp_err = moment_estimate(q, args.batch_size,
                                                  args.activation, seed,
                                                  args.cp_starts)
            times.append(time.perf_counter() - t0)
            del q
            gc.collect()
            a = angles(batch, xhat)
            a_aug = angles(np.hstack([batch, np.ones((len(batch), 1))]), x_aug)
            ang.append(a)
            ang_aug.append(a_aug)
            cp_errs.append(cp_err)
            print(f"[{datetime.now():%H:%M:%S}] m={m} seed={seed}: "
                  f"{times[-1]:.1f} s  angles {np.array2string(a, precision=4)}  "
                  f"CP rel. error {cp_err:.2e}", flush=True)
        ang, ang_aug = np.concatenate(ang), np.concatenate(ang_aug)
        per_m[m] = ang
        med.append(np.nanmedian(ang))
        med_aug.append(np.nanmedian(ang_aug))
        q25, q75 = np.nanpercentile(ang, [25, 75])
        rows.append([str(m), str(args.seeds), str(int(np.sum(np.isfinite(ang)))),
                     f"{med[-1]:.4e}", f"{q25:.3e}", f"{q75:.3e}",
                     f"{np.nanmax(ang):.3e}", f"{med_aug[-1]:.4e}",
                     f"{np.median(cp_errs):.2e}", f"{np.mean(times):.1f}"])
    logm = np.log(np.asarray(args.widths, dtype=float))
    slope, icpt = np.polyfit(logm, np.log(med), 1)
    slope_aug = np.polyfit(logm, np.log(med_aug), 1)[0]

    print()
    print(f"Table: pure moment estimate (no refinement), digits B={args.batch_size} "
          f"({'batch seed = query seed' if args.vary_batch else 'fixed batch, seed 0'}"
          f"), {args.activation}, Gaussian bias std 0.5,")
    print(f"       query seeds 0..{args.seeds - 1}; angle (rad) between each sample "
          "and its matched estimate (Hungarian, |cos|), sample in input space;")
    print("       'aug median': same for the bias-augmented direction [x, 1]; "
          f"time: mean s per estimate (moment step + {args.cp_starts} x "
          "(Jennrich + CP-ALS))")
    header = ["m", "seeds", "angles", "median angle", "q25", "q75", "worst",
              "aug median", "CP err (med)", "time(s)"]
    _print_table(header, rows, [">"] * len(header))
    ok = abs(slope - EXPECTED_SLOPE) <= SLOPE_TOL
    print(f"\nleast-squares slope of log(median angle) vs log(m): {slope:+.3f}  "
          f"(augmented direction: {slope_aug:+.3f})")
    print(f"expected (the paper's 1/sqrt(m) rate): {EXPECTED_SLOPE:+.1f} +- "
          f"{SLOPE_TOL:.1f}  ->  {'within' if ok else 'OUTSIDE'} the expected range")
    if args.plot:
        plot(args, per_m, med, slope, icpt)
        print(f"plot saved to {os.path.abspath(args.plot)}")
    return ok


def plot(args, per_m, med, slope, icpt):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    ms = np.asarray(args.widths, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rng = np.random.default_rng(0)
    for m, a in per_m.items():
        jitter = np.exp(rng.uniform(-0.04, 0.04, len(a)))
        ax.scatter(m * jitter, a, s=10, alpha=0.4, color="tab:blue")
    ax.plot(ms, med, "o", color="tab:red", label="median angle")
    grid = np.geomspace(ms.min() / 1.3, ms.max() * 1.3, 50)
    ax.plot(grid, np.exp(icpt) * grid**slope, "-", color="tab:red",
            label=f"least squares: slope {slope:+.2f}")
    ax.plot(grid, med[0] * (grid / ms[0]) ** EXPECTED_SLOPE, "--", color="gray",
            label="slope -0.5 (1/sqrt(m))")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ms, [f"{int(m):,}" for m in ms])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("width m (neurons)")
    ax.set_ylabel("angle to true sample (rad)")
    ax.set_title(f"Pure moment estimate, digits B={args.batch_size}, "
                 f"{args.activation} + Gaussian bias")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+",
                   default=[32000, 128000, 512000])
    p.add_argument("--seeds", type=int, default=10,
                   help="query seeds 0..seeds-1 per width")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--activation", default="tanh")
    p.add_argument("--vary-batch", action="store_true",
                   help="draw the digits batch with the query seed (default: "
                        "one fixed batch, seed 0)")
    p.add_argument("--cp-starts", type=int, default=1,
                   help="Jennrich + CP-ALS runs per query, the lowest CP error "
                        "kept (default 1: one restart's decomposition)")
    p.add_argument("--plot", default="moment_rate.png",
                   help="path of the log-log plot ('' for none)")
    p.add_argument("--quick", action="store_true",
                   help="widths 8000 32000 128000, 3 seeds: a smoke run (too few "
                        "seeds for a meaningful slope)")
    args = p.parse_args(argv)
    if args.quick:
        args.widths, args.seeds = [8000, 32000, 128000], 3
    if len(args.widths) < 2:
        p.error("need at least two widths to fit a slope")

    start = time.perf_counter()
    _print_header("bench_moment_rate.py")
    run(args)
    _print_footer(start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
