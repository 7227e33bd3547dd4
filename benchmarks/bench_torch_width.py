"""Smallest first-layer width at which a PyTorch client's batch is exact.

The two-layer classifier of issue 5, ``nn.Sequential(nn.Linear(64, m),
nn.Tanh(), nn.Linear(m, 10))`` in float64, Gaussian re-initialisation
(``skrecon.torch.gaussian_reinit_``), softmax cross-entropy with mean
reduction on 8 digits with labels [1, 1, 5, 7, 0, 3, 3, 9]. For each width
and re-initialisation seed, ``GradientReconstructor(loss="cross_entropy")``
attacks the first layer; a run is exact when every sample is within
``--exact-tol`` relative error and every label is right.

Run::

    python benchmarks/bench_torch_width.py                 # widths 1000 .. 16384
    python benchmarks/bench_torch_width.py --widths 2000 --seeds 5
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _print_footer, _print_header, _print_table  # noqa: E402

LABELS = [1, 1, 5, 7, 0, 3, 3, 9]


def run(width, seed, exact_tol):
    import torch
    from torch import nn

    from skrecon import GradientReconstructor
    from skrecon.datasets import load_digits_batch
    from skrecon.metrics import relative_error
    from skrecon.torch import first_layer_query, gaussian_reinit_

    batch, labels = load_digits_batch(labels=LABELS, random_state=0)
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10)).double()
    gaussian_reinit_(model, random_state=seed)
    loss = nn.CrossEntropyLoss()(model(torch.as_tensor(batch)), torch.as_tensor(labels))
    loss.backward()
    q = first_layer_query(model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(bias=True, loss="cross_entropy", random_state=0).fit(
            q["grad"], weights=q["weights"], output_weights=q["output_weights"])
    elapsed = time.perf_counter() - start
    errors, perm = relative_error(batch, rec.samples_)
    worst = float(np.max(errors)) if np.all(perm >= 0) else np.inf
    labels_ok = bool(np.all(perm >= 0) and np.array_equal(rec.labels_[perm], labels))
    return worst, labels_ok, elapsed, rec.n_starts_, worst <= exact_tol and labels_ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[1000, 2000, 4096, 16384])
    p.add_argument("--seeds", type=int, default=3, help="re-initialisation seeds 0..seeds-1")
    p.add_argument("--exact-tol", type=float, default=1e-6)
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_torch_width.py")
    rows, smallest = [], None
    for width in args.widths:
        results = [run(width, seed, args.exact_tol) for seed in range(args.seeds)]
        n_exact = sum(r[4] for r in results)
        rows.append([str(width), f"{n_exact}/{args.seeds}",
                     " ".join(f"{r[0]:.1e}" for r in results),
                     " ".join("ok" if r[1] else "WRONG" for r in results),
                     " ".join(f"{r[2]:.1f}" for r in results),
                     " ".join(str(r[3]) for r in results)])
        if n_exact == args.seeds and smallest is None:
            smallest = width
    _print_table(["width", "exact", "worst rel. err per seed", "labels",
                  "fit time (s)", "re-seeds"], rows, [">", ">", "<", "<", "<", "<"])
    print(f"\nsmallest width exact for every seed: {smallest} (goal: <= 2000)")
    _print_footer(start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
