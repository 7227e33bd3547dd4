"""ReLU and leaky ReLU at any weights: trained, PyTorch default init, Gaussian.

A PyTorch MLP ``64 -> H -> 10`` (float64, a first-layer bias, ReLU or
leaky ReLU with slope 0.01) on scikit-learn's digits (pixels / 16). Weights:

- ``trained``: Adam (lr 1e-3, minibatches of 64) for ``--epochs`` epochs,
  softmax cross-entropy, on 1 497 digits;
- ``default``: PyTorch's default initialisation, untouched;
- ``gaussian``: :func:`skrecon.torch.gaussian_reinit_` (the server's query).

The batch is held out (300 digits never trained on, the first ``B``). One
client step (mean cross-entropy), :func:`skrecon.torch.first_layer_query`,
then ``GradientReconstructor(activation=..., loss="cross_entropy")``; the
table gives the fit's wall time, ``n_found_``, the worst Hungarian-matched
relative error against the true batch (:func:`skrecon.metrics.relative_error`),
the number of rows flagged found whose error is above 1e-6 (must be 0) and
whether every label is right.

Run::

    python benchmarks/bench_relu.py                      # the full table
    python benchmarks/bench_relu.py --acts relu --weights trained --widths 1024 --batch-sizes 32
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _print_footer, _print_header, _print_table  # noqa: E402

_MODELS = {}


def model_and_data(act, weights, width, epochs, seed=0):
    """The model (cached per cell key) and the held-out digits."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    from skrecon.torch import gaussian_reinit_

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(seed).permutation(len(X))
    test, train = perm[:300], perm[300:]
    key = (act, weights, width, epochs, seed)
    if key not in _MODELS:
        torch.manual_seed(seed)
        act_module = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.01)
        model = nn.Sequential(nn.Linear(64, width), act_module, nn.Linear(width, 10)).double()
        if weights == "trained":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            Xt, yt = torch.as_tensor(X[train]), torch.as_tensor(y[train])
            gen = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                order = torch.randperm(len(train), generator=gen)
                for s in range(0, len(train), 64):
                    idx = order[s:s + 64]
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
                    opt.step()
        elif weights == "gaussian":
            gaussian_reinit_(model, random_state=seed)
        _MODELS[key] = model
    return _MODELS[key], X[test], y[test]


def run(act, weights, width, batch_size, epochs):
    import torch
    from torch import nn

    from skrecon import GradientReconstructor
    from skrecon.metrics import relative_error
    from skrecon.torch import first_layer_query

    model, X, y = model_and_data(act, weights, width, epochs)
    batch, labels = X[:batch_size], y[:batch_size]
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.as_tensor(batch)),
                                torch.as_tensor(labels)).backward()
    q = first_layer_query(model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(activation=act, bias=True, loss="cross_entropy",
                                    random_state=0)
        rec.fit(q.grad, weights=q.weights, output_weights=q.output_weights)
    elapsed = time.perf_counter() - start
    errors, perm = relative_error(batch, rec.samples_)
    found = np.asarray(rec.found_)
    # the found flag of the row matched to each true sample
    wrong_found = int(np.sum(found[perm[perm >= 0]] & (errors[perm >= 0] > 1e-6)))
    labels_ok = (rec.labels_ is not None and bool(np.all(perm >= 0))
                 and np.array_equal(np.asarray(rec.labels_)[perm], labels))
    return elapsed, rec.n_found_, float(np.max(errors)), wrong_found, labels_ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--acts", nargs="+", default=["relu", "leaky_relu"])
    p.add_argument("--weights", nargs="+", default=["trained", "default", "gaussian"])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 48])
    p.add_argument("--epochs", type=int, default=50)
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_relu.py")
    rows = []
    for act in args.acts:
        for weights in args.weights:
            for width in args.widths:
                for B in args.batch_sizes:
                    t, n_found, worst, wrong, labels_ok = run(act, weights, width, B,
                                                              args.epochs)
                    rows.append([act, weights, str(width), str(B), f"{t:.1f}",
                                 f"{n_found}/{B}", f"{worst:.1e}", str(wrong),
                                 "ok" if labels_ok else "WRONG"])
                    print("  ".join(rows[-1]), flush=True)
    print()
    _print_table(["activation", "weights", "H", "B", "time (s)", "found", "worst rel. err",
                  "found but wrong", "labels"], rows,
                 ["<", "<", ">", ">", ">", ">", ">", ">", "<"])
    _print_footer(start)


if __name__ == "__main__":
    main()
