"""The step order and the labels of :mod:`skrecon.fedavg`, searched on the simulated residual.

With several epochs of mini-batches, the order that :func:`skrecon._fedavg_start.assign_steps`
reads off a trajectory is only as good as that trajectory, which is simulated
from the order itself: from a start a few percent off it misplaces several
samples per epoch (16 digits, b = 4, E = 2 or 8 digits, b = 4, E = 3), and the
refits and the polish then stall. The residual of the simulated local steps,
``||theta_T(X, labels, order) - theta_T||``, tells the orders apart at the
start already (8 digits, b = 4, E = 3, lr 0.05: 4e-3 with the true order and
labels, 0.2 to 0.5 with one sample misplaced in each epoch), and a simulation
costs milliseconds. :func:`search_order` searches it: each round ranks the
single moves (two samples of one epoch exchanged between two steps, one
label changed) by the residual they give alone, and scores every
combination of at most one of the best few moves per epoch and one label
change: samples misplaced in several epochs at once are moved together
(moving one of them alone raises the residual).
"""

import itertools
from dataclasses import replace

import numpy as np

from ._unroll import flat_parameters, memberships, simulate

__all__ = ["ResidualScore", "hyperparameter_hint", "search_order"]

# moves kept per epoch, and label moves kept, in a round's combinations
# (8 digits, b = 4, E = 3: the true order was one exchange away in each
# epoch, the three exchanges among each epoch's best four)
_WIDTH = 4
_LABEL_WIDTH = 2
_ROUNDS = 10


class ResidualScore:
    """The simulated steps' ``||theta_T(X, labels, order) - theta_T||``, relative
    to ``||theta_T - theta_0||``."""

    def __init__(self, torch, layers, p0, pT, names, schedule, n_classes):
        self.torch, self.layers, self.p0, self.names = torch, layers, p0, names
        self.schedule, self.n_classes = schedule, n_classes
        self.pT = flat_parameters(torch, pT, names)
        self.scale = float(torch.linalg.norm(self.pT - flat_parameters(torch, p0, names)))
        self.n_calls = 0

    def __call__(self, X, labels, order):
        torch = self.torch
        self.n_calls += 1
        W = torch.as_tensor(memberships(order, self.schedule))
        Q = torch.as_tensor(np.eye(self.n_classes)[labels])
        with torch.no_grad():
            out = simulate(torch, self.layers, self.p0, torch.as_tensor(X), Q, W,
                           self.schedule)
            return float(torch.linalg.norm(flat_parameters(torch, out, self.names)
                                           - self.pT)) / self.scale


def _moves(score, X, labels, order, step_of, width, label_width):
    """The ``width`` best single moves of each epoch and of the labels."""
    E, N = order.shape
    factors = []
    for e in range(E):
        ranked = []
        for p, q in itertools.combinations(range(N), 2):
            if step_of[p] != step_of[q]:
                o = order.copy()
                o[e, [p, q]] = o[e, [q, p]]
                ranked.append((score(X, labels, o), ("swap", e, p, q)))
        ranked.sort(key=lambda item: item[0])
        factors.append([None] + [move for _, move in ranked[:width]])
    ranked = []
    for i in range(N):
        for k in range(score.n_classes):
            if k != labels[i]:
                lab = labels.copy()
                lab[i] = k
                ranked.append((score(X, lab, order), ("label", i, k)))
    ranked.sort(key=lambda item: item[0])
    factors.append([None] + [move for _, move in ranked[:label_width]])
    return factors


def search_order(score, X, labels, order, schedule, *, width=_WIDTH,
                 label_width=_LABEL_WIDTH, max_rounds=_ROUNDS):
    """The labels and order of lowest simulated residual near ``labels`` and ``order``.

    Parameters
    ----------
    score : ResidualScore
    X : ndarray of shape (n_samples, n_inputs)
    labels : ndarray of shape (n_samples,), int
    order : ndarray of shape (epochs, n_samples), int
    schedule : skrecon._unroll.Schedule

    Returns
    -------
    labels, order, residual
        The best labels and order found and their residual (the given ones
        when no combination of moves lowers it).
    """
    step_of = np.repeat(np.arange(schedule.steps_per_epoch), schedule.step_sizes())
    labels, order = np.asarray(labels).copy(), np.asarray(order).copy()
    current = score(X, labels, order)
    for _ in range(max_rounds):
        best = None
        for combo in itertools.product(*_moves(score, X, labels, order, step_of, width,
                                                    label_width)):
            if all(move is None for move in combo):
                continue
            o, lab = order.copy(), labels.copy()
            for move in combo:
                if move is None:
                    continue
                if move[0] == "swap":
                    _, e, p, q = move
                    o[e, [p, q]] = o[e, [q, p]]
                else:
                    lab[move[1]] = move[2]
            value = score(X, lab, o)
            if value < current and (best is None or value < best[0]):
                best = (value, lab, o)
        if best is None:
            break
        current, labels, order = best
    return labels, order, current


def hyperparameter_hint(torch, layers, p0, pT, names, schedule, n_classes, X, labels,
                        order, residual):
    """A sentence naming a learning rate or a number of epochs that the batch
    found fits far better than the given ones, or ``""``.

    The batch a polish finds under a learning rate twice or half the
    client's, or one epoch off, reproduces the returned parameters with the
    client's far better than with the given ones (8 digits, E = 3 full
    batch, lr 0.05: residual 3e-3 with the truth against 0.2-0.7 with the
    given ones, lr x2, x1/2 and E +-1), at the cost of a few simulations.
    """
    candidates = [("learning_rate", schedule.learning_rate * f, schedule.epochs)
                  for f in (0.5, 2.0)]
    candidates += [("epochs", schedule.learning_rate, e) for e in
                   (schedule.epochs - 1, schedule.epochs + 1)
                   if e >= 1 and (schedule.steps_per_epoch == 1 or e < schedule.epochs)]
    best = None
    for what, lr, epochs in candidates:
        trial = replace(schedule, learning_rate=lr, epochs=epochs)
        trial_order = (np.tile(order[0], (epochs, 1)) if schedule.steps_per_epoch == 1
                       else order[:epochs])
        value = ResidualScore(torch, layers, p0, pT, names, trial, n_classes)(
            X, labels, trial_order)
        if value < 0.1 * residual and (best is None or value < best[0]):
            best = (value, what, lr if what == "learning_rate" else epochs)
    if best is None:
        return ""
    value, what, given = best
    return (f" The batch found fits {what}={given:g} far better than "
            f"{what}={schedule.learning_rate if what == 'learning_rate' else schedule.epochs:g} "
            f"(relative residual {value:.2g}): check the client's hyperparameters.")
