#!/usr/bin/env python
"""Large-input benchmark: 64 x 64 x 3 images, time, memory and error.

A script, not a test. Every row is one first-layer gradient (float32, or
float64 where asked) of a
2-layer tanh network (Gaussian first-layer bias, one output, squared loss,
mean reduction) at a batch of 64 x 64 x 3 patches of scikit-learn's sample
images (d = 12 288, 12 289 columns with the bias), reconstructed by
:class:`skrecon.GradientReconstructor` with its defaults. Each fit runs in
a fresh process, so that its memory is its own:

* ``fit`` rows (m = 8 192 neurons): the parent builds the query with
  ``skrecon.clients.make_gradient_query(..., dtype=numpy.float32)`` and
  saves ``X``, ``weights`` and ``output_weights`` (float32, 0.8 GB at
  m = 8 192) to a temporary folder; the child loads them and fits.
* ``partial_fit`` rows (m = 100 000 by default): the child computes the
  gradient chunk by chunk (a forward pass over the chunks for the outputs,
  then each chunk's rows; the whole gradient would be 4.9 GB in float32)
  and passes each chunk to ``partial_fit``, reconstructing at the last one.

The weights' std is 0.025, which gives the pre-activations the spread that
0.05 gives the 32 x 32 x 3 patches of ``bench_reach.py`` (the pre-activation
std scales with sqrt(d)); at 0.05 tanh saturates and the search found 35 of
128 samples in 117 starts (float64 gradient). Columns: the wall time of
``fit`` (or of all ``partial_fit`` calls, the chunks' computation excluded),
the batch size read off the spectrum, the rows flagged found (float32: the
relative error of a found row is at most 1e-4), the worst and the median
relative error over the batch after Hungarian matching, the gradient
residual, the peak of the memory allocated during the fit above its inputs
(``tracemalloc``: NumPy's allocations), the process's peak resident memory
(Linux's ``VmHWM``, else ``ru_maxrss``: inputs, interpreter and libraries
included) and whether it stays within 4 GiB.

Examples
--------
    python benchmarks/bench_large.py                       # B = 64, 128; stream B = 64
    python benchmarks/bench_large.py --batch-sizes 64 128 --float64-batch-sizes 256
    python benchmarks/bench_large.py --batch-sizes --stream-batch-sizes 64 --stream-neurons 20000
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _fmt, _print_footer, _print_header, _print_table  # noqa: E402

PATCH = 64
WEIGHT_STD = 0.025
BIAS_STD = 0.5
GIB = 2.0 ** 30
LIMIT_GIB = 4.0


def _batch(B):
    from skrecon.datasets import load_sample_image_patches
    return load_sample_image_patches(B, patch_size=PATCH, random_state=0)


def _score(batch, rec, elapsed, peak):
    from skrecon.metrics import relative_error
    err, perm = relative_error(batch, rec.samples_)
    matched = perm >= 0
    return dict(time=elapsed, read=int(rec.batch_size_), found=int(rec.n_found_),
                worst=float(np.max(err)) if np.all(matched) else float("inf"),
                median=float(np.median(err[matched])) if np.any(matched) else float("nan"),
                resid=float(rec.gradient_residual_), peak=peak / GIB,
                maxrss=_peak_rss())


def _peak_rss():
    """The process's peak resident memory in GiB: ``VmHWM`` of Linux's
    ``/proc/self/status`` (the peak of this program's own memory map), else
    ``ru_maxrss``. On Linux ``ru_maxrss`` carries over the parent's resident
    memory at the fork that started the child (the parent holds the query it
    built): a float64 fit at B = 32 read 3.91 GiB there, 1.88 GiB in a process
    of its own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def _child_fit(folder, B, n_jobs):
    """Load a saved query and fit it: the child process of a fit row."""
    from skrecon import GradientReconstructor
    X, W, A = (np.load(os.path.join(folder, f"{name}.npy")) for name in "XWA")
    batch = _batch(B)
    rec = GradientReconstructor(bias=True, random_state=0, n_jobs=n_jobs)
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec.fit(X, weights=W, output_weights=A)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return _score(batch, rec, elapsed, peak)


def _chunk_layer(k, rows, d, seed, dtype):
    """Chunk ``k`` of the first layer (``rows`` neurons): weights with the
    bias last, and output weights, drawn in float64 from its own seed and
    rounded to ``dtype`` (every chunk is drawn again identically)."""
    rng = np.random.default_rng([seed, k])
    W = np.empty((rows, d + 1))
    W[:, :d] = rng.standard_normal((rows, d)) * WEIGHT_STD
    W[:, d] = rng.standard_normal(rows) * BIAS_STD
    a = rng.standard_normal(rows)
    return W.astype(dtype), a.astype(dtype)


def _streamed_chunks(batch, m, chunk, seed, dtype):
    """The gradient of a 2-layer tanh network of ``m`` neurons (output
    weights of std 1 / sqrt(m), squared loss against standard normal
    targets, mean reduction), chunk by chunk: ``(X, W, A)`` in ``dtype``,
    computed in float64 from the rounded parameters."""
    B, d = batch.shape
    x_aug = np.hstack([batch, np.ones((B, 1))])
    sizes = [min(chunk, m - start) for start in range(0, m, chunk)]
    output = np.zeros(B)
    for k, rows in enumerate(sizes):  # forward pass, chunk by chunk
        W, a = _chunk_layer(k, rows, d, seed, dtype)
        output += np.tanh(x_aug @ W.astype(np.float64).T) @ (a.astype(np.float64)
                                                              / np.sqrt(m))
    targets = np.random.default_rng([seed, 2**32 - 1]).standard_normal(B)
    u = (output - targets) / B
    for k, rows in enumerate(sizes):
        W, a = _chunk_layer(k, rows, d, seed, dtype)
        a64 = a.astype(np.float64) / np.sqrt(m)
        slopes = 1.0 - np.tanh(x_aug @ W.astype(np.float64).T) ** 2  # (B, rows)
        X = (a64[:, None] * (slopes * u[:, None]).T) @ x_aug
        yield X.astype(dtype), W, (a64[:, None]).astype(dtype)


def _child_stream(B, m, chunk, n_jobs):
    """partial_fit over chunks of neurons: the child process of a stream row."""
    from skrecon import GradientReconstructor
    batch = _batch(B)
    rec = GradientReconstructor(bias=True, random_state=0, n_jobs=n_jobs)
    tracemalloc.start()
    elapsed, n_chunks = 0.0, -(-m // chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, (X, W, A) in enumerate(_streamed_chunks(batch, m, chunk, 0, np.float32)):
            start = time.perf_counter()
            rec.partial_fit(X, weights=W, output_weights=A, reconstruct=k == n_chunks - 1)
            elapsed += time.perf_counter() - start
            del X, W, A
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = _score(batch, rec, elapsed, peak)
    out["seen"] = int(rec.n_neurons_seen_)
    return out


def _run_child(argv, timeout):
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"note": f"FAILED: over {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"FAILED (exit {done.returncode}): {tail[:150]}"}
    return json.loads(lines[-1])


def _row(case, dtype, B, m, res):
    ok = res.get("maxrss", np.inf) <= LIMIT_GIB
    return [case, dtype, str(B), str(m), _fmt(res.get("time"), ".1f"), str(res.get("read", "")),
            str(res.get("found", "")), _fmt(res.get("worst"), ".1e"),
            _fmt(res.get("median"), ".1e"), _fmt(res.get("resid"), ".1e"),
            _fmt(res.get("peak"), ".2f"), _fmt(res.get("maxrss"), ".2f"),
            "yes" if ok else "no", res.get("note", "")]


def fit_rows(args):
    from skrecon.clients import make_gradient_query
    rows = []
    cases = [(B, "float32") for B in args.batch_sizes]
    cases += [(B, "float64") for B in args.float64_batch_sizes]
    for B, dtype in cases:
        with tempfile.TemporaryDirectory() as folder:
            q = make_gradient_query(_batch(B), n_neurons=args.neurons,
                                    weight_std=WEIGHT_STD, bias="gaussian",
                                    bias_std=BIAS_STD, random_state=0, dtype=dtype)
            for name, value in zip("XWA", (q.grad, q.weights, q.output_weights)):
                np.save(os.path.join(folder, f"{name}.npy"), value)
            del q
            res = _run_child(["--child-fit", folder, str(B), str(args.n_jobs)],
                             args.timeout)
        rows.append(_row("fit", dtype, B, args.neurons, res))
        print("  ".join(rows[-1]), flush=True)
    return rows


def stream_rows(args):
    rows = []
    for B in args.stream_batch_sizes:
        res = _run_child(["--child-stream", str(B), str(args.stream_neurons),
                          str(args.chunk), str(args.n_jobs)], args.timeout)
        if "seen" in res:
            res["note"] = f"{res['seen']} neurons in chunks of {args.chunk}"
        rows.append(_row("partial_fit", "float32", B, args.stream_neurons, res))
        print("  ".join(rows[-1]), flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-fit":
        n_jobs = None if argv[3] == "None" else int(argv[3])
        print(json.dumps(_child_fit(argv[1], int(argv[2]), n_jobs)))
        return
    if argv and argv[0] == "--child-stream":
        n_jobs = None if argv[4] == "None" else int(argv[4])
        print(json.dumps(_child_stream(int(argv[1]), int(argv[2]), int(argv[3]), n_jobs)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 128])
    p.add_argument("--float64-batch-sizes", type=int, nargs="*", default=[],
                   help="fit rows of a float64 gradient (the method's own precision)")
    p.add_argument("--neurons", type=int, default=8192)
    p.add_argument("--stream-batch-sizes", type=int, nargs="*", default=[64])
    p.add_argument("--stream-neurons", type=int, default=100_000)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds per row (a slower one is reported as FAILED)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_large.py")
    print(f"64 x 64 x 3 patches (d = {3 * PATCH * PATCH}), tanh, "
          f"weight std {WEIGHT_STD}, Gaussian bias std {BIAS_STD}, one process per row\n")
    rows = fit_rows(args) + stream_rows(args)
    print()
    _print_table(["case", "gradient", "B", "m", "time s", "B read", "found", "worst err",
                  "median err", "grad resid", "fit peak GiB", "maxrss GiB",
                  f"<= {LIMIT_GIB:g} GiB", "notes"], rows,
                 ["<", "<", ">", ">", ">", ">", ">", ">", ">", ">", ">", ">", "<", "<"])
    _print_footer(start)


if __name__ == "__main__":
    main()
