"""The activation patterns of the simulated local steps (piecewise-linear nets).

For ReLU and leaky ReLU the update after local steps is discontinuous in
the samples: each step's gradient holds ``sigma'(w_j . x_i + b_j)``, a step
function, so a Levenberg-Marquardt polish of the unrolled steps stalls
where every useful step flips some entry of the pattern. With the pattern
of every (step, sample, neuron) held fixed (:class:`skrecon._unroll.FixedSlope`)
the simulated update is smooth in the samples; :func:`read_patterns` reads
that pattern off the true simulation at the current batch, with each
entry's distance to its kink relative to the sample, which says which rows
of the first layer may carry a wrong entry.
"""

import numpy as np

from ._unroll import FixedSlope, simulate, slope

__all__ = ["read_patterns"]


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
