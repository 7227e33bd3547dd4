"""The set of exact columns of a two-slope layer found so far (F9).

Each column is a sample's dual vector ``c`` and signal ``w`` (``z = (c, w)``,
unit norm) with the pattern it fits, ``(P c)_j = (A w)_j`` where the sample
is active and ``rho (A w)_j`` where not (:mod:`skrecon._relu_patterns`,
which runs the trials). :class:`ColumnSet` holds them in one
parametrisation of the signals (general, or summing to zero for softmax
cross-entropy) and does what the trials need of them: the trial equations,
the test of candidates on every neuron, the polish of a pattern's null
vector, the refinement of its slopes, the misfit its own share of the
round-off explains, and the test for a column found again.
"""

import numpy as np

__all__ = ["ROW_TOL", "ColumnSet"]

# a row fits when its residual is below this fraction of the column's
# root-mean-square size (the exact test follows, on all rows)
ROW_TOL = 1e-6
# on a gradient exact to its round-off, a column whose dual vector is within
# this sine of a found one's and whose slopes differ on at most this share
# of the neurons is that sample again (measured, float32 ReLU at trained
# weights, B = 16: repeats at sines 3e-4 to 2.3e-2 and 3 to 10 of 1024
# neurons, then 11 and 12 of 1024 with the trials iterated; distinct
# samples at sines 0.6 to 1 and 130 to 300 neurons; B = 32 with the weakest
# samples' columns accepted at their own round-off
# (:mod:`skrecon._relu_patterns`): their repeats at sines 0.017
# to 0.045 and 3.0 to 7.1 % of the neurons (leaky ReLU), distinct samples
# at sines 0.34 and above (and 7 % of the neurons and above: the sine
# decides, the share only bounds a repeat's wrong slopes)
_SAME_SIN = 0.1
_SAME_SHARE = 0.1
# a null vector ``(c, w)`` (unit norm, ``P`` scaled to the units of ``A``)
# whose dual part is below this is no sample's column
_MIN_DUAL = 1e-8


def _zero_sum_basis(K):
    """Orthonormal ``(K, K - 1)`` basis of the vectors whose entries sum to 0."""
    Q = np.linalg.qr(np.vstack([np.ones(K), np.eye(K)[:-1]]).T)[0]
    return Q[:, 1:]


class ColumnSet:
    """The columns found so far, in one parametrisation of the signals."""

    def __init__(self, P, A, ratio, zero_sum, row_tol=ROW_TOL):
        self.ratio, self.zero_sum, self.row_tol = ratio, zero_sum, row_tol
        self.noisy = row_tol > ROW_TOL
        self.misfits = []
        self.N = _zero_sum_basis(A.shape[1]) if zero_sum else np.eye(A.shape[1])
        self.An = A @ self.N
        # an orthonormal basis of col(P) in the units of A, so that the
        # equations are well scaled (the samples' signals span orders of
        # magnitude): P = Q R, and a dual vector c of Q is R^{-1} c for P
        Q, self.R = np.linalg.qr(P)
        self.gamma = float(np.linalg.norm(self.An) / np.sqrt(P.shape[1]))
        self.P = Q * self.gamma
        self.n_dims = P.shape[1]
        self.n_unknowns = self.n_dims + self.An.shape[1]
        self.Z = np.empty((0, self.n_unknowns))  # (c, w), unit norm
        self.active = np.empty((0, P.shape[0]), dtype=bool)
        # unit rows of [P, -An]: the equations of the "active" pattern
        rows = np.hstack([self.P, -self.An])
        self.norms = np.linalg.norm(rows, axis=1)
        self.usable = self.norms > 0
        self.rows = rows / np.where(self.usable, self.norms, 1.0)[:, None]

    def trial_matrices(self, row_sets):
        """``(T, n_unknowns - 1, n_unknowns)``: each trial's equations."""
        return self.rows[np.asarray(row_sets)]

    def cover(self, rows, pool, rng, prefer=None):
        """Swap rows of ``rows`` (indices into ``pool``) so that every found
        column's pattern varies on them: a found sample whose pattern is
        constant on the rows is a second null vector (``(c_f, w_f)``
        where it is active, ``(c_f, rho w_f)`` where not), and the trial
        would return a mixture."""
        if not len(self.Z):
            return rows
        on = self.active[:, pool]  # (n_found, len(pool))
        for _ in range(len(rows) // 2):
            sub = on[:, rows]
            constant = np.all(sub, axis=1) | ~np.any(sub, axis=1)
            if not np.any(constant):
                break
            f = rng.choice(np.flatnonzero(constant))
            other = on[f] != sub[f, 0]
            if prefer is not None and np.any(other & prefer):
                other &= prefer  # rows the target activates
            other = np.flatnonzero(other)
            if not len(other):
                break
            rows[rng.integers(len(rows))] = rng.choice(other)
        return rows

    def test(self, Z):
        """Share of the neurons on which each candidate ``(T, n_unknowns)``
        fits its pattern equation, and the pattern (True: active)."""
        beta = self.P @ Z[:, :self.n_dims].T  # (m, T)
        a = self.An @ Z[:, self.n_dims:].T
        size = np.sqrt(np.mean(a * a, axis=0)) + np.finfo(float).tiny
        on = np.abs(beta - a)
        off = np.abs(beta - self.ratio * a)
        fit = np.minimum(on, off) <= self.row_tol * size
        share = np.mean(fit, axis=0)
        # a trial's null vector without a dual vector fits no sample
        dual = np.linalg.norm(Z[:, :self.n_dims], axis=1)
        share[~(dual > _MIN_DUAL * np.linalg.norm(Z, axis=1))] = 0.0
        return share, on <= off

    def polish(self, active):
        """One null vector over all neurons for the pattern ``active``:
        ``(z, relative misfit)``; the misfit is ``inf`` for a null vector
        without a dual vector (``c = 0``: a ReLU pattern active on too few
        neurons leaves ``A w = 0`` there solvable, and every such ``(0, w)``
        fits with a zero misfit, yet no sample has it; a trained ReLU net,
        H = 256, B = 32: a guess active on no neuron was kept as a column)."""
        s = np.where(active, 1.0, self.ratio)
        M = np.hstack([self.P, -s[:, None] * self.An])
        z = np.linalg.svd(np.linalg.qr(M, mode="r"))[2][-1]
        if not np.linalg.norm(z[:self.n_dims]) > _MIN_DUAL * np.linalg.norm(z):
            return z, np.inf
        beta = self.P @ z[:self.n_dims]
        misfit = np.linalg.norm(beta - s * (self.An @ z[self.n_dims:]))
        return z, float(misfit / max(np.linalg.norm(beta), np.finfo(float).tiny))

    def noise_misfit(self, z, noise):
        """The relative misfit that round-off of relative size ``noise``
        (spread evenly over ``P``) leaves on the column ``z``: the dual
        vector ``c`` in the units of ``P`` meets noise of Frobenius norm
        ``noise ||P||_F``, so its column ``beta = P c`` is off by about
        ``noise ||P||_F ||c|| / sqrt(B)``, over ``||beta||``. A weak
        sample's column (a large ``c`` for a small ``beta``) carries more."""
        c = np.linalg.solve(self.R, z[:self.n_dims] * self.gamma)
        beta = np.linalg.norm(self.P @ z[:self.n_dims])
        return float(noise * np.linalg.norm(self.R) * np.linalg.norm(c)
                     / (np.sqrt(self.n_dims) * max(beta, np.finfo(float).tiny)))

    def repeats(self, z):
        """Whether the dual vector of ``z`` is within ``_SAME_SIN`` of a
        found one's (the same sample again, on a noisy gradient)."""
        if not len(self.Z):
            return False
        c = z[:self.n_dims] / np.linalg.norm(z[:self.n_dims])
        O = self.Z[:, :self.n_dims]
        cos = np.abs(O @ c) / np.linalg.norm(O, axis=1)
        return bool(np.any(np.sqrt(np.maximum(0.0, 1 - cos**2)) < _SAME_SIN))

    def refine(self, z, active, misfit, max_steps=4):
        """The pattern the polished column fits best, polished again while
        that lowers the misfit: ``(z, active, misfit)``. On a gradient
        exact to its round-off a column is accepted at a misfit of up to
        the trials' tolerance, many times the noise (a weak sample's), where a strong
        sample's column still has a few wrong slopes (measured, float32
        leaky ReLU at trained weights, B = 32: up to 12 of 1024 neurons, at
        misfits 1e-3 instead of 1e-7); each wrong slope shows as the row
        the other slope fits better. (Leaky ReLU only: a ReLU row inactive
        for the sample is an exact 0 whatever its signal, so where the
        signal is at the round-off both slopes fit and the refined pattern
        follows the noise: measured, float32 ReLU at trained weights,
        B = 32, 24 columns instead of 30, three times slower.)"""
        for _ in range(max_steps):
            new = self.test(z[None])[1][:, 0]
            if np.array_equal(new, active):
                break
            z_new, misfit_new = self.polish(new)
            if not misfit_new < misfit:
                break
            z, active, misfit = z_new, new, misfit_new
        return z, active, misfit

    def duals(self):
        """The found dual vectors in the units of ``P``: ``(B, n_found)``."""
        return np.linalg.solve(self.R, self.Z[:, :self.n_dims].T * self.gamma)

    def add(self, z, active, misfit, cos_max=1 - 1e-8):
        """Keep a new column; ``False`` for one already found.

        On a gradient exact to its round-off a weak sample's column is
        found again with a dual vector a few 1e-4 to 1e-2 off and a few
        neurons' slopes differing (those where its term is at the
        round-off): such a column is the same sample (distinct samples'
        duals are as far apart as the samples' directions, and their
        patterns differ on a share of the neurons about the angle between
        them over pi), and the one that fits better is kept."""
        c = z[:self.n_dims] / np.linalg.norm(z[:self.n_dims])
        for k, other in enumerate(self.Z):
            o = other[:self.n_dims] / np.linalg.norm(other[:self.n_dims])
            cos = abs(c @ o)
            if cos > cos_max:
                return False
            if (self.noisy and np.sqrt(max(0.0, 1 - cos**2)) < _SAME_SIN
                    and np.sum(self.active[k] != active) <= _SAME_SHARE * len(active)):
                if misfit < self.misfits[k]:
                    self.Z[k], self.active[k], self.misfits[k] = z / np.linalg.norm(z), \
                        active, misfit
                return False
        self.Z = np.vstack([self.Z, z / np.linalg.norm(z)])
        self.active = np.vstack([self.active, active[None]])
        self.misfits.append(misfit)
        return True
