#!/usr/bin/env python
"""Core benchmark: skrecon against a DLG-style gradient-matching baseline.

A script, not a test. It times :class:`skrecon.GradientReconstructor` on one
exact first-layer gradient of a 2-layer network (digits batch, tanh, Gaussian
first-layer bias, scalar output, squared loss, mean reduction), as built by
``skrecon.clients.make_gradient_query``, and compares it with a baseline in
the style of Zhu, Liu & Han, "Deep Leakage from Gradients" (NeurIPS 2019):
gradient matching from a random start.

The baseline (implemented here, in NumPy, not part of the package) is given
everything about the network - first-layer weights and bias, output weights,
and the targets of the batch - and minimises

    L(x_hat) = ||G(x_hat) - G_obs||_F^2 / ||G_obs||_F^2

over the batch ``x_hat`` (B x d), where ``G`` is the first-layer gradient
(weights and bias columns) of the same network, with scipy's L-BFGS-B from a
seeded uniform [0, 1] start. The normalisation by ``||G_obs||_F^2`` only
rescales the loss (the gradient entries are O(1e-3)) so that scipy's
absolute tolerances are meaningful; it does not change the minimiser. The
gradient of ``L`` is analytic (derivation in ``dlg_loss_and_grad``); run
``--check-grad`` to check it against central finite differences.

Tables
------
default : for each width m and batch size B: skrecon wall time, worst matched
    cosine and worst relative error over the batch, skrecon's gradient
    residual; DLG wall time, worst cosine / relative error, DLG's final
    relative gradient residual; the ratio DLG time / skrecon time, all
    measured in the same run.
--reach : for each width m, every batch size B of a list: skrecon's time and
    errors, whether the recovery is exact (worst relative error <=
    ``--exact-tol``), and the largest exact B. skrecon only (no DLG).

Examples
--------
    python benchmarks/bench_core.py --batch-sizes 1 8 32 --widths 20000 \
        --dlg-iters 500 --n-jobs 2
    python benchmarks/bench_core.py --reach --n-jobs 2
    python benchmarks/bench_core.py --check-grad

Timings are wall-clock seconds (``time.perf_counter``) of the ``fit`` call and
of the ``scipy.optimize.minimize`` call only (building the query is not
timed). They depend on the load of the machine: the header prints the time of
day and the load average.

Fairness notes
--------------
* The baseline runs with 1 BLAS thread by default (``--dlg-blas-threads``):
  its products are small (B x m by m x d) and on a loaded 2-core machine
  multi-threaded OpenBLAS made each loss evaluation ~20x slower (1.7 s vs
  0.08 s at B = 8). skrecon runs as a user would run it (library-default
  threads, ``n_jobs`` worker processes).
* The baseline's L-BFGS-B tolerances are 0 by default (``--dlg-tol tight``)
  so that it is never stopped early by a tolerance at a poor point; it stops
  at ``--dlg-iters`` or when its line search stalls (e.g. at machine
  precision).
* Each skrecon fit has a best-effort wall-clock limit (``--fit-timeout``,
  default 240 s) so that the default run stays near 10 minutes; a fit that
  hits it is reported as failed, with its time as a lower bound.
"""

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import scipy
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

import skrecon
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import matched_cosine, relative_error
from skrecon.reconstructor import GradientReconstructor


# --------------------------------------------------------------------------
# the DLG-style baseline
# --------------------------------------------------------------------------

def _network(q):
    """(W, b, a, y) of a 2-layer, scalar-output query with a first-layer bias."""
    if q.bias == "none":
        raise ValueError("the baseline expects a first-layer bias column")
    if len(q.layers) != 2 or q.output_weights.shape[1] != 1:
        raise ValueError("the baseline expects a 2-layer net with a scalar output")
    if q.loss != "squared" or q.reduction != "mean":
        raise ValueError("the baseline expects a squared loss with mean reduction")
    if q.activation != "tanh":
        raise ValueError("the baseline is written for tanh")
    if np.any(q.layers[1]["bias"] != 0):
        raise ValueError("the baseline expects a zero output bias")
    d = q.batch.shape[1]
    W = np.ascontiguousarray(q.weights[:, :d], dtype=np.float64)
    b = np.asarray(q.weights[:, d], dtype=np.float64)
    a = np.asarray(q.output_weights[:, 0], dtype=np.float64)
    y = np.asarray(q.targets, dtype=np.float64).reshape(-1)
    return W, b, a, y


def first_layer_gradient(X, W, b, a, y):
    """First-layer gradient ``[dL/dW, dL/db]`` (m, d + 1) of the 2-layer net.

    h = tanh(W x + b), f = a . h, L = (1/B) sum_i 0.5 (f_i - y_i)^2.
    """
    B = X.shape[0]
    Z = X @ W.T + b                     # (B, m)
    T = np.tanh(Z)
    S1 = 1.0 - T * T                    # tanh'
    r = (T @ a - y) / B                 # (B,)  dL/df_i
    D = r[:, None] * (S1 * a)           # (B, m)  dL/dz_ij
    Xt = np.hstack([X, np.ones((B, 1))])
    return D.T @ Xt


def dlg_loss_and_grad(x_flat, W, b, a, y, G_obs, norm2):
    """Matching loss ``||G(X) - G_obs||^2 / norm2`` and its gradient in X.

    Notation (i: sample, j: neuron), X~ = [X, 1]:
        z_ij = w_j . x_i + b_j,  s1 = tanh'(z),  s2 = tanh''(z) = -2 tanh(z) s1
        r_i = (f_i - y_i) / B,   f_i = sum_j a_j tanh(z_ij)
        D_ij = r_i a_j s1_ij,    G = D^T X~  (m, d+1),   R = G - G_obs
    dL * norm2 / 2 = <R, dG> = <R, D^T dX~> + <R, dD^T X~>
                   = <D R, dX~> + <E, dD>,     E = X~ R^T  (B, m)
    dD_ij = dr_i a_j s1_ij + r_i a_j s2_ij (w_j . dx_i),
    dr_i  = (1/B) sum_k a_k s1_ik (w_k . dx_i), so with c_i = sum_j E_ij a_j s1_ij:
    <E, dD> = sum_i [ (c_i / B) (a * s1_i) + r_i (E_i * a * s2_i) ] W . dx_i
    =>  dL/dX = (2 / norm2) [ (D R)[:, :d] + M W ],
        M = (c / B)[:, None] (a * S1) + r[:, None] (E * a * S2).
    """
    B = y.shape[0]
    d = W.shape[1]
    X = x_flat.reshape(B, d)
    Z = X @ W.T + b
    T = np.tanh(Z)
    S1 = 1.0 - T * T
    S2 = -2.0 * T * S1
    r = (T @ a - y) / B
    AS1 = S1 * a
    D = r[:, None] * AS1
    Xt = np.hstack([X, np.ones((B, 1))])
    R = D.T @ Xt - G_obs                # (m, d+1)
    loss = float(np.sum(R * R)) / norm2
    E = Xt @ R.T                        # (B, m)
    c = np.sum(E * AS1, axis=1)
    M = (c / B)[:, None] * AS1 + r[:, None] * (E * (a * S2))
    grad = (2.0 / norm2) * ((D @ R)[:, :d] + M @ W)
    return loss, grad.ravel()


def dlg_baseline(q, *, max_iter, random_state=0, tight=True):
    """Gradient matching from a uniform [0, 1] start with L-BFGS-B.

    With ``tight=True`` scipy's stopping tolerances are set to 0 (``ftol``,
    ``gtol``): the baseline then stops only at ``max_iter`` or when its line
    search can make no more progress, so it is never cut short by a
    tolerance. ``tight=False`` keeps scipy's defaults (``ftol=2.2e-9``,
    ``gtol=1e-5`` on the normalised loss).

    Returns (x_hat, info) where info has the final normalised loss, the
    relative gradient residual ||G(x_hat) - G_obs|| / ||G_obs||, the number of
    iterations and function evaluations, scipy's message and the wall time
    of the minimize call.
    """
    W, b, a, y = _network(q)
    G_obs = np.asarray(q.grad, dtype=np.float64)
    norm2 = float(np.sum(G_obs * G_obs))
    B, d = q.batch.shape
    rng = np.random.default_rng(random_state)
    x0 = rng.uniform(0.0, 1.0, size=B * d)
    t0 = time.perf_counter()
    options = {"maxiter": max_iter}
    if tight:
        options.update(ftol=0.0, gtol=0.0)
    res = minimize(dlg_loss_and_grad, x0, args=(W, b, a, y, G_obs, norm2),
                   jac=True, method="L-BFGS-B", options=options)
    elapsed = time.perf_counter() - t0
    x_hat = res.x.reshape(B, d)
    info = {
        "time": elapsed,
        "loss": float(res.fun),
        "residual": float(np.sqrt(max(res.fun, 0.0))),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "message": str(res.message),
    }
    return x_hat, info


def check_grad(random_state=0):
    """Check the baseline's gradient model and its analytic matching gradient."""
    ok = True
    print("check 1: first_layer_gradient(batch) against make_gradient_query's grad")
    for B, m in [(1, 50), (3, 200), (8, 1000)]:
        batch, _ = load_digits_batch(B, random_state=random_state)
        q = make_gradient_query(batch, n_neurons=m, bias="gaussian",
                                random_state=random_state)
        W, b, a, y = _network(q)
        G = first_layer_gradient(batch, W, b, a, y)
        err = np.linalg.norm(G - q.grad) / np.linalg.norm(q.grad)
        ok &= err < 1e-12
        print(f"  B={B:2d} m={m:5d}: relative difference {err:.2e}")
    print("check 2: analytic dL/dX against central finite differences")
    rng = np.random.default_rng(random_state)
    for B, m in [(1, 50), (3, 200), (8, 1000)]:
        batch, _ = load_digits_batch(B, random_state=random_state)
        q = make_gradient_query(batch, n_neurons=m, bias="gaussian",
                                random_state=random_state)
        W, b, a, y = _network(q)
        G_obs = q.grad
        norm2 = float(np.sum(G_obs ** 2))
        x = rng.uniform(0, 1, size=batch.size)
        _, g = dlg_loss_and_grad(x, W, b, a, y, G_obs, norm2)
        h = 1e-6
        # every coordinate for the small cases, 40 random ones for B = 8
        idx = (np.arange(x.size) if x.size <= 200
               else rng.choice(x.size, 40, replace=False))
        fd = np.empty(idx.size)
        for k, i in enumerate(idx):
            e = np.zeros_like(x)
            e[i] = h
            fp, _ = dlg_loss_and_grad(x + e, W, b, a, y, G_obs, norm2)
            fm, _ = dlg_loss_and_grad(x - e, W, b, a, y, G_obs, norm2)
            fd[k] = (fp - fm) / (2 * h)
        err_c = np.max(np.abs(fd - g[idx])) / np.max(np.abs(g[idx]))
        # a random direction
        v = rng.standard_normal(x.size)
        fp, _ = dlg_loss_and_grad(x + h * v, W, b, a, y, G_obs, norm2)
        fm, _ = dlg_loss_and_grad(x - h * v, W, b, a, y, G_obs, norm2)
        dd = (fp - fm) / (2 * h)
        err_v = abs(dd - g @ v) / abs(g @ v)
        ok &= err_c < 1e-6 and err_v < 1e-6
        print(f"  B={B:2d} m={m:5d}: {idx.size:3d} coordinates, max rel. error "
              f"{err_c:.2e}; random direction rel. error {err_v:.2e}")
    print("check 3: at the true batch the matching loss and its gradient vanish")
    batch, _ = load_digits_batch(4, random_state=random_state)
    q = make_gradient_query(batch, n_neurons=500, bias="gaussian",
                            random_state=random_state)
    W, b, a, y = _network(q)
    loss, g = dlg_loss_and_grad(batch.ravel(), W, b, a, y, q.grad,
                                float(np.sum(q.grad ** 2)))
    ok &= loss < 1e-25 and np.max(np.abs(g)) < 1e-10
    print(f"  loss {loss:.2e}, max |grad| {np.max(np.abs(g)):.2e}")
    print("gradient check:", "PASSED" if ok else "FAILED")
    return ok


# --------------------------------------------------------------------------
# running and measuring
# --------------------------------------------------------------------------

class FitTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception``
    inside a library swallows it."""


@contextmanager
def blas_threads(n):
    """Limit BLAS/OpenMP threads to ``n`` (``0``: leave the default)."""
    if not n:
        yield
        return
    with threadpool_limits(limits=n):
        yield


@contextmanager
def time_limit(seconds):
    """Best-effort wall-clock limit (SIGALRM; fires between Python bytecodes)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise FitTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def worst_metrics(batch, recon):
    """(worst matched cosine, worst relative error, number of unmatched rows)."""
    cos, _ = matched_cosine(batch, recon)
    err, _ = relative_error(batch, recon)
    n_unmatched = int(np.sum(np.isnan(err)))
    if n_unmatched:
        return float("nan"), float("nan"), n_unmatched
    return float(np.min(cos)), float(np.max(err)), 0


def _short(exc):
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return msg if len(msg) <= 160 else msg[:157] + "..."


def run_skrecon(q, *, n_jobs, timeout, threads=0):
    out = {"time": float("nan"), "cos": float("nan"), "err": float("nan"),
           "residual": float("nan"), "note": ""}
    notes = []
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, \
                blas_threads(threads), time_limit(timeout):
            warnings.simplefilter("always")
            rec = GradientReconstructor(activation="tanh", bias=True,
                                        random_state=0, n_jobs=n_jobs)
            rec.fit(q.grad, **q.fit_params)
        out["time"] = time.perf_counter() - t0
        cos, err, n_un = worst_metrics(q.batch, rec.samples_)
        out.update(cos=cos, err=err, residual=rec.gradient_residual_)
        if rec.batch_size_ != q.batch_size:
            notes.append(f"found B={rec.batch_size_}")
        if n_un:
            notes.append(f"{n_un} sample(s) unmatched")
        notes.append(f"LM it={rec.n_iter_}"
                     + ("" if rec.converged_ else " not converged"))
        notes.append(f"found {rec.n_found_}/{rec.batch_size_} in {rec.n_starts_} starts")
        kinds = sorted({w.category.__name__ for w in caught})
        if kinds:
            notes.append("warned: " + ",".join(kinds))
    except (Exception, FitTimeout) as exc:  # report in the table, do not crash
        out["time"] = time.perf_counter() - t0
        notes.append("FAILED " + _short(exc))
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
    out["note"] = "; ".join(notes)
    return out


def run_dlg(q, *, max_iter, timeout, threads=1, tight=True):
    out = {"time": float("nan"), "cos": float("nan"), "err": float("nan"),
           "residual": float("nan"), "note": ""}
    t0 = time.perf_counter()
    try:
        with blas_threads(threads), time_limit(timeout):
            x_hat, info = dlg_baseline(q, max_iter=max_iter, random_state=0,
                                       tight=tight)
        cos, err, _ = worst_metrics(q.batch, x_hat)
        out.update(time=info["time"], cos=cos, err=err, residual=info["residual"])
        out["note"] = f"it={info['nit']} fev={info['nfev']} ({info['message'][:40]})"
    except (Exception, FitTimeout) as exc:
        out["time"] = time.perf_counter() - t0
        out["note"] = "FAILED " + _short(exc)
    return out


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "nan"
    return format(v, spec)


def _print_table(header, rows, aligns):
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h)
              for k, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == ">" else c.ljust(w)
                         for c, w, a in zip(cells, widths, aligns))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    sys.stdout.flush()


def _query(B, m):
    batch, _ = load_digits_batch(B, random_state=0)
    return make_gradient_query(batch, n_neurons=m, bias="gaussian", random_state=0)


def core_table(args):
    header = ["B", "m", "skr time(s)", "skr worst cos", "skr worst relerr",
              "skr grad resid", "DLG time(s)", "DLG worst cos", "DLG worst relerr",
              "DLG grad resid", "DLG/skr time"]
    rows, notes = [], []
    for m in args.widths:
        for B in args.batch_sizes:
            print(f"[{datetime.now():%H:%M:%S}] B={B} m={m}: building query ...",
                  flush=True)
            q = _query(B, m)
            # sanity: the baseline's network model reproduces the observed gradient
            W, b, a, y = _network(q)
            model_err = (np.linalg.norm(first_layer_gradient(q.batch, W, b, a, y)
                                        - q.grad) / np.linalg.norm(q.grad))
            print(f"[{datetime.now():%H:%M:%S}]   skrecon fit ...", flush=True)
            s = run_skrecon(q, n_jobs=args.n_jobs, timeout=args.fit_timeout,
                            threads=args.skrecon_blas_threads)
            print(f"[{datetime.now():%H:%M:%S}]   skrecon {s['time']:.1f} s "
                  f"worst relerr {_fmt(s['err'], '.2e')}  {s['note']}", flush=True)
            if args.dlg_iters > 0:
                print(f"[{datetime.now():%H:%M:%S}]   DLG baseline ...", flush=True)
                g = run_dlg(q, max_iter=args.dlg_iters, timeout=0,
                            threads=args.dlg_blas_threads,
                            tight=args.dlg_tol == "tight")
                print(f"[{datetime.now():%H:%M:%S}]   DLG {g['time']:.1f} s worst "
                      f"relerr {_fmt(g['err'], '.2e')}  {g['note']}", flush=True)
            else:
                g = {"time": float("nan"), "cos": float("nan"), "err": float("nan"),
                     "residual": float("nan"), "note": "skipped (--dlg-iters 0)"}
            ratio = g["time"] / s["time"] if s["time"] > 0 else float("nan")
            # a timed-out fit took at least its time: the ratio is an upper bound
            timed_out = "FitTimeout" in s["note"]
            bound = "<=" if timed_out else ""
            rows.append([str(B), str(m),
                         (">=" if timed_out else "") + _fmt(s["time"], ".1f"),
                         _fmt(s["cos"], ".6f"),
                         _fmt(s["err"], ".2e"), _fmt(s["residual"], ".2e"),
                         _fmt(g["time"], ".1f"), _fmt(g["cos"], ".4f"),
                         _fmt(g["err"], ".2e"), _fmt(g["residual"], ".2e"),
                         bound + _fmt(ratio, ".2f")])
            notes.append(f"B={B} m={m}: skrecon: {s['note']} | DLG: {g['note']}"
                         f" | baseline model vs q.grad: {model_err:.1e}")
    print()
    print("Table 1: digits, tanh, Gaussian bias (std 0.5), 2-layer net, scalar "
          "output, squared loss;")
    print(f"         skrecon n_jobs={args.n_jobs}, BLAS threads "
          f"{args.skrecon_blas_threads or 'default'}; DLG = L-BFGS-B gradient "
          f"matching, maxiter={args.dlg_iters}, tol={args.dlg_tol},")
    print(f"         uniform[0,1] start (seed 0), told weights, output weights and "
          f"targets, BLAS threads {args.dlg_blas_threads or 'default'}")
    _print_table(header, rows, [">"] * len(header))
    print("'>=' time: the fit hit --fit-timeout; '<=' ratio: an upper bound.")
    print("notes:")
    for n in notes:
        print("  " + n)


def reach_table(args):
    header = ["m", "B", "skr time(s)", "worst cos", "worst relerr", "grad resid",
              "exact", "note"]
    rows = []
    largest = {}
    for m in args.reach_widths:
        largest[m] = None
        for B in args.reach_batch_sizes:
            print(f"[{datetime.now():%H:%M:%S}] reach m={m} B={B} ...", flush=True)
            q = _query(B, m)
            s = run_skrecon(q, n_jobs=args.n_jobs, timeout=args.fit_timeout,
                            threads=args.skrecon_blas_threads)
            exact = bool(np.isfinite(s["err"]) and s["err"] <= args.exact_tol)
            if exact:
                largest[m] = B
            print(f"[{datetime.now():%H:%M:%S}]   {s['time']:.1f} s worst relerr "
                  f"{_fmt(s['err'], '.2e')} {'exact' if exact else 'NOT exact'}  "
                  f"{s['note']}", flush=True)
            timed_out = "FitTimeout" in s["note"]
            rows.append([str(m), str(B),
                         (">=" if timed_out else "") + _fmt(s["time"], ".1f"),
                         _fmt(s["cos"], ".6f"),
                         _fmt(s["err"], ".2e"), _fmt(s["residual"], ".2e"),
                         "yes" if exact else "NO", s["note"]])
    print()
    print(f"Table 2 (reach): largest B in {args.reach_batch_sizes} recovered exactly "
          f"(worst relative error <= {args.exact_tol:g}); digits, tanh, Gaussian bias,")
    print(f"                 2-layer net, scalar output, squared loss; skrecon "
          f"n_jobs={args.n_jobs}")
    _print_table(header, rows, [">"] * 7 + ["<"])
    print("'>=' time: the fit hit --fit-timeout (counted as not exact).")
    for m in args.reach_widths:
        print(f"  m={m}: largest exact B = "
              f"{largest[m] if largest[m] is not None else 'none'}"
              + (f" (fits limited to {args.fit_timeout:g} s)" if args.fit_timeout
                 else ""))


def _code_version():
    """skrecon's location and, when it is a git checkout, its commit and state."""
    where = os.path.dirname(os.path.abspath(skrecon.__file__))
    try:
        out = subprocess.run(
            ["git", "-C", where, "log", "-1", "--format=%h %cd", "--date=iso"],
            capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--", "."],
            capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            n_dirty = len([ln for ln in dirty.stdout.splitlines() if ln.strip()])
            state = (f"{n_dirty} uncommitted file(s) in skrecon/" if n_dirty
                     else "clean")
            return f"{where}  commit {out.stdout.strip()}  ({state})"
    except (OSError, subprocess.SubprocessError):
        pass
    return where


def _print_header(script):
    """First lines of every benchmark: when, the load and threads, the
    command, the versions and the skrecon commit."""
    print(f"{script}  started {datetime.now():%Y-%m-%d %H:%M:%S}  "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}  "
          f"cpus {os.cpu_count()}  OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"command: {' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy "
          f"{scipy.__version__}, skrecon {getattr(skrecon, '__version__', '?')}")
    print(f"skrecon code: {_code_version()}")


def _print_footer(start):
    """Last line of every benchmark: when, the load, the total time."""
    print(f"\nfinished {datetime.now():%Y-%m-%d %H:%M:%S}  load avg "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}  total wall time "
          f"{time.perf_counter() - start:.1f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--widths", type=int, nargs="+", default=[20000])
    p.add_argument("--dlg-iters", type=int, default=500,
                   help="L-BFGS-B maxiter of the baseline (0 skips it)")
    p.add_argument("--dlg-tol", choices=["tight", "scipy"], default="tight",
                   help="tight: ftol=gtol=0, the baseline runs to --dlg-iters or "
                        "until its line search stalls; scipy: scipy's defaults")
    p.add_argument("--dlg-blas-threads", type=int, default=1,
                   help="BLAS threads of the baseline (threadpoolctl; 0 = "
                        "library default). Its matrices are small (B x m): on a "
                        "loaded machine multi-threaded OpenBLAS made each "
                        "evaluation ~20x slower")
    p.add_argument("--n-jobs", type=int, default=2, help="skrecon's n_jobs")
    p.add_argument("--skrecon-blas-threads", type=int, default=0,
                   help="BLAS threads of skrecon's main process (0 = library "
                        "default; joblib limits its workers itself)")
    p.add_argument("--fit-timeout", type=float, default=240,
                   help="best-effort wall-clock limit of each skrecon fit, in "
                        "seconds (SIGALRM; 0 = none). The baseline is bounded by "
                        "--dlg-iters instead")
    p.add_argument("--reach", action="store_true",
                   help="print the reach table (skrecon only) instead of table 1")
    p.add_argument("--reach-widths", type=int, nargs="+", default=[20000, 100000])
    p.add_argument("--reach-batch-sizes", type=int, nargs="+", default=[8, 16, 24, 32])
    p.add_argument("--exact-tol", type=float, default=1e-6)
    p.add_argument("--check-grad", action="store_true",
                   help="check the baseline's analytic gradient and exit")
    args = p.parse_args(argv)

    if args.check_grad:
        return 0 if check_grad() else 1

    start = time.perf_counter()
    _print_header("bench_core.py")
    if args.reach:
        reach_table(args)
    else:
        core_table(args)
    _print_footer(start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
