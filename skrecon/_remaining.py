"""The span of the samples not found yet: where the search looks next.

Once samples ``F`` are found, their columns ``beta_f = S(v_f) u_f`` of the
gradient ``P = sum_i beta_i v_i^T`` are known (the signal ``u_f`` is the
best one of the column-space fit, :func:`skrecon._misfit.best_signal`), so
projecting them out,

    Y = (I - Pi_F) P = sum_{i not in F} ((I - Pi_F) beta_i) v_i^T ,

(``Pi_F`` the orthogonal projector onto ``span{beta_f}``) leaves a matrix
whose row space is **exactly** ``span{v_i : i not found}`` (for linearly
independent columns): ``B - |F|`` dimensions, not ``B``. The deflation of
:mod:`skrecon.search` removes the found zeros from the misfit; this also
removes the found directions from the unknowns, so each later search runs
in a space of ``B - |F| - 1`` coordinates (with the bias constraint).

That is what finds the samples a search over all of ``R^B`` rarely does: on
a trained ``3072 -> 1024 -> 8`` tanh net (32x32x3 patches, 20 epochs, B = 32)
the samples with few live neurons (tanh' above 1 % on 19 to 39 % of them)
and near-duplicates (near-white patches 1 to 4 % apart) have basins of a few
per cent of their norm; the search found 19-20 of 32 in its default 144
starts, and with this span (and starts near found samples,
:mod:`skrecon.search`) 32 of 32 in 49-59 (four seeds of the starts).

Everything here is host NumPy, on the search's row subset.
"""

import numpy as np
from scipy import linalg

from ._misfit import best_signal, onto_constraint, orth

__all__ = ["found_column", "remaining_span", "into_span", "span_tangent",
           "span_starts", "near_found"]

# steps (fractions of a found sample's norm) of the starts near found samples
NEAR_STEPS = (0.02, 0.05, 0.1, 0.2, 0.4)


def found_column(v, Q, Omega, A, slopes, bias_mean):
    """The unit column ``S(v) u / ||S(v) u||`` (``(m,)``) of a sample ``v``
    found against the undeflated basis ``Q``, or ``None`` where ``S(v)``
    vanishes."""
    u = best_signal(v, Q, Omega, A, slopes, bias_mean)
    if u is None:
        return None
    y = slopes(Omega @ v + bias_mean, second=False)[0] * (A @ u)
    norm = float(np.linalg.norm(y))
    return y / norm if norm > 0 and np.isfinite(norm) else None


def remaining_span(P, columns, n_remaining):
    """Orthonormal basis ``(n_dims, n_remaining)`` of the row space of ``P``
    with the found ``columns`` (``(m, n_found)``) projected out: the span of
    the samples not found yet; ``None`` where it is not defined (no column,
    nothing remaining, or a non-finite projection)."""
    if columns.shape[1] == 0 or n_remaining < 1:
        return None
    Pi = orth(columns)
    Y = P - Pi @ (Pi.T @ P)
    if not np.all(np.isfinite(Y)):
        return None
    return np.linalg.svd(Y, full_matrices=False)[2][:n_remaining].T


def span_tangent(Z, fixed):
    """Steps inside ``col(Z)`` that keep the constraint ``e . v = c`` (all of
    ``col(Z)`` without one), as an ``(n_dims, n_free)`` basis; ``None`` where
    ``col(Z)`` is (almost) orthogonal to ``e`` (no point of it meets the
    constraint)."""
    if fixed is None:
        return Z
    ez = np.asarray(fixed[0], dtype=float) @ Z
    if not np.linalg.norm(ez) > 1e-8 * np.linalg.norm(fixed[0]):
        return None
    return Z @ linalg.null_space(ez[None, :])


def into_span(v, Z, fixed):
    """The start ``v`` projected onto ``col(Z)`` and, with a constraint
    ``e . v = c``, scaled onto it (a direction, as the search's starts are);
    ``None`` where the projection (almost) misses the constraint."""
    w = Z @ (Z.T @ v)
    if fixed is None:
        return w
    e, target = np.asarray(fixed[0], dtype=float), float(fixed[1])
    ew = float(e @ w)
    if not abs(ew) > 1e-8 * np.linalg.norm(e) * np.linalg.norm(w):
        return None
    return w * (target / ew)


def span_starts(P, columns, starts, fixed):
    """``(inner, moved)``: the tangent basis of the span of the samples not
    found (:func:`remaining_span` of ``P`` with the found ``columns``
    projected out, on the constraint) and the ``starts`` moved into it (as
    directions: before the constraint moved them along its normal, a
    shared offset that a projection would keep); ``(None, [None, ...])``
    where there is no such span."""
    none = (None, [None] * len(starts))
    Z = remaining_span(P, columns, P.shape[1] - columns.shape[1])
    inner = None if Z is None else span_tangent(Z, fixed)
    if inner is None:
        return none
    moved = [into_span(v, Z, fixed) for v in starts]
    return inner, [w if w is not None else onto_constraint(Z @ (Z.T @ v), fixed)
                   for w, v in zip(moved, starts)]


def near_found(d, found, number):
    """A start near found sample ``number % len(found)``: that sample plus
    a step along ``d`` of a fraction of its norm (cycling through
    :data:`NEAR_STEPS`)."""
    v = found[number % len(found)]
    step = NEAR_STEPS[(number // len(found)) % len(NEAR_STEPS)]
    norm = float(np.linalg.norm(d))
    return v if not norm > 0 else v + (step * float(np.linalg.norm(v)) / norm) * d
