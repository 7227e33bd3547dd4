"""Exact reconstruction at trained weights: any FedSGD round leaks.

A PyTorch MLP ``64 -> H -> 10`` is trained with Adam (learning rate 1e-3,
mini-batches of 64) for ``--epochs`` epochs on 1 297 of scikit-learn's
digits; a held-out batch of the other 500 then sends its cross-entropy
gradient (mean reduction), in float64 or in float32 (PyTorch's default
dtype), and :class:`skrecon.GradientReconstructor` with its defaults
(``loss="auto"``, ``bias=True``, the activation the query names) attacks
the first layer. Each cell reports the fit's time, the rows flagged found,
the worst relative error over all rows (Hungarian-matched), the worst error
of the rows flagged found (matched among themselves: a guess row beside a
found one must not take its sample), and the labels read (right / B; ``-`` when
``labels_`` is None). A cell is exact when every row is found, the worst
error is within the dtype's tolerance (1e-6 float64, 1e-4 float32) and
every label is right.

Trained models are cached in memory within one run (one per activation,
width and dtype).

Run::

    python benchmarks/bench_trained.py                               # the whole table
    python benchmarks/bench_trained.py --activations tanh --widths 1024 --batch-sizes 32
    python benchmarks/bench_trained.py --patches --batch-sizes 16 32  # 32x32x3 patches
    python benchmarks/bench_trained.py --aggregate    # 16 clients x 8 patches, B = 128
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _print_footer, _print_header, _print_table  # noqa: E402

ACTIVATIONS = ["tanh", "sigmoid", "gelu", "silu", "softplus", "elu", "relu",
               "leaky_relu"]
TOLERANCE = {"float64": 1e-6, "float32": 1e-4}
_MODELS = {}


def _module(name):
    from torch import nn
    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU,
            "softplus": nn.Softplus, "elu": nn.ELU, "relu": nn.ReLU,
            "leaky_relu": nn.LeakyReLU}[name]()


def digits_split():
    """``(train_x, train_y, test_x, test_y)``: 500 held-out digits."""
    from sklearn.datasets import load_digits
    data = load_digits()
    x, y = data.data / 16.0, data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:500], order[500:]
    return x[train], y[train], x[test], y[test]


def train(x, y, activation, width, dtype, *, epochs=50, n_classes=10, seed=0):
    """An MLP ``d -> width -> n_classes`` trained with Adam; cached."""
    import torch
    from torch import nn
    key = (x.shape, float(x.sum()), activation, width, dtype, epochs, seed)
    if key in _MODELS:
        return _MODELS[key]
    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    model = nn.Sequential(nn.Linear(x.shape[1], width), _module(activation),
                          nn.Linear(width, n_classes)).to(tdtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    X, Y = torch.as_tensor(x, dtype=tdtype), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # mini-batches of 64: threads only contend
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(X), generator=gen)
            for start in range(0, len(X), 64):
                idx = perm[start:start + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    _MODELS[key] = model
    return model


def query(model, batch, labels):
    """The first-layer query of one held-out batch's gradient."""
    import torch
    from torch import nn
    from skrecon.torch import first_layer_query
    model.zero_grad()
    dtype = next(model.parameters()).dtype
    loss = nn.functional.cross_entropy(model(torch.as_tensor(batch, dtype=dtype)),
                                       torch.as_tensor(labels))
    loss.backward()
    return first_layer_query(model)


def attack(q, batch, labels, tol, *, random_state=0):
    """Fit with defaults; ``(time, n_found, worst, worst_found, labels_ok, n_warned)``."""
    from skrecon import GradientReconstructor
    from skrecon.metrics import relative_error
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(activation=q.activation, bias=q.has_bias,
                                    random_state=random_state).fit(q.grad, **q.fit_params)
    elapsed = time.perf_counter() - start
    samples = np.asarray(rec.samples_, dtype=np.float64)
    errors, perm = relative_error(batch, samples)
    found = np.asarray(rec.found_)
    matched = perm >= 0
    worst = float(np.max(errors)) if np.all(matched) else np.inf
    # the rows flagged found, matched among themselves to the true samples
    # (a guess row near a found one's sample must not take its match)
    if found.any():
        F = samples[found]
        D = (np.linalg.norm(batch[:, None, :] - F[None, :, :], axis=2)
             / np.linalg.norm(batch, axis=1)[:, None])
        r, c = linear_sum_assignment(D)
        found_err = D[r, c]
        worst_found = float(np.max(found_err))
    else:
        found_err, worst_found = np.zeros(0), 0.0
    if rec.labels_ is None:
        labels_read = "-"
    else:
        ok = np.zeros(len(batch), dtype=bool)
        ok[matched] = np.asarray(rec.labels_)[perm[matched]] == labels[matched]
        labels_read = f"{int(ok.sum())}/{len(batch)}"
    exact = (int(found.sum()) == len(batch) and worst <= tol
             and labels_read == f"{len(batch)}/{len(batch)}")
    return dict(time=elapsed, found=int(found.sum()), worst=worst,
                worst_found=worst_found, labels=labels_read, exact=exact,
                bad_found=int(np.sum(found_err > tol)),
                warnings=sorted({type(w.message).__name__ for w in caught
                                 if not issubclass(w.category, DeprecationWarning)}))


def digits_cell(activation, width, batch_size, dtype, *, epochs=50, seed=0):
    xtr, ytr, xte, yte = digits_split()
    model = train(xtr, ytr, activation, width, dtype, epochs=epochs, seed=seed)
    pick = np.random.default_rng(seed).choice(len(xte), batch_size, replace=False)
    batch, labels = xte[pick], yte[pick]
    q = query(model, batch, labels)
    return attack(q, batch, labels, TOLERANCE[dtype])


def patches_cell(width, batch_size, dtype, *, epochs=20, n_train=2000, seed=0):
    """32x32x3 patches of scikit-learn's sample images, labelled by the
    octant of their mean colour (8 classes), a ``3072 -> width -> 8`` tanh
    net trained ``epochs`` epochs on 2 000 of them; a held-out batch. The
    row's last column is :func:`saturation`."""
    from skrecon.datasets import load_sample_image_patches
    x = load_sample_image_patches(n_train + 500, random_state=seed)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x / max(1.0, float(x.max()))
    # classes: the mean colour's octant (a learnable 8-class task)
    mean = x.reshape(len(x), -1, 3).mean(axis=1)
    y = ((mean > np.median(mean, axis=0)) * np.array([1, 2, 4])).sum(axis=1)
    model = train(x[:n_train], y[:n_train], "tanh", width, dtype, epochs=epochs,
                  n_classes=8, seed=seed)
    pick = n_train + np.random.default_rng(seed).choice(500, batch_size, replace=False)
    q = query(model, x[pick], y[pick])
    r = attack(q, x[pick], y[pick], TOLERANCE[dtype])
    r["saturated"] = saturation(model, x[pick])
    return r


def saturation(model, batch, level=0.01):
    """Share of the batch's samples with most of their neurons saturated
    (``tanh' < level`` on more than half of the first layer), and of all
    neuron-sample pairs so saturated: ``"samples / pairs"`` in per cent."""
    import torch
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        z = model[0](torch.as_tensor(batch, dtype=dtype)).double().numpy()
    flat = 1 - np.tanh(z) ** 2 < level
    return f"{100 * np.mean(flat.mean(axis=1) > 0.5):.0f} / {100 * flat.mean():.0f}"


def aggregate_cell(n_clients=16, per_client=8, width=2048, dtype="float64", seed=0):
    """FedSGD with secure aggregation: ``n_clients`` clients take one SGD
    step each on ``per_client`` patches from the same default-initialised
    ``3072 -> width -> 10`` tanh net; the server sees the mean of their
    returned parameters (:func:`skrecon.flower.update_query`)."""
    import torch
    from torch import nn
    from skrecon.datasets import load_sample_image_patches
    from skrecon.flower import update_query
    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)

    def make():
        return nn.Sequential(nn.Linear(3072, width), nn.Tanh(),
                             nn.Linear(width, 10)).to(tdtype)

    model = make()
    sent = [v.detach().numpy().copy() for v in model.state_dict().values()]
    n = n_clients * per_client
    patches = load_sample_image_patches(n, random_state=seed)
    labels = np.random.default_rng(seed).integers(0, 10, n)
    returned = []
    for c in range(n_clients):
        rows = slice(c * per_client, (c + 1) * per_client)
        client = make()
        client.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(client.parameters(), lr=0.1)
        nn.functional.cross_entropy(client(torch.as_tensor(patches[rows], dtype=tdtype)),
                                    torch.as_tensor(labels[rows])).backward()
        opt.step()
        returned.append([v.detach().numpy().copy() for v in client.state_dict().values()])
    aggregate = [np.mean([r[k] for r in returned], axis=0) for k in range(len(sent))]
    q = update_query(model, sent, aggregate, learning_rate=0.1, batch_size=n)
    return attack(q, patches, labels, TOLERANCE[dtype])


def _row(label, r):
    return label + [f"{r['time']:.2f}", f"{r['found']}", f"{r['worst']:.1e}",
                    f"{r['worst_found']:.1e}", r["labels"],
                    "yes" if r["exact"] else "NO",
                    ",".join(w.replace("Warning", "") for w in r["warnings"]) or "-"]


HEADER = ["time (s)", "found", "worst err", "worst found", "labels", "exact", "warnings"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--activations", nargs="+", default=ACTIVATIONS)
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="default 16 32 48 (digits), 32 (--patches)")
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs: default 50 (digits), 20 (--patches)")
    p.add_argument("--patches", action="store_true",
                   help="the 32x32x3 patch net (H = 1024, B = 32) instead of digits")
    p.add_argument("--aggregate", action="store_true",
                   help="16 clients x 8 patches, secure aggregate (B = 128) instead")
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_trained.py")
    rows = []
    if args.aggregate:
        r = aggregate_cell()
        rows.append(_row(["aggregate 16x8", "float64", "2048", "128"], r))
        print(" | ".join(rows[-1]), flush=True)
    elif args.patches:
        for dtype in args.dtypes:
            for batch_size in args.batch_sizes or [32]:
                r = patches_cell(1024, batch_size, dtype, epochs=args.epochs or 20)
                rows.append(_row(["patches", dtype, "1024", str(batch_size)], r)
                            + [r["saturated"]])
                print(" | ".join(rows[-1]), flush=True)
        _print_table(["data", "dtype", "H", "B"] + HEADER + ["saturated % (samples / pairs)"],
                     rows, ["<", "<", ">", ">"] + [">"] * 6 + ["<", ">"])
        _print_footer(start)
        return
    else:
        for dtype in args.dtypes:
            for activation in args.activations:
                for width in args.widths:
                    for batch_size in args.batch_sizes or [16, 32, 48]:
                        r = digits_cell(activation, width, batch_size, dtype,
                                        epochs=args.epochs or 50)
                        rows.append(_row([activation, dtype, str(width), str(batch_size)],
                                         r))
                        print(" | ".join(rows[-1]), flush=True)
    _print_table(["activation", "dtype", "H", "B"] + HEADER, rows,
                 ["<", "<", ">", ">"] + [">"] * 6 + ["<"])
    _print_footer(start)


if __name__ == "__main__":
    main()
