"""The residual of a client's simulated local steps, and its rows' bounds.

:class:`UpdateProblem` is the least-squares problem that
:func:`skrecon.fedavg.reconstruct_update` polishes: the parameters the
client's SGD steps (simulated by :mod:`skrecon._unroll`) return from the
samples, soft targets and step order, less the parameters it returned, over
the learning rate. :func:`update_error_bounds` certifies each row of an
exact fit by the singular triplets of that residual's Jacobian (as
:mod:`skrecon._certificate` does for one gradient), and
:func:`decay_factor` is the weight decay's (and momentum's) shrinking of the
sent parameters over the steps.
"""

import numpy as np

from ._certificate import STANDARD_ERRORS
from ._unroll import flat_parameters, jacobian, simulate

__all__ = ["UpdateProblem", "decay_factor", "update_error_bounds"]


def decay_factor(schedule):
    """``c`` with ``theta_T = c theta_0 - lr (sum of weighted gradients)``."""
    theta, buf = 1.0, None
    for _ in range(schedule.n_steps):
        d = schedule.weight_decay * theta
        buf = d if buf is None else schedule.momentum * buf + d
        theta -= schedule.learning_rate * buf
    return theta


class UpdateProblem:
    """The residual of the simulated local steps, for one order of the steps.

    The first layer runs in the samples' span coordinates: with ``U``
    (n_inputs [+ 1], r) orthonormal and every input ``(x_i, 1) = U v_i``,
    every first-layer update lies in ``R^m (x) span(U)``, so ``[W, b] U``
    (m, r) is all the steps see of that layer and all they change; the part
    of its rows outside the span is the same on both sides (``c theta_0``'s).
    The simulation and its Jacobian carry ``m r`` numbers for that layer
    instead of ``m (n_inputs + 1)`` (r = N = 16 of 65 for the digits).
    """

    def __init__(self, torch, layers, names, p0, pT, U, schedule, unknowns, W,
                 patterns=None, keep=None):
        _, weight, bias = layers[0]
        U = torch.as_tensor(U)

        def first_layer(p):  # [W, b] U, under the weight's name
            M = p[weight] if bias is None else torch.column_stack([p[weight], p[bias]])
            return M @ U

        rest = [k for k in names if k not in (weight, bias)]
        self.torch, self.schedule, self.unknowns = torch, schedule, unknowns
        self.names = [weight] + rest
        self.layers = [("linear", weight, None)] + list(layers[1:])
        self.p0 = {weight: first_layer(p0), **{k: p0[k] for k in rest}}
        self.pT = flat_parameters(
            torch, {weight: first_layer(pT), **{k: pT[k] for k in rest}}, self.names)
        self.U, self.has_bias = U, bias is not None
        self.W = torch.as_tensor(W)
        self._given = (layers, names, p0, pT, U, W)
        # a piecewise-linear net's patterns held fixed, and the first layer's
        # rows kept in the residual (those far from every kink)
        self.patterns, self.weights = patterns, None
        if keep is not None:
            n_first = self.p0[weight].numel()
            self.weights = torch.ones(len(self.pT), dtype=torch.float64)
            self.weights[:n_first] = torch.as_tensor(
                np.repeat(np.asarray(keep, dtype=float), n_first // len(keep)))

    def __call__(self, z):
        V, Q = self.unknowns.split(self.torch, z)
        out = simulate(self.torch, self.layers, self.p0, V, Q, self.W, self.schedule,
                       patterns=self.patterns)
        r = (flat_parameters(self.torch, out, self.names) - self.pT) \
            / self.schedule.learning_rate
        return r if self.weights is None else r * self.weights

    def fixed(self, patterns, keep):
        """The same residual with the activation ``patterns`` held fixed
        (see :func:`skrecon._unroll.simulate`) and only the first layer's rows
        ``keep`` (n_neurons,) bool in it."""
        layers, names, p0, pT, U, W = self._given
        return UpdateProblem(self.torch, layers, names, p0, pT, U, self.schedule,
                        self.unknowns, W, patterns=patterns, keep=keep)

    def pack(self, X, Q):
        """The unknowns of samples ``X`` (in the span) and soft targets ``Q``."""
        Xa = np.column_stack([X, np.ones(len(X))]) if self.has_bias else X
        V = Xa @ self.U.numpy()
        offset, basis = self.unknowns.offset.numpy(), self.unknowns.basis.numpy()
        return self.unknowns.pack((V - offset) @ basis.T, Q)

    def parts(self, z):
        """Samples ``X`` (n_samples, n_inputs) and soft targets of the unknowns."""
        V, Q = self.unknowns.split(self.torch, self.torch.as_tensor(z))
        X = (V @ self.U.T).detach().numpy()
        return (X[:, :-1] if self.has_bias else X), Q.detach().numpy()


def update_error_bounds(torch, problem, X, labels, n_classes):
    """Each row's first-order relative error bound at an exact fit:
    ``5 sqrt(sum_k w_ik ((u_k . r)^2 + s^2) / sigma_k^2) / ||x_i||`` over the
    singular triplets ``(u_k, sigma_k, v_k)`` of the Jacobian ``J`` of the
    simulated steps (``w_ik``: the weight of row ``i``'s coordinates, mapped
    to its inputs, in ``v_k``; ``(u_k . r) / sigma_k`` the Gauss-Newton step
    still to go along ``v_k``; ``s^2 = ||r||^2 / (len(r) - n)`` the residual's
    variance, whose standard error along ``v_k`` is ``s / sigma_k``), each
    ``sigma_k`` floored at ``n eps sigma_1`` (a direction ``J`` does not see
    is as loose as the round-off allows, not dropped as a pseudo-inverse
    would).

    The residual alone does not pin a row: two near-duplicate samples (1e-5
    apart, two epochs of mini-batches of 5) reproduced the returned
    parameters to 2.5e-11 with both rows 8.9e-6 off, along the nearly null
    directions of ``J`` that mix them (bounds above 1e-6 for those two
    only). A bound ``||r|| / sigma_k`` instead would take the parameters'
    rounding, orthogonal to ``J``, for an error: it left exact rows of a
    trained net at lr 0.01 (errors 1e-9) unpinned.
    """
    z = torch.as_tensor(problem.pack(X, np.eye(n_classes)[labels]))
    Jt, r = jacobian(torch, problem, z, 16)
    Jt, r = Jt.numpy(), r.numpy()
    vec, sigma, left_t = np.linalg.svd(Jt, full_matrices=False)
    sigma = np.maximum(sigma, len(sigma) * np.finfo(float).eps * sigma[0])
    # per direction: the Gauss-Newton step still to go, (u_k . r) / sigma_k,
    # and the standard error of noise of the residual's size, s / sigma_k
    s2 = float(r @ r) / max(len(r) - len(sigma), 1)
    spread = ((left_t @ r) ** 2 + s2) / sigma ** 2
    n, r_dims = len(X), problem.unknowns.basis.shape[0]
    M = problem.unknowns.basis.numpy() @ problem.U.numpy().T  # coords -> inputs
    if problem.has_bias:
        M = M[:, :-1]
    bounds = np.empty(n)
    for i in range(n):
        mapped = vec[i * r_dims:(i + 1) * r_dims].T @ M  # (n_unknowns, n_inputs)
        variance = float(np.sum(np.sum(mapped ** 2, axis=1) * spread))
        bounds[i] = STANDARD_ERRORS * np.sqrt(variance) / max(
            np.linalg.norm(X[i]), np.finfo(float).tiny)
    return bounds
