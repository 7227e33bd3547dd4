"""The activation patterns of the simulated local steps (piecewise-linear nets).

For ReLU and leaky ReLU the update after local steps is discontinuous in
the samples: each step's gradient holds ``sigma'(w_j . x_i + b_j)``, a step
function, so a Levenberg-Marquardt polish of the unrolled steps stalls
where every useful step flips some entry of the pattern. With the pattern
of every (step, sample, neuron) held fixed (:class:`skrecon._unroll.FixedSlope`)
the simulated update is smooth in the samples; :func:`read_patterns` reads
that pattern off the true simulation at the current batch, with each
entry's distance to its kink relative to the sample, which says which rows
of the first layer may carry a wrong entry; :func:`pattern_polish` solves
with the patterns fixed and those rows left out, and reads them again.
"""

import numpy as np

from ._unroll import Fit, FixedSlope, levenberg_marquardt, simulate, slope

__all__ = ["pattern_polish", "read_patterns"]

# rounds of the fixed-pattern polish, the share of the first layer's rows
# left out at first (those nearest a kink), and the margin after a round, in
# units of its largest relative step (16 digits, ReLU, lr 0.05, 3 full-batch
# epochs: a stall at cost 3.7e-4 went to 1e-26 in two rounds, 256 of 1024
# rows left out)
_ROUNDS = 8
_DROP = 0.25
_MARGIN = 3.0


def read_patterns(torch, layers, params, X, Q, W, schedule):
    """The patterns of the simulated steps at ``X`` and each first-layer
    neuron's nearest kink.

    Returns ``patterns`` (a list over the steps of a list over the
    activation layers of :class:`FixedSlope`) and ``near`` (n_neurons,):
    for each neuron of the first activation layer, the smallest
    ``|w_j . x_i + b_j| / (||(w_j, b_j)|| ||(x_i, 1)||)`` over the steps and
    the samples (the relative change of a sample that flips its entry).
    """
    X, Q, W = (torch.as_tensor(a) for a in (X, Q, W))
    patterns = []
    near = None

    def record(t, p):
        nonlocal near
        h, step, first = X, [], True
        norm = None
        for kind, *rest in layers:
            if kind == "linear":
                weight = p[rest[0]]
                rows = (weight * weight).sum(dim=1)
                inputs = (h * h).sum(dim=1)
                if rest[1] is not None:
                    rows = rows + p[rest[1]] ** 2
                    inputs = inputs + 1.0
                norm = torch.sqrt(inputs)[:, None] * torch.sqrt(rows)[None, :]
                h = h @ weight.T + (p[rest[1]] if rest[1] is not None else 0.0)
            else:
                out = rest[0](h)
                step.append(FixedSlope(slope(torch, rest[0], h, out)))
                if first:
                    d = (h.abs() / torch.clamp(norm, min=1e-300)).min(dim=0).values
                    near = d if near is None else torch.minimum(near, d)
                    first = False
                h = out
        patterns.append(step)

    with torch.no_grad():
        simulate(torch, layers, params, X, Q, W, schedule, before_step=record)
    return patterns, near.numpy()


def pattern_polish(torch, problem, fit, *, max_iter, ftol, verbose=0):
    """Levenberg-Marquardt with the activation patterns held fixed, from
    where the plain polish ``fit`` stalled.

    Each round reads the patterns of the simulated steps at the current
    batch, leaves out of the residual the first layer's rows with an entry
    within the margin of its kink (at first the quarter nearest; then three
    times the last round's largest relative change of a sample), solves the
    smooth fixed-pattern problem (``problem.fixed``), and checks the true
    residual ``problem``. It stops when that residual reaches ``ftol`` or
    two rounds did not halve it.

    Returns a :class:`skrecon._unroll.Fit` (status 1 exact, 2 stalled) whose
    ``n_iter`` and ``nfev`` count this polish's normal matrices and
    simulations.
    """
    unknowns, W = problem.unknowns, problem.W
    z, margin, costs = torch.as_tensor(fit.z), None, [fit.cost]
    n_iter = nfev = 0
    status, cost = 2, fit.cost
    for k in range(_ROUNDS):
        V, Q = unknowns.split(torch, z)
        patterns, near = read_patterns(torch, problem.layers, problem.p0, V, Q, W,
                                       problem.schedule)
        if margin is None:
            margin = float(np.quantile(near, _DROP))
        keep = near > margin
        inner = levenberg_marquardt(torch, problem.fixed(patterns, keep), z.numpy(),
                                    max_iter=max_iter, ftol=ftol)
        n_iter, nfev = n_iter + inner.n_iter, nfev + inner.nfev + 1
        z_new = torch.as_tensor(inner.z)
        V_new, _ = unknowns.split(torch, z_new)
        step = float(((V_new - V).norm(dim=1) / V.norm(dim=1)).max())
        with torch.no_grad():
            r = problem(z_new)
        z, cost = z_new, 0.5 * float(r @ r)
        if verbose:
            print(f"  patterns {k}: {int(np.sum(~keep))} rows near a kink (margin "
                  f"{margin:.1e}) left out, fixed-pattern cost {inner.cost:.2e}, "
                  f"step {step:.1e}, cost {cost:.2e}")
        if cost <= ftol:
            status = 1
            break
        margin = min(margin, _MARGIN * step)
        costs.append(cost)
        # no progress: two rounds that did not halve the cost
        if step == 0.0 or (len(costs) > 2 and cost > 0.5 * costs[-3]):
            break
    return Fit(z.numpy(), cost, n_iter, nfev, status)
