"""FedAvg: the batch behind several local SGD steps (issue 21, DESIGN F11).

A PyTorch MLP ``64 -> 1024 -> 10`` in float64 (tanh or ReLU), at a Gaussian
query (``skrecon.torch.gaussian_reinit_``) or at a trained model (Adam, 10
epochs on the digits, seed 0). A client holds ``N`` digits (seed 0) and runs
``E`` local epochs of ``torch.optim.SGD`` in mini-batches of ``b`` (reshuffled
each epoch by its own ``torch.Generator``), cross-entropy, and returns its
parameters. ``skrecon.fedavg.reconstruct_update`` gets the sent and returned
parameters and the hyperparameters. Each row: time, samples certified
(``found``), worst relative error (Hungarian-matched), labels right, the steps
recovered (each step's set of samples, in order; ``-`` for full batch), the
update residual and the status. Seed ``s`` draws the digits with ``s``, the
client's shuffle with ``s + 1`` and the search's starts with ``s``.

Run::

    python benchmarks/bench_fedavg.py                        # N = 16, the issue's table
    python benchmarks/bench_fedavg.py --activations tanh --models gaussian --lrs 0.05
    python benchmarks/bench_fedavg.py --frontier             # N = 32 and 48 rows
    python benchmarks/bench_fedavg.py --activations tanh --models gaussian --lrs 0.05 \
        --configs 4x1 4x3@8 --seeds 0 1 2          # 4x3@8: b = 4, E = 3 at N = 8
"""

import argparse
import copy
import itertools
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _print_footer, _print_header, _print_table  # noqa: E402

# b x E at N = 16, or b x E @ N: several epochs of mini-batches at N = 16
# (b = 4, E = 2 and b = 8, E = 3) and at N = 8 (b = 4, E = 3, the gallery's round)
CONFIGS = ["16x1", "16x3", "16x5", "4x1", "4x2", "8x3", "4x3@8"]


def parse_config(text):
    """``"bxE"`` (N = 16) or ``"bxE@N"`` -> (N, b, E)."""
    steps, _, n = text.partition("@")
    b, e = steps.split("x")
    return int(n or 16), int(b), int(e)


def make_model(activation, trained, width=1024):
    import torch
    from torch import nn

    from skrecon.torch import gaussian_reinit_

    torch.manual_seed(0)
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    model = nn.Sequential(nn.Linear(64, width), act(), nn.Linear(width, 10)).double()
    if not trained:
        gaussian_reinit_(model, random_state=0)
        return model
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = torch.as_tensor(digits.data / 16.0), torch.as_tensor(digits.target)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = perm[start:start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def client(model, batch, labels, lr, b, epochs, seed=0):
    import torch
    from torch import nn

    work = copy.deepcopy(model)
    sent = [v.detach().numpy().copy() for v in work.state_dict().values()]
    opt = torch.optim.SGD(work.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = torch.as_tensor(batch), torch.as_tensor(labels)
    orders = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        orders.append(perm.numpy())
        for start in range(0, len(x), b):
            idx = perm[start:start + b]
            opt.zero_grad()
            nn.functional.cross_entropy(work(x[idx]), y[idx]).backward()
            opt.step()
    returned = [v.detach().numpy().copy() for v in work.state_dict().values()]
    return sent, returned, orders


def steps_of(order, b, back=None):
    order = order if back is None else back[order]
    return [set(order[s:s + b].tolist()) for s in range(0, len(order), b)]


def run(model, n, lr, b, epochs, max_iter, seed=0):
    from skrecon.datasets import load_digits_batch
    from skrecon.fedavg import reconstruct_update
    from skrecon.metrics import relative_error

    batch, labels = load_digits_batch(n, random_state=seed)
    sent, returned, orders = client(model, batch, labels, lr, b, epochs, seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reconstruct_update(model, sent, returned, learning_rate=lr, n_samples=n,
                                 batch_size=b, epochs=epochs, max_iter=max_iter,
                                 random_state=seed)
    elapsed = time.perf_counter() - start
    errors, match = relative_error(batch, res.samples)
    worst = float(errors.max()) if np.all(match >= 0) else np.inf
    n_labels = int(np.sum(res.labels[match] == labels)) if np.all(match >= 0) else 0
    if b == n:
        order_ok = "-"
    else:
        back = np.empty(n, dtype=int)
        back[match] = np.arange(n)
        ok = all(steps_of(o, b) == steps_of(r, b, back) for o, r in zip(orders, res.order))
        order_ok = "yes" if ok else "no"
    return [f"{elapsed:.0f}", f"{int(res.found.sum())}/{n}", f"{worst:.1e}",
            f"{n_labels}/{n}", order_ok, f"{res.update_residual:.1e}", str(res.status)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", nargs="+", default=["tanh", "relu"])
    p.add_argument("--models", nargs="+", default=["gaussian", "trained"])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    p.add_argument("--configs", nargs="+", default=CONFIGS,
                   help="b x E at N = 16, or b x E @ N, e.g. 16x3 4x1 4x3@8")
    p.add_argument("--frontier", action="store_true",
                   help="instead: N = 32 and 48 (b = N, E = 3 and b = N/4, E = 1, lr 0.05)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seed s: digits drawn with s, the client's shuffle with s + 1, "
                        "the search's starts with s")
    p.add_argument("--max-iter", type=int, default=30)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    _print_header("bench_fedavg.py")
    rows = []
    header = ["act", "model", "N", "b", "E", "lr", "seed", "time (s)", "found", "worst err",
              "labels", "order", "residual", "status"]
    for activation in args.activations:
        for kind in args.models:
            model = make_model(activation, kind == "trained")
            if args.frontier:
                cases = [(n, 0.05, b, e) for n in (32, 48) for b, e in ((n, 3), (n // 4, 1))]
            else:
                cases = [(n, lr, b, e) for lr in args.lrs
                         for n, b, e in map(parse_config, args.configs)]
            for (n, lr, b, epochs), seed in itertools.product(cases, args.seeds):
                row = [activation, kind, str(n), str(b), str(epochs), f"{lr:g}",
                       str(seed)] + run(model, n, lr, b, epochs, args.max_iter, seed)
                rows.append(row)
                print("  ".join(row), flush=True)
    print()
    _print_table(header, rows, ["<", "<"] + [">"] * 12)
    _print_footer(start)


if __name__ == "__main__":
    main()
