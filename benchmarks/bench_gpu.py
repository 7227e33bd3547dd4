#!/usr/bin/env python
"""GPU benchmark: the same fit on NumPy (CPU) and CuPy (GPU).

A script, not a test. It builds one exact first-layer gradient of a 2-layer
network (tanh, Gaussian first-layer bias, scalar output, squared loss) on a
batch of colour image patches (``skrecon.datasets.load_sample_image_patches``,
32 x 32 x 3 = 3072 inputs, from scikit-learn's sample images), fits
:class:`skrecon.GradientReconstructor` with the same ``random_state`` on
NumPy arrays and on CuPy arrays, and prints one table: wall time of each
fit (CuPy after a small warm-up fit that compiles its kernels), the speed-up
NumPy / CuPy measured in this run, the batch size found, the gradient
residual, the worst relative error against the true batch (Hungarian
matching; the goal is <= 1e-6) and the largest difference between the
NumPy and the CuPy samples (the goal is <= 1e-8).

The first-layer weight std is the server's choice (``--weight-std``). The
default, 0.05, puts the pre-activations of these patches (norms 3 to 55)
at a std of about 0.15 to 2.8; with ``1 / sqrt(d) = 0.018`` (``--weight-std
auto``) the dimmer patches stay in tanh's nearly linear range, their weight
in the moment tensor is small, and B = 8 at m = 20 000 already fails
(worst relative error 3.6, measured), where 0.05 gives 6e-14.

Without CuPy or a CUDA device the CuPy row says why and only NumPy runs.

Examples
--------
    python benchmarks/bench_gpu.py                     # d = 3072, B = 32, m = 50000
    python benchmarks/bench_gpu.py --backends cupy     # the GPU only
    python benchmarks/bench_gpu.py --n-neurons 5000 --batch-size 4 --patch-size 8
"""

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from skrecon import GradientReconstructor
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_sample_image_patches
from skrecon.metrics import relative_error

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _print_footer, _print_header, _short  # noqa: E402


def _cupy():
    """The cupy module, or the reason it cannot run."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device"
        return cupy, None
    except Exception as exc:  # not installed, no driver
        return None, _short(exc)


def _fit(q, to_array, args, sync):
    params = {k: to_array(v) for k, v in q.fit_params.items()}
    grad = to_array(q.grad)
    sync()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(bias=True, random_state=args.seed,
                                    n_init=args.n_init).fit(grad, **params)
    sync()
    return rec, time.perf_counter() - start


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-neurons", type=int, default=50000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=32, help="patches are s x s x 3")
    p.add_argument("--weight-std", default="0.05",
                   help='first-layer weight std, or "auto" (1 / sqrt(d))')
    p.add_argument("--n-init", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", nargs="+", default=["numpy", "cupy"],
                   choices=["numpy", "cupy"])
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_gpu.py")
    cupy, why = _cupy()
    if cupy is not None:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        print(f"GPU: {props['name'].decode()}, cupy {cupy.__version__}")
    else:
        print(f"GPU: none ({why})")

    batch = load_sample_image_patches(args.batch_size, patch_size=args.patch_size,
                                      random_state=args.seed)
    t0 = time.perf_counter()
    weight_std = args.weight_std if args.weight_std == "auto" else float(args.weight_std)
    q = make_gradient_query(batch, n_neurons=args.n_neurons, activation="tanh",
                            bias="gaussian", weight_std=weight_std, random_state=args.seed)
    print(f"query: batch {batch.shape}, gradient {q.grad.shape}, tanh, Gaussian bias, "
          f"weight std {weight_std}, built in {time.perf_counter() - t0:.1f} s", flush=True)

    print(f"\n{'backend':8s} {'fit s':>9s} {'B found':>8s} {'grad. resid.':>13s} "
          f"{'worst rel. err':>15s} {'samples_ in':>12s}", flush=True)
    rows, samples = [], {}
    for backend in args.backends:
        if backend == "numpy":
            to_array, sync = np.asarray, (lambda: None)
        elif cupy is None:
            rows.append((backend, f"skipped: {why}"))
            print(f"{backend:8s} {rows[-1][1]}", flush=True)
            continue
        else:
            to_array = cupy.asarray
            sync = cupy.cuda.Device().synchronize
            warm = load_sample_image_patches(2, patch_size=8, random_state=1)
            _fit(make_gradient_query(warm, n_neurons=2000, random_state=1), to_array,
                 args, sync)  # compiles the kernels, untimed
        try:
            rec, seconds = _fit(q, to_array, args, sync)
        except Exception as exc:
            traceback.print_exc()
            rows.append((backend, f"failed: {_short(exc)}"))
            print(f"{backend:8s} {rows[-1][1]}", flush=True)
            continue
        found = _host(rec.samples_)
        samples[backend] = found
        err = (np.max(relative_error(batch, found)[0]) if found.shape == batch.shape
               else np.nan)
        rows.append((backend, seconds, rec.batch_size_, rec.gradient_residual_, err,
                     type(rec.samples_).__module__.split(".")[0]))
        # one row as soon as it is measured: a run cut short keeps it
        print(f"{backend:8s} {seconds:9.2f} {rec.batch_size_:8d} "
              f"{rec.gradient_residual_:13.3e} {err:15.3e} {rows[-1][5]:>12s}", flush=True)
    timed = {r[0]: r[1] for r in rows if len(r) > 2}
    if len(timed) == 2:
        print(f"\nspeed-up NumPy / CuPy (this run): {timed['numpy'] / timed['cupy']:.1f}x")
    if len(samples) == 2:
        diff = np.max(np.abs(samples["numpy"] - samples["cupy"])) if (
            samples["numpy"].shape == samples["cupy"].shape) else np.inf
        print(f"max |samples NumPy - samples CuPy|: {diff:.3e} "
              f"({'PASS' if diff <= 1e-8 else 'FAIL'} at 1e-8)")
    _print_footer(start)


if __name__ == "__main__":
    main()
