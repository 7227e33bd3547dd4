"""The per-sample column-space search with deflation (the engine).

In span coordinates the gradient is ``P = sum_i beta_i v_i^T`` with
``beta_i = (A u_i) * sigma'(Omega v_i + b0)`` (an ``m``-vector: one entry per
neuron). For linearly independent samples ``col(P) = span{beta_1 ... beta_B}``,
so **each sample alone** satisfies: some vector of the family

    S(v) = diag(sigma'(Omega v + b0)) A          (m x K)

lies in ``col(P)``. With ``Q`` an orthonormal basis of ``col(P)`` the misfit

    phi(v) = min_u ||(I - Q Q^T) S(v) u||^2 / ||S(v) u||^2

vanishes exactly at the samples (generically, for ``m >> B + K``): a search
over the ``B`` coordinates of one sample instead of the ``B (B + K)`` of the
joint fit, and each sample is a separate global minimum. Gauss-Newton
(Levenberg-Marquardt) on the normalised residual ``r(v) = (I - Q Q^T) g``,
``g = S(v) u* / ||S(v) u*||``, with the Jacobian

    J = (I - Q Q^T) (I - g g^T) diag(sigma''(Omega v + b0) * (A u*)) Omega / ||S(v) u*||

(``u*`` held at its optimum: exact for ``K = 1``, Kaufman's variable-projection
approximation for ``K > 1``) converges in about ten evaluations.

**Deflation.** Once ``v_1 ... v_k`` are found, ``N`` (an orthonormal basis of
the complement of their span in ``R^B``) gives ``col(P N) = span{beta_i : i
not found}``: searching with ``Q = orth(P N)`` removes the zeros already
found, so every start can only land on a new sample.

**The span of the samples not found** (:mod:`skrecon._remaining`). The
found samples' columns, projected out of ``P``, leave a matrix whose row
space is exactly ``span{v_i : i not found}``: each later search of a
smooth activation runs there first (its start projected onto it), then
on in all coordinates, and, where the span's minimum is spurious, from the
start itself as before. Every other random start is put near a found
sample instead (a step of 2 to 40 % of its norm along the random
direction): natural batches hold near-duplicates, whose basins are narrow.

**Piecewise-linear activations** (ReLU, leaky ReLU) have ``sigma'' = 0``
almost everywhere and no Jacobian: each jump of ``sigma'`` is smoothed by a
logistic step whose width shrinks geometrically from a fraction of the
pre-activation's spread (a homotopy); the same search runs at each width.

The search runs on a row subset of the neurons (a few thousand rows carry
all of the ``B`` unknowns), each sample found is polished on all rows (or a
larger subset, for many outputs) with
the undeflated basis, and its misfit there is reported. Starts are run in
rounds of independent searches (joblib); a round's starts all see the same
deflated basis, and its results are taken in start order, so the samples
found do not depend on ``n_jobs`` or on the backend.

Everything here is ``B``-sized per neuron and runs on the host (NumPy), on a
copy of the projected query.

References
----------
.. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from Model
   Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.
.. [2] L. Kaufman, "A variable projection method for solving separable
   nonlinear least squares problems", BIT 15, 1975.
"""

from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.utils.parallel import Parallel, delayed

from ._threads import blas_threads
from ._gradient_model import check_finite_and_activation
from ._misfit import (DUPLICATE_ANGLE, DUPLICATE_ANGLE_PIECEWISE, Slopes,
                      best_signal, is_repeat, misfit_and_jacobian, onto_constraint,
                      orth, sample_misfit, sample_misfits)
from ._lm import lm_driver
from ._remaining import found_column, near_found, span_starts
from .refine import is_piecewise_linear

__all__ = ["column_space_misfit", "search_samples", "SearchResult"]

# smoothing widths of the homotopy for piecewise-linear activations, as
# fractions of the pre-activation's std at the start of each stage
_WIDTHS = (0.3, 0.1, 0.03, 0.01, 0.003)
# and the finer widths at which each sample found is polished on all rows
_FINE_WIDTHS = (0.001, 0.0003)
# LM evaluations per start (per stage for the homotopy) and for the polish
_SEARCH_ITER = 40
_POLISH_ITER = 20
# a misfit this small is float64 round-off: the sample is exact
_ROUND_OFF = 1e-24
# a search in the span of the samples not found yet (skrecon._remaining)
# that ends below this misfit (or below the acceptance level, if higher)
# but above round-off is searched on from there in all coordinates (the
# span is exact only as far as the found samples are)
_SPAN_FOLLOW = 1e-6


def _normal_equations(v, Q, Omega, Omega_t, a, slopes, bias_mean):
    """Gauss-Newton system ``(J^T J, -J^T r, ||r||^2 / 2)`` of the misfit of
    one output in the tangent coordinates ``Omega_t = Omega T``, or
    ``None`` where ``S(v)`` vanishes.

    :func:`skrecon._misfit.misfit_and_jacobian`'s Jacobian is ``J = (I - Q Q^T) M`` with ``M = (I - g
    g^T) J0``, ``J0 = diag(sigma'' a / ||y||) Omega_t``; with ``c = J0^T g``
    and ``H = Q^T M = Q^T J0 - (Q^T g) c^T`` its normal equations are
    ``J^T J = J0^T J0 - c c^T - H^T H`` and ``J^T r = J0^T r - (g.r) c``
    (``r`` is orthogonal to ``col(Q)``): no ``(rows, n)`` projection of the
    Jacobian is formed, a third of the flops.
    """
    t = Omega @ v + bias_mean
    s1, s2 = slopes(t)
    y = s1 * a
    norm = float(np.sqrt(y @ y))
    if not norm > 0 or not np.isfinite(norm):
        return None
    g = y / norm
    Qg = Q.T @ g
    r = g - Q @ Qg
    J0 = (s2 * a / norm)[:, None] * Omega_t
    c = g @ J0
    H = Q.T @ J0 - np.outer(Qg, c)
    JTJ = J0.T @ J0 - np.outer(c, c) - H.T @ H
    JTr = J0.T @ r - float(g @ r) * c
    return JTJ, -JTr, 0.5 * float(r @ r)


def _check_problem(P, Omega, A, activation):
    """``(P, Omega, A)`` as finite float arrays of matching shapes, or a
    ValueError that says what is wrong."""
    P, Omega, A = (np.asarray(M, dtype=float) for M in (P, Omega, A))
    if P.ndim != 2 or Omega.shape != P.shape:
        raise ValueError(
            f"P and Omega must be 2-D arrays of one shape (neurons, span "
            f"coordinates), got {P.shape} and {Omega.shape}.")
    if A.ndim != 2 or A.shape[0] != P.shape[0]:
        raise ValueError(
            f"A must be a 2-D array with one row per neuron ({P.shape[0]}, K), "
            f"got {A.shape}.")
    check_finite_and_activation(activation, P=P, Omega=Omega, A=A)
    return P, Omega, A


def column_space_misfit(v, Q, Omega, A, activation, bias_mean=0.0):
    """``phi(v)``: how far the slope family of ``v`` is from a column space.

    Parameters
    ----------
    v : ndarray of shape (n_dims,)
        A candidate sample in span coordinates (scaled, bias-augmented when
        the layer has a bias).
    Q : ndarray of shape (m, n_cols)
        Orthonormal basis of the column space (of ``P``, or of a deflated
        ``P N``).
    Omega : ndarray of shape (m, n_dims)
        The neurons' weights in span coordinates.
    A : ndarray of shape (m, K)
        Output weights.
    activation : Activation
    bias_mean : float, default=0.0
        Constant part of the pre-activation.

    Returns
    -------
    phi : float
        ``min_u ||(I - Q Q^T) S(v) u||^2 / ||S(v) u||^2`` in ``[0, 1]``
        (dimensionless); 0 at a sample of the batch, 1 where ``S(v)``
        vanishes.

    Raises
    ------
    ValueError
        If the shapes do not match, an input holds NaN or inf, or
        ``activation`` is not an :class:`~skrecon.activations.Activation`.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import gradient_model
    >>> from skrecon.search import column_space_misfit
    >>> rng = np.random.default_rng(0)
    >>> tanh = get_activation("tanh")
    >>> V, U = rng.standard_normal((2, 2)), rng.standard_normal((2, 1))
    >>> Omega, A = rng.standard_normal((500, 2)), rng.standard_normal((500, 1))
    >>> Q = np.linalg.qr(gradient_model(V, U, Omega, A, tanh))[0]
    >>> bool(column_space_misfit(V[0], Q, Omega, A, tanh) < 1e-20)
    True
    >>> bool(column_space_misfit(V[0] + 0.3, Q, Omega, A, tanh) > 1e-4)
    True
    """
    Q, Omega, A = (np.asarray(M, dtype=float) for M in (Q, Omega, A))
    if not (Q.ndim == Omega.ndim == A.ndim == 2
            and Q.shape[0] == Omega.shape[0] == A.shape[0]):
        raise ValueError(
            f"Q, Omega and A must be 2-D arrays with one row per neuron, got "
            f"shapes {Q.shape}, {Omega.shape} and {A.shape}.")
    v = np.asarray(v, dtype=float)
    if v.shape != (Omega.shape[1],):
        raise ValueError(f"v must have shape ({Omega.shape[1]},), got {v.shape}.")
    check_finite_and_activation(activation, v=v, Q=Q, Omega=Omega, A=A)
    if not np.allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-8):
        raise ValueError("Q must have orthonormal columns (e.g. np.linalg.qr(P)[0]); "
                         "its columns are not orthonormal.")
    return sample_misfit(v, Q, Omega, A, Slopes(activation), bias_mean)


def _search_one(v, Q, Omega, A, activation, stages, bias_mean, tangent, max_iter,
                skip_below=0.0):
    """Minimise ``phi`` from ``v`` by LM in the tangent space, stage by stage.

    The parameters are ``v`` (in the tangent space of the bias constraint)
    and, for ``K > 1`` outputs, the signal ``u`` (started at its best value
    for the start): the residual is then bilinear-like in ``(v, u)`` and
    Gauss-Newton converges quadratically to a zero. ``stages`` are the
    smoothing widths (fractions of the pre-activation's std; ``0``: the
    activation itself). Returns ``(v, phi)`` at the last stage's solution
    (``phi`` of that stage; ``inf`` when it failed), or the start itself
    with its unsmoothed ``phi`` when that is already below ``skip_below``
    (a sample read off the gradient, e.g. by :mod:`skrecon._crossings`,
    needs no homotopy).
    """
    exact = Slopes(activation)
    u = best_signal(v, Q, Omega, A, exact, bias_mean)
    if u is None:
        return v, np.inf
    # a scale-free activation (ReLU) without a constraint leaves the norm
    # free: the steps may drift along it (to 1e9), so the result keeps the
    # start's norm
    free_norm = (getattr(activation, "scale_free", False)
                 and tangent.shape[0] == tangent.shape[1])
    start_norm = float(np.linalg.norm(v))
    if tangent.shape[1] == 0 or skip_below > 0:
        out = misfit_and_jacobian(v, u, Q, Omega, A, exact, bias_mean, jacobian=False)
        phi = np.inf if out is None else float(out[0] @ out[0])
        if tangent.shape[1] == 0 or phi < skip_below:
            # B = 1 with a bias (the constraint is the sample), or a start
            # that is a sample already
            return v, phi
    wide = A.shape[1] > 1
    n_free = tangent.shape[1]
    # one output: the weights in the tangent coordinates, once per search
    Omega_t = None if wide else Omega @ tangent
    for width in stages:
        h = width * float(np.std(Omega @ v + bias_mean))
        if width > 0 and not (np.isfinite(h) and h > 0):
            return v, np.inf
        slopes = Slopes(activation, h)
        v0, u0 = v, u

        def unpack(x, v0=v0, u0=u0):
            return v0 + tangent @ x[:n_free], (u0 + x[n_free:]) if wide else u0

        def normal_equations(x, slopes=slopes):
            if not wide:
                return _normal_equations(unpack(x)[0], Q, Omega, Omega_t, A[:, 0],
                                         slopes, bias_mean)
            out = misfit_and_jacobian(*unpack(x), Q, Omega, A, slopes, bias_mean)
            if out is None:
                return None
            r, J = out
            J = np.hstack([J[:, :-A.shape[1]] @ tangent, J[:, -A.shape[1]:]]) if wide \
                else J @ tangent
            return J.T @ J, -(J.T @ r), 0.5 * float(r @ r)

        def cost(x, slopes=slopes):
            out = misfit_and_jacobian(*unpack(x), Q, Omega, A, slopes, bias_mean, jacobian=False)
            return np.inf if out is None else 0.5 * float(out[0] @ out[0])

        x0 = np.zeros(n_free + (A.shape[1] if wide else 0))
        x, c, _, _ = lm_driver(x0, normal_equations, cost, max_iter=max_iter,
                               atol=1e-30, ftol=1e-12, xtol=1e-14,
                               scale=float(np.linalg.norm(v0)))
        v, u = unpack(x)
        phi = 2.0 * c
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(u))):
            return v, np.inf
        if free_norm and np.linalg.norm(v) > 0:
            v = v * (start_norm / np.linalg.norm(v))
    return v, phi


def _search_start(v, Q, Omega, A, activation, stages, bias_mean, tangent, skip_below,
                  inner=None, v_inner=None, follow=0.0, accept=0.0):
    """One start's search in all coordinates (``tangent``); with ``inner``
    (the tangent basis of the span of the samples not found, and
    ``v_inner`` the start moved into it) first there, then on in all
    coordinates from where it ends when that is below ``follow`` but above
    round-off, and from ``v`` itself (the plain search) when that did not
    reach ``accept``, whose result is then returned (a rejected search is a
    completion candidate: one in the span of a batch size forced above the
    spectrum fits its noise directions, and a joint polish from it fits the
    noise, 7.7e-8 against 6.5e-9 on four digits at 1e-8 noise)."""
    if inner is None:
        return _search_one(v, Q, Omega, A, activation, stages, bias_mean, tangent,
                           _SEARCH_ITER, skip_below)
    w, phi = _search_one(v_inner, Q, Omega, A, activation, stages, bias_mean, inner,
                         _SEARCH_ITER, skip_below)
    if _ROUND_OFF <= phi < follow and np.all(np.isfinite(w)):
        w, phi = _search_one(w, Q, Omega, A, activation, stages, bias_mean, tangent,
                             _SEARCH_ITER, skip_below)
    if phi < accept and np.all(np.isfinite(w)):
        return w, phi
    # the span's own minima can be spurious (near-duplicate samples, a few
    # tenths of a per cent apart, sit where a start scaled onto the
    # constraint rarely lands): the start as the plain search takes it
    return _search_one(v, Q, Omega, A, activation, stages, bias_mean, tangent,
                       _SEARCH_ITER, skip_below)


def _deflated_basis(P, found):
    """``orth(P N)`` with ``N`` a basis of the complement of ``span(found)``."""
    if not found:
        return orth(P)
    N = linalg.null_space(np.array(found))
    return orth(P @ N)


class SearchResult:
    """Outcome of :func:`search_samples`.

    Parameters
    ----------
    V : ndarray of shape (n_found, n_dims)
        The samples found, in the order they were found, polished on all
        neurons.
    misfits : ndarray of shape (n_found,)
        ``phi`` of each sample on all neurons, with the undeflated basis.
    candidates : ndarray of shape (n_candidates, n_dims)
        The best rejected search results (lowest misfit first): completions
        when fewer than the batch's samples were found.
    candidate_misfits : ndarray of shape (n_candidates,)
        Their misfits (deflated, on the row subset).
    n_starts : int
        Starts searched.

    Attributes
    ----------
    V, misfits, candidates, candidate_misfits, n_starts
        As above.
    n_found : int
        ``len(V)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.search import SearchResult
    >>> SearchResult(np.eye(2), np.zeros(2), np.empty((0, 2)), np.empty(0), 3)
    SearchResult(n_found=2, n_starts=3, worst_misfit=0)
    """

    def __init__(self, V, misfits, candidates, candidate_misfits, n_starts):
        self.V = V
        self.misfits = misfits
        self.candidates = candidates
        self.candidate_misfits = candidate_misfits
        self.n_starts = int(n_starts)
        self.n_found = len(V)

    def __repr__(self):
        worst = float(np.max(self.misfits)) if len(self.misfits) else float("nan")
        return (f"SearchResult(n_found={self.n_found}, n_starts={self.n_starts}, "
                f"worst_misfit={worst:.3g})")


def _tangent(n_dims, fixed):
    """Basis of the steps that keep ``e . v = c`` (identity without it)."""
    if fixed is None:
        return np.eye(n_dims)
    return linalg.null_space(np.asarray(fixed[0], dtype=float)[None, :])


def search_samples(P, Omega, A, activation, bias_mean=0.0, *, n_samples=None,
                   starts=None, random_starts=None, fixed=None, rows=None,
                   polish_rows=None,
                   accept=1e-10, exact_accept=None, n_init=1, max_starts=None,
                   remaining=True, n_jobs=None, verbose=0, progress=None):
    """Find the batch's samples one at a time by the column-space search.

    Parameters
    ----------
    P : ndarray of shape (m, n_dims)
        The projected gradient (rows: neurons; columns: span coordinates).
    Omega : ndarray of shape (m, n_dims)
        The neurons' weights in the same coordinates.
    A : ndarray of shape (m, K)
        Output weights.
    activation : Activation
    bias_mean : float, default=0.0
        Constant part of the pre-activation.
    n_samples : int or None, default=None
        Samples to find; ``None``: ``n_dims``.
    starts : ndarray of shape (n_starts, n_dims) or None, default=None
        Starts searched first, in order (e.g. the moment tensor's factors).
    random_starts : callable or None, default=None
        ``random_starts(k)`` returns ``k`` more starts ``(k, n_dims)``; called
        once per round after ``starts`` are used up. ``None``: no more.
    fixed : tuple (e, c) or None, default=None
        Every sample satisfies ``e . v = c`` (the bias input is 1): searches
        move in that hyperplane, which fixes scale and sign.
    rows : ndarray of int or None, default=None
        Neurons the searches run on; ``None``: all.
    polish_rows : ndarray of int or None, default=None
        Neurons each sample found is polished and its misfit reported on;
        ``None``: all.
    accept : float, default=1e-10
        A search whose (deflated, row-subset) misfit ``phi`` is below this
        has found a sample.
    exact_accept : float or None, default=None
        For a piecewise-linear activation: a start whose unsmoothed misfit
        is already below this is a sample, taken without the homotopy (the
        smoothing would move it). ``None``: every start is searched.
    n_init : int, default=1
        Starts per round: searched independently (in parallel with
        ``n_jobs``) against the same deflated basis. One: every search sees
        the samples found before it deflated.
    max_starts : int or None, default=None
        Bound on the starts searched; ``None``: ``4 * n_samples + 16``.
    remaining : bool, default=True
        Whether, once samples are found, searches run first in the span of
        the samples not found and every other random start is put near a
        found sample (smooth activations). ``False`` where ``n_samples``
        exceeds the samples the gradient holds: that span is then noise.
    n_jobs : int or None, default=None
        joblib jobs for the searches of a round and the polish.
    verbose : int, default=0
        Print one line per round and per sample found when positive.
    progress : callable or None, default=None
        ``progress("search", n_found, n_samples)`` after each round.

    Returns
    -------
    result : SearchResult

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.refine import gradient_model
    >>> from skrecon.search import search_samples
    >>> rng = np.random.default_rng(0)
    >>> tanh = get_activation("tanh")
    >>> V, U = rng.standard_normal((3, 3)), rng.standard_normal((3, 1))
    >>> Omega, A = rng.standard_normal((2000, 3)), rng.standard_normal((2000, 1))
    >>> P = gradient_model(V, U, Omega, A, tanh)
    >>> result = search_samples(P, Omega, A, tanh,
    ...                         random_starts=lambda k: rng.standard_normal((k, 3)))
    >>> result.n_found
    3
    >>> found = result.V / np.linalg.norm(result.V, axis=1, keepdims=True)
    >>> true = V / np.linalg.norm(V, axis=1, keepdims=True)
    >>> bool(np.allclose(np.sort(np.abs(found @ true.T).max(axis=1)), 1.0))
    True
    """
    P, Omega, A = _check_problem(P, Omega, A, activation)
    m, n_dims = P.shape
    for name, M in (("P", P), ("A", A)):
        if not np.any(M):
            raise ValueError(f"{name} is all zero: a gradient with no signal holds "
                             "no sample to search for.")
    for name, value in (("n_samples", n_samples), ("n_init", n_init),
                        ("max_starts", max_starts)):
        if value is None and name != "n_init":
            continue
        if isinstance(value, bool) or not (isinstance(value, Integral) or (
                isinstance(value, Real) and np.isfinite(value)
                and float(value).is_integer())):
            raise ValueError(f"{name} must be a whole number, got {value!r}.")
    for name, value in (("accept", accept), ("exact_accept", exact_accept),
                        ("bias_mean", bias_mean)):
        if value is not None and not (isinstance(value, Real) and np.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    batch_size = n_dims if n_samples is None else int(n_samples)
    n_init = int(n_init)
    max_starts = 4 * batch_size + 16 if max_starts is None else int(max_starts)
    if not 1 <= batch_size <= n_dims or n_init < 1 or max_starts < 1:
        raise ValueError(
            f"n_samples must lie in [1, {n_dims}] and n_init, max_starts be at "
            f"least 1; got {batch_size}, {n_init} and {max_starts}.")
    if starts is not None and np.ndim(starts) != 2 or (
            starts is not None and np.shape(starts)[1] != n_dims):
        raise ValueError(
            f"starts must have shape (n_starts, {n_dims}), got {np.shape(starts)}.")
    if starts is None and random_starts is None:
        raise ValueError("Give starts, random_starts or both: there is nothing to "
                         "search from.")
    if starts is not None and not np.all(np.isfinite(starts)):
        raise ValueError("starts hold NaN or inf.")
    if fixed is not None and (np.shape(fixed[0]) != (n_dims,)
                              or not np.any(np.asarray(fixed[0]) != 0)
                              or not np.all(np.isfinite(fixed[0]))
                              or not np.isfinite(fixed[1])):
        raise ValueError(
            f"fixed must be (e, c) with e a finite nonzero vector of shape "
            f"({n_dims},) and c a finite number.")
    sub = (_check_rows(None, "P", m, n_dims, A) if rows is None
           else _check_rows(rows, "rows", m, n_dims, A))
    P_sub, Omega_sub, A_sub = P[sub], Omega[sub], A[sub]
    tangent = _tangent(n_dims, fixed)
    piecewise = is_piecewise_linear(activation)
    stages = _WIDTHS if piecewise else (0.0,)
    skip_below = exact_accept if piecewise and exact_accept is not None else 0.0
    polish_stages = _WIDTHS[-1:] + _FINE_WIDTHS if piecewise else (0.0,)
    # the polish's neurons (all of them without a copy)
    keep = (slice(None) if polish_rows is None
            else _check_rows(polish_rows, "polish_rows", m, n_dims, A))
    P_keep, Omega_keep, A_keep = P[keep], Omega[keep], A[keep]
    queue = [] if starts is None else [s for s in np.asarray(starts, dtype=float)]
    found, misfits, rejected, settled = [], [], [], []
    # zeros of the deflated misfit that the polish took onto an earlier
    # sample: a later search that ends there again is a repeat
    repeats = []
    Q_keep = None
    # the found samples' unit columns on the search's rows, and the basis
    # they are read against
    columns, Q_sub = [], None
    follow = max(_SPAN_FOLLOW, accept)
    # the starts put near found samples (by id): a rejected one ends by a
    # found sample, no completion of a missing one (four digits, batch_size
    # 6: the joint polish of such rows did not converge)
    n_drawn, near = 0, set()
    use_remaining = bool(remaining) and not piecewise
    n_starts, round_no = 0, 0
    cos_dup = np.cos(np.radians(DUPLICATE_ANGLE_PIECEWISE if piecewise
                                else DUPLICATE_ANGLE))
    # A round's starts all see the same deflated basis; when they keep
    # landing on one sample (a dominant basin) the rounds shrink, down to
    # one start (sequential deflation), and grow back as they pay off. The
    # sizes follow the results alone, so n_jobs does not change them.
    # A start that ends on a sample another start of its round found is
    # searched once more, first in the next round, against the basis
    # deflated of it (else rounds of starts in one basin spend the given
    # starts: ReLU from the tensor's 8 factors in rounds of 2 found 4 of 8).
    k = n_init
    again = []
    while len(found) < batch_size and n_starts < max_starts:
        k = min(k, max_starts - n_starts)
        if len(again) + len(queue) < k and random_starts is not None:
            more = np.asarray(random_starts(k - len(again) - len(queue)), dtype=float)
            if more.ndim != 2 or more.shape[1] != n_dims:
                raise ValueError(f"random_starts(k) must return an array of shape "
                                 f"(k, {n_dims}), got {more.shape}.")
            if use_remaining and found:
                # every other random start near a found sample instead, in
                # the random start's direction (natural batches hold
                # near-duplicates, whose basins are a few per cent wide)
                more = [near_found(v, found, n_drawn + i) if (n_drawn + i) % 2 else v
                        for i, v in enumerate(more)]
                near.update(id(v) for i, v in enumerate(more) if (n_drawn + i) % 2)
            n_drawn += len(more)
            queue.extend(more)
        n_again = min(len(again), k)
        batch, again = again[:n_again], again[n_again:]
        batch, queue = batch + queue[:k - n_again], queue[k - n_again:]
        if not batch:
            break
        raw, batch = batch, [onto_constraint(v, fixed) for v in batch]
        Q = _deflated_basis(P_sub, found)
        # the span of the samples not found yet: the found samples' columns
        # projected out of the gradient (smooth activations; the homotopy
        # of a piecewise-linear one keeps all coordinates)
        inner, in_span = None, [None] * len(batch)
        if use_remaining and columns:
            inner, in_span = span_starts(P_sub, np.array(columns).T, raw, fixed)
        with blas_threads(1):
            results = Parallel(n_jobs=n_jobs)(
                delayed(_search_start)(v, Q, Omega_sub, A_sub, activation, stages,
                                       bias_mean, tangent, skip_below, inner, w, follow,
                                       accept)
                for v, w in zip(batch, in_span))
        n_starts += len(batch)
        round_no += 1
        n_before = len(found)
        for number, (origin, start, (v, phi)) in enumerate(zip(raw, batch, results)):
            was_near = id(origin) in near
            near.discard(id(origin))  # (an id is reused once the array is freed)
            if not (np.isfinite(phi) and np.all(np.isfinite(v))):
                continue
            if is_repeat(v, found, cos_dup) or is_repeat(v, repeats, cos_dup):
                if number >= n_again and is_repeat(v, found[n_before:], cos_dup):
                    again.append(origin if use_remaining else start)
                continue
            if phi < accept and len(found) < batch_size:
                found.append(v)
                # a smooth search at round-off on its rows is a sample on
                # every row (its misfit there comes at the end, for all at once)
                settled.append(not piecewise and phi < _ROUND_OFF)
                if verbose:
                    print(f"search: sample {len(found)}/{batch_size} found "
                          f"(misfit {phi:.2e}, start {n_starts})")
            elif not was_near:
                rejected.append((phi, v))
        # the new samples, polished on all rows before they deflate the next
        # round (an inexact sample would leave part of its zero behind)
        if Q_keep is None and len(found) > n_before:
            Q_keep = orth(P_keep)  # the undeflated basis, once
        new, new_misfits = _polish(found[n_before:], settled, Q_keep, Omega_keep, A_keep,
                                   activation, polish_stages, bias_mean, tangent, n_jobs)
        searched = found[n_before:]
        del found[n_before:]
        settled = []
        for v, phi, before in zip(new, new_misfits, searched):
            # with a noisy gradient a deflated zero can lie between two
            # samples, and the undeflated polish take it to one found before
            if is_repeat(v, found, cos_dup):
                repeats.append(before)
                if verbose:
                    print("search: a sample found polished into an earlier one; dropped")
                continue
            found.append(v)
            misfits.append(phi)
            if use_remaining:
                if Q_sub is None:
                    Q_sub = orth(P_sub)  # the undeflated basis on the search's rows
                column = found_column(v, Q_sub, Omega_sub, A_sub, Slopes(activation),
                                      bias_mean)
                if column is not None:
                    columns.append(column)
        k = int(np.clip(2 * (len(found) - n_before), 1, n_init))
        if verbose:
            print(f"search: round {round_no}, {n_starts} starts, "
                  f"{len(found)}/{batch_size} found")
        if progress is not None:
            progress("search", len(found), batch_size)
    V = np.array(found).reshape(-1, n_dims)
    misfits = np.array(misfits)
    later = np.flatnonzero(np.isnan(misfits))
    if later.size:
        misfits[later] = sample_misfits(V[later], Q_keep, Omega_keep, A_keep, Slopes(activation),
                               bias_mean)
    rejected.sort(key=lambda pair: pair[0])
    candidates = np.array([v for _, v in rejected]).reshape(-1, n_dims)
    return SearchResult(V, misfits, candidates,
                        np.array([phi for phi, _ in rejected]), n_starts)


def _check_rows(rows, name, m, n_dims, A):
    """``rows`` as distinct neuron indices in ``[0, m)``, more of them than
    the unknowns of one sample (with fewer, every direction fits), or a
    ValueError that says what is wrong; ``None``: all ``m`` neurons."""
    n_unknowns = n_dims + A.shape[1]
    if rows is None:
        rows, n_distinct = np.arange(m), m
    else:
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ValueError(f"{name} must be a 1-D array of neuron indices, got "
                             f"shape {rows.shape} and dtype {rows.dtype}.")
        if rows.size and (rows.min() < 0 or rows.max() >= m):
            raise ValueError(f"{name} must index the {m} neurons (0 to {m - 1}), got "
                             f"indices from {rows.min()} to {rows.max()}.")
        n_distinct = len(np.unique(rows))
    if n_distinct <= n_unknowns:
        raise ValueError(
            f"{name} must hold more than {n_unknowns} distinct neurons (the "
            f"unknowns of one sample, n_dims + K): with {n_distinct} every "
            "direction fits them.")
    return rows


def _polish(found, settled, Q, Omega, A, activation, stages, bias_mean, tangent, n_jobs):
    """Each sample refined on the polish's neurons with their undeflated
    basis ``Q`` (at the search's finest smoothing widths), and its misfit
    there; ``settled`` samples (a smooth search at round-off) are left as
    they are, with a NaN misfit (computed later)."""
    if not found:
        return np.empty((0, Omega.shape[1])), []
    slopes = Slopes(activation)
    misfits = np.array([np.nan if done else sample_misfit(v, Q, Omega, A, slopes, bias_mean)
                        for v, done in zip(found, settled)])
    # a sample at round-off already (an exact gradient) needs no polish
    todo = np.flatnonzero(~(misfits < _ROUND_OFF) & ~np.asarray(settled, dtype=bool))
    with blas_threads(1):
        results = Parallel(n_jobs=n_jobs)(
            delayed(_search_one)(found[i], Q, Omega, A, activation, stages, bias_mean,
                                 tangent, _POLISH_ITER)
            for i in todo)
    V = np.array(found)
    for i, (v, _) in zip(todo, results):
        if np.all(np.isfinite(v)):
            V[i] = v
            misfits[i] = sample_misfit(v, Q, Omega, A, slopes, bias_mean)
    return V, list(misfits)
