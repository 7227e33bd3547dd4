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
  residual;
* ``tuple``: :func:`skrecon.overcomplete.reconstruct_overcomplete` (the
  true ``B`` given): ``s + 1`` samples at once by the tuple column-space
  search (``s = B - r``), the other ``r - 1`` by the per-sample search;
  rows flagged found, rows recovered, the whole model's residual, the
  tuple searches run and the time;
* ``order4``: the overcomplete tensor start, then the same joint polish.
  The bias gradient (the span's bias coordinate ``y_j = e . p_j``), less
  its least-squares fit on the Hermite features of degree <= 2 of the
  standardised weights ``z_j`` (times the output weight), weighted by the
  output weight, gives ``M = (1/m) sum_j a_j rho_j vec(z_j z_j^T)
  vec(z_j z_j^T)^T``: the ``(r^2, r^2)`` unfolding of the order-4 Hermite
  moment ``E[a y He_4(z)] = E[a^2] s_b sum_i u_i mu_5(x_i) v_i^(x)4`` (the
  residual is orthogonal to the degree-0 and degree-2 features, so the
  lower terms of ``He_4`` drop out; ``mu_5 = E[sigma^(5)]`` is nonzero for
  tanh with a centred Gaussian bias, where ``mu_4`` vanishes). Its top-``B``
  eigenvectors (by modulus) span ``{v_i (x) v_i}``; the subspace power
  method (Kileel & Pereira) finds the rank-one members one at a time
  (shifted power iteration on ``||P_E (v (x) v)||^2``, restarts, their
  deflation), and the bias coordinate (``e . v = s_b``) fixes each scale
  and sign. The true ``B`` is given. The table reports ``snr``: the
  ``B``-th largest eigenvalue modulus of the exact moment (computed from
  the true batch and signals, a diagnosis only) over the spectral norm
  of the estimate's error: below 1 the weakest components are lost in
  the estimation noise of ``m`` neurons;
* ``basin``: the largest relative perturbation ``eps`` of the true batch
  (each row moved by ``eps |v_i|`` in a random direction, in the span)
  from which the joint polish recovers every sample to 1e-6 (tried
  1e-3, 1e-2, 1e-1 in turn): how good a start the polish needs. An
  oracle experiment, not an attack.

The joint polish certifies nothing per row: with ``B`` above the rank no
single sample satisfies a test of its own (the column-space condition
fails), so only a whole fit at round-off residual would identify the
batch.

Control rows ``gauss``: ``B`` standard normal samples in ``d = 8``
(rank 9 with the bias), where the order-4 start is better estimated at
``m = 20 000`` (measured: exact after the polish at ``B = 10``, 10 of 12
within 1e-2 and none exact at ``B = 12``).

Rows: digits (d = 64) B = 56, 64, 96; scikit-learn's breast-cancer data
(d = 30, min-max scaled to [0, 1]) B = 32, 48, 64; tanh, Gaussian bias,
m = 20 000 unless said. It claims nothing: it prints what it measured.

Examples
--------
    python benchmarks/bench_overcomplete.py
    python benchmarks/bench_overcomplete.py --cases cancer --max-iter 100
    python benchmarks/bench_overcomplete.py --cases digits --batch-sizes 96
    python benchmarks/bench_overcomplete.py --routes order4 basin --seeds 0 1 2
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from scipy import linalg
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import minmax_scale

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _fmt, _print_footer, _print_header, _print_table  # noqa: E402

from skrecon import GradientReconstructor, MomentTensorTransformer  # noqa: E402
from skrecon._hermite import gaussian_expectation_stein, hermite_features  # noqa: E402
from skrecon.activations import get_activation  # noqa: E402
from skrecon.clients import make_gradient_query  # noqa: E402
from skrecon.datasets import load_digits_batch  # noqa: E402
from skrecon.metrics import relative_error  # noqa: E402
from skrecon.overcomplete import reconstruct_overcomplete  # noqa: E402
from skrecon.refine import fit_signals, gradient_model, levenberg_marquardt  # noqa: E402

TANH = get_activation("tanh")


def _batch(name, B, seed=0):
    if name == "digits":
        return load_digits_batch(B, random_state=seed)[0]
    if name == "gauss":
        return np.random.default_rng(seed).standard_normal((B, 8))
    data = minmax_scale(load_breast_cancer().data)
    return data[np.random.default_rng(seed).choice(len(data), B, replace=False)]


def _recovered(batch, samples, tol):
    """True samples matched to a recovered one within relative error ``tol``."""
    err, perm = relative_error(batch, samples)
    return int(np.sum((perm >= 0) & (err <= tol)))


class _Projection:
    """The query in the coordinates of its ``r``-dimensional span (every
    column scaled by its weight's std, the bias centred): ``P`` and
    ``Omega`` ``(m, r)``, ``A`` ``(m, K)``, ``basis`` ``(d + 1, r)``,
    ``scale`` ``(d + 1,)``. Self-contained (an SVD of the gradient), so
    that a span of full dimension ``d + 1`` works too."""

    def __init__(self, q, r):
        G, W, A = q.grad, q.weights, q.output_weights
        s = np.sqrt(np.mean(W[:, :-1] ** 2))
        self.bias_mean = float(W[:, -1].mean())
        self.scale = np.full(G.shape[1], s)
        self.scale[-1] = W[:, -1].std()
        centre = np.zeros(G.shape[1])
        centre[-1] = self.bias_mean
        span = linalg.svd(G, full_matrices=False)[2][:r].T
        self.basis = np.linalg.qr(span * self.scale[:, None])[0]
        self.Omega = ((W - centre) / self.scale) @ self.basis
        self.P = G @ (self.scale[:, None] * self.basis)
        self.A = A
        # the bias input is 1: e . v = c for every sample
        self.e, self.c = self.basis[-1], self.scale[-1]

    def coordinates(self, batch):
        return (np.hstack([batch, np.ones((len(batch), 1))]) * self.scale) @ self.basis

    def samples(self, V):
        x = (V @ self.basis.T) / self.scale
        return x[:, :-1] / x[:, -1:]


def _polish(batch, proj, V0, args, seed=0):
    """Joint LM of all B samples from ``V0`` on a row subset; counts and residuals."""
    m = proj.P.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(m, min(args.rows, m), replace=False))
    P, Omega, A = proj.P[rows], proj.Omega[rows], proj.A[rows]
    V0 = V0 + np.outer(proj.c - V0 @ proj.e, proj.e) / (proj.e @ proj.e)
    U = fit_signals(V0, P, Omega, A, TANH, proj.bias_mean)
    start = time.perf_counter()
    fit = levenberg_marquardt(V0, U, P, Omega, A, TANH, proj.bias_mean,
                              fixed=(proj.e, proj.c), max_iter=args.max_iter)
    seconds = time.perf_counter() - start
    samples = proj.samples(fit.V)
    # the fit's residual on every neuron (its signals kept)
    full = np.linalg.norm(proj.P - gradient_model(fit.V, fit.U, proj.Omega, proj.A, TANH,
                                                  proj.bias_mean)) / np.linalg.norm(proj.P)
    return dict(exact=_recovered(batch, samples, 1e-6), close=_recovered(batch, samples, 1e-2),
                resid=full, iters=fit.n_iter, time=seconds)


def _order4_matrix(proj):
    """The ``(r^2, r^2)`` unfolding of the order-4 Hermite moment of the bias gradient."""
    m, r = proj.Omega.shape
    a = proj.A[:, 0]
    y = proj.P @ proj.e
    design = hermite_features(proj.Omega, 2) * a[:, None]
    coef = linalg.solve(design.T @ design, design.T @ y, assume_a="pos")
    weight = a * (y - design @ coef) / m
    Z2 = (proj.Omega[:, :, None] * proj.Omega[:, None, :]).reshape(m, r * r)
    return Z2.T @ (weight[:, None] * Z2)


def _subspace_power(M, B, rng, n_restarts=8, max_iter=200, tol=1e-10):
    """Rank-one symmetric members ``v (x) v`` of the top-``B`` eigenspace of ``M``.

    Kileel & Pereira's subspace power method: shifted power iteration on
    ``F(v) = ||E^T vec(v v^T)||^2`` over unit ``v`` (``E`` the eigenvectors),
    the best of ``n_restarts`` random starts, then their deflation of the
    found component from the eigen-decomposition. Returns ``(B, r)`` unit
    vectors and their ``F`` (1 for an exact rank-one member).
    """
    r = int(round(np.sqrt(M.shape[0])))
    values, vectors = linalg.eigh(M)
    top = np.argsort(-np.abs(values))[:B]
    D, E = values[top], vectors[:, top]
    found, scores = [], []
    for _ in range(B):
        best_f, best_v = -1.0, None
        for _ in range(n_restarts):
            v = rng.standard_normal(r)
            v /= np.linalg.norm(v)
            f_old = -1.0
            for _ in range(max_iter):
                coef = E.T @ np.outer(v, v).ravel()
                f = coef @ coef
                Am = (E @ coef).reshape(r, r)
                v = (Am + Am.T) @ v / 2 + v
                v /= np.linalg.norm(v)
                if abs(f - f_old) < tol:
                    break
                f_old = f
            coef = E.T @ np.outer(v, v).ravel()
            if coef @ coef > best_f:
                best_f, best_v = coef @ coef, v
        found.append(best_v)
        scores.append(best_f)
        if E.shape[1] == 1:
            break
        coef = E.T @ np.outer(best_v, best_v).ravel()
        lam = 1.0 / (coef @ (coef / D))
        w, Qm = linalg.eigh(np.diag(D) - lam * np.outer(coef, coef))
        keep = np.argsort(-np.abs(w))[:E.shape[1] - 1]
        D, E = w[keep], E @ Qm[:, keep]
    return np.array(found), np.array(scores)


def _order4(batch, q, proj, args, seed):
    """The order-4 start (and its signal-to-noise diagnosis), then the polish."""
    B = len(batch)
    start = time.perf_counter()
    M = _order4_matrix(proj)
    X, scores = _subspace_power(M, B, np.random.default_rng(seed))
    V0 = X * (proj.c / (X @ proj.e))[:, None]
    start_time = time.perf_counter() - start
    err = relative_error(batch, proj.samples(V0))[0]
    # diagnosis from the truth: the exact moment's B-th eigenvalue modulus
    # over the estimate's error
    V = proj.coordinates(batch)
    tau = np.linalg.norm(V, axis=1)
    mu5 = gaussian_expectation_stein(lambda t: TANH.derivative(t, 1), 5, tau)
    c = np.mean(proj.A[:, 0] ** 2) * q.signals[:, 0] * (V @ proj.e) * mu5
    K2 = np.einsum("ia,ib->iab", V, V).reshape(B, -1)
    exact = K2.T @ (c[:, None] * K2)
    lam_b = np.sort(np.abs(linalg.eigvalsh(exact)))[::-1][B - 1]
    noise = np.abs(linalg.eigvalsh(M - exact)).max()
    out = _polish(batch, proj, V0, args, seed)
    out.update(snr=lam_b / noise, start_err=float(np.median(err)),
               f_min=float(scores.min()), start_time=start_time)
    return out


def _basin(batch, proj, args, seed):
    """Largest ``eps`` in 1e-3, 1e-2, 1e-1 from which the polish recovers all."""
    V = proj.coordinates(batch)
    rng = np.random.default_rng(seed + 1)
    best = None
    for eps in (1e-3, 1e-2, 1e-1):
        noise = rng.standard_normal(V.shape)
        noise *= (eps * np.linalg.norm(V, axis=1) / np.linalg.norm(noise, axis=1))[:, None]
        out = _polish(batch, proj, V + noise, args, seed)
        print(f"  basin eps {eps:g}: {out['exact']}/{len(batch)} to 1e-6, residual "
              f"{out['resid']:.1e}, {out['iters']} steps, {out['time']:.1f} s", flush=True)
        if out["exact"] < len(batch):
            break
        best = eps
    return best


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
    U = fit_signals(V, P, Omega, A, TANH, proj.bias_mean)
    start = time.perf_counter()
    fit = levenberg_marquardt(V, U, P, Omega, A, TANH, proj.bias_mean, fixed=(e, c),
                              max_iter=args.max_iter)
    seconds = time.perf_counter() - start
    x_fit = (fit.V @ basis.T) / scale
    samples = x_fit[:, :-1] / x_fit[:, -1:]
    return dict(exact=_recovered(batch, samples, 1e-6),
                close=_recovered(batch, samples, 1e-2),
                resid=fit.relative_residual, iters=fit.n_iter, time=seconds)


def _polish_cells(out):
    if out is None:
        return ["", "", "", "", ""]
    return [str(out["exact"]), str(out["close"]), _fmt(out["resid"], ".1e"),
            str(out["iters"]), _fmt(out["time"], ".1f")]


def run_case(name, B, seed, args):
    batch = _batch(name, B, seed)
    rank = int(np.linalg.matrix_rank(np.hstack([batch, np.ones((B, 1))])))
    q = make_gradient_query(batch, n_neurons=args.width, bias="gaussian",
                            random_state=seed)
    grad_rank = int(np.linalg.matrix_rank(q.grad))
    row = [name, str(seed), str(batch.shape[1]), str(B), str(rank), str(grad_rank)]
    if "auto" in args.routes:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            rec = GradientReconstructor(bias=True, random_state=seed).fit(q.grad,
                                                                          **q.fit_params)
            auto_time = time.perf_counter() - start
        kinds = sorted({w.category.__name__ for w in caught})
        joint = _joint(batch, q, rec, args) if rec.batch_size_ < B else None
        row += [str(rec.batch_size_), f"{rec.n_found_}",
                str(_recovered(batch, np.asarray(rec.samples_), 1e-6)),
                _fmt(auto_time, ".1f"), ",".join(kinds)] + _polish_cells(joint)
    else:
        row += [""] * 10
    if "tuple" in args.routes:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = reconstruct_overcomplete(
                q.grad, weights=q.weights, output_weights=q.output_weights, batch_size=B,
                max_starts=args.tuple_starts, max_nfev=args.tuple_nfev, random_state=seed)
        seconds = time.perf_counter() - start
        row += [str(int(res.found.sum())), str(_recovered(batch, res.samples, 1e-6)),
                str(_recovered(batch, res.samples, 1e-2)),
                _fmt(res.gradient_residual, ".1e"), str(res.n_starts),
                _fmt(seconds, ".1f")]
    else:
        row += [""] * 6
    proj = _Projection(q, grad_rank)
    if "order4" in args.routes:
        out = _order4(batch, q, proj, args, seed)
        row += [_fmt(out["snr"], ".1e"), _fmt(out["f_min"], ".2f"),
                _fmt(out["start_err"], ".2f"), _fmt(out["start_time"], ".1f")]
        row += _polish_cells(out)
    else:
        row += [""] * 9
    if "basin" in args.routes:
        eps = _basin(batch, proj, args, seed)
        row.append("< 1e-3" if eps is None else f"{eps:g}")
    else:
        row.append("")
    print("  ".join(row), flush=True)
    return row


CASES = {"digits": [56, 64, 96], "cancer": [32, 48, 64], "gauss": [10, 12]}
ROUTES = ("auto", "tuple", "order4", "basin")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES),
                   default=["digits", "cancer"])
    p.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES),
                   help="auto: the estimator and the joint polish from its rows; "
                   "tuple: reconstruct_overcomplete; order4: the tensor start and "
                   "its polish; basin: the oracle perturbations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--width", type=int, default=20000)
    p.add_argument("--rows", type=int, default=2000,
                   help="neurons of the joint polish (a random subset)")
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--tuple-starts", type=int, default=20)
    p.add_argument("--tuple-nfev", type=int, default=200)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="these batch sizes for every case chosen (default: each "
                   "case's own)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    _print_header("bench_overcomplete.py")
    print(f"width {args.width}, joint polish on {args.rows} neurons, at most "
          f"{args.max_iter} steps; recovered = true samples matched within the "
          "relative error given\n")
    rows = [run_case(name, B, seed, args) for name in args.cases
            for B in (args.batch_sizes or CASES[name]) for seed in args.seeds]
    print()
    polish = ["<=1e-6", "<=1e-2", "resid", "steps", "s"]
    _print_table(["data", "seed", "d", "B", "rank", "grad rank", "auto B", "auto found",
                  "auto <=1e-6", "auto s", "auto warnings"]
                 + [f"joint {c}" for c in polish]
                 + ["tuple found", "tuple <=1e-6", "tuple <=1e-2", "tuple resid",
                    "tuple starts", "tuple s"]
                 + ["o4 snr", "o4 F min", "o4 start err", "o4 start s"]
                 + [f"o4 {c}" for c in polish] + ["basin eps"], rows,
                 ["<"] + [">"] * 9 + ["<"] + [">"] * 21)
    _print_footer(start)


if __name__ == "__main__":
    main()
