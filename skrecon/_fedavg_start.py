"""The start and the step order of :mod:`skrecon.fedavg` (plain functions of arrays).

- :func:`span`: the samples' span from the first layer's update;
- :func:`search_start`: the samples by the column-space search of
  :mod:`skrecon.search` with the endpoint family (both output layers);
- :func:`soft_targets`, :func:`one_hot`: labels from the output layer's update;
- :func:`assign_steps`: each sample's local steps from the misfit of its
  family at the weights before each step (:func:`interpolated` on the
  straight line, :func:`trajectory` simulated).
"""

import itertools
import time

import numpy as np
from scipy import linalg
from scipy.optimize import least_squares, linear_sum_assignment

from ._order_search import search_order
from ._unroll import memberships, simulate, slope
from .moments import estimate_batch_size
from .search import search_samples

__all__ = ["LABEL_MARGIN", "assign_steps", "interpolated", "one_hot", "refined_start",
           "refit_samples", "search_start", "signal_labels", "soft_targets", "span",
           "span_coordinates", "trajectory"]

# misfit below which a search result counts as a sample of the start: the
# endpoint family is approximate, so its zeros are not zeros
_START_ACCEPT = 0.05
_START_PASSES = 3
# lead of the largest regressed target coordinate that makes it a label
LABEL_MARGIN = 0.5
# coordinate sweeps over the epochs when assigning the steps
_ASSIGN_SWEEPS = 5
# rounds of refitting the start on the simulated steps, and the worst misfit
# (squared sine of the angle to the column space) at which the polish takes
# over (its quadratic convergence is cheaper than the rounds' linear one:
# full batch, E = 3, the worst misfit falls ~1000x a round)
_REFIT_ROUNDS = 6
_REFIT_DONE = 1e-10
# a refitted signal names the label when its misfit is this much below the
# second best's (1e-25 at an exact sample, 1e-3 to 1e-1 at 3e-3 relative
# error, where the label was still right: 16 digits, b = 4, lr 0.05)
SIGNAL_LABEL_RATIO = 0.1
# a refitted sample with a misfit below this is exact (deflated for the
# others); one this close (relative) to another row has landed on it
_SETTLED = 1e-20
_TWIN = 1e-6


def span(D, n_samples, dtype, roundoff=0.0):
    """Orthonormal bases of the update's row space ``(n_cols, n_samples)`` and
    column space ``(n_rows, n_samples)``, and its numerical rank: the
    singular values above ``10 eps s_1`` and above ``roundoff``, the
    parameters' own rounding (``eps ||theta||_F / lr``: a trained layer's
    update at lr 0.01 read rank 50 for 16 samples against ``10 eps s_1``)."""
    L, s, Vt = np.linalg.svd(D, full_matrices=False)
    floor = max(10 * np.finfo(dtype).eps * s[0], roundoff)
    rank, _ = estimate_batch_size(np.append(s[s > floor], 0.0), dtype, n_rows=D.shape[0])
    return Vt[:n_samples].T, L[:, :n_samples], int(rank)


def search_start(D, W0, A, activation, has_bias, U, n_samples, rng):
    """Start samples by the column-space search with the endpoint family."""
    n = U.shape[1]
    fixed = (U[-1], 1.0) if has_bias else None
    # the family diag(sigma'(Omega v + b)) A depends on col(A) only; the two
    # output layers are nearly parallel at a small learning rate, and the
    # search's (S^T S)^{-1/2} then fails (misfit 1 at the true samples of
    # half the batch, lr 0.05): an orthonormal basis of the same columns
    A = linalg.orth(A)
    P, Omega = D @ U, W0 @ U
    V, candidates = np.empty((0, n)), []
    for _ in range(_START_PASSES):
        # each pass searches the column space with the samples found so far
        # projected out: the search's own deflation, on an approximate
        # family, keeps ending on found samples (13 of 16 in 144 starts at
        # b = 4, lr 0.05; the 3 others in 6 starts after this projection)
        if len(V):
            complement = linalg.null_space(V)
            P_pass = P @ complement @ complement.T
        else:
            P_pass = P
        result = search_samples(
            P_pass, Omega, A, activation, n_samples=n_samples - len(V),
            random_starts=lambda k: rng.standard_normal((k, n)), fixed=fixed,
            accept=_START_ACCEPT, max_starts=4 * (n_samples - len(V)) + 16)
        V = np.concatenate([V, result.V])
        candidates.extend(result.candidates)
        if len(V) == n_samples or result.n_found == 0:
            break
    if len(V) < n_samples and candidates:
        extra = np.array(candidates[:n_samples - len(V)])
        V = np.concatenate([V, extra])
    if len(V) < n_samples:
        more = rng.standard_normal((n_samples - len(V), n))
        if has_bias:
            more += np.outer(1.0 - more @ U[-1], U[-1]) / (U[-1] @ U[-1])
        V = np.concatenate([V, more])
    X = V @ U.T
    if has_bias:
        return X[:, :-1] / X[:, -1:]
    return X


def span_coordinates(U, has_bias):
    """The samples' coordinates in the span: ``v = offset + c @ basis``.

    ``U`` (n_inputs [+ 1], r) is the orthonormal basis of the span (bias
    input last); a sample's input (with its constant 1) is ``U v``. Returns
    ``offset`` (r,) and ``basis`` (r - 1, r) with orthonormal rows (with a
    bias: every ``v`` then has ``U[-1] @ v = 1``), or ``0`` and the identity
    (without: ``v = c``).
    """
    r = U.shape[1]
    if not has_bias:
        return np.zeros(r), np.eye(r)
    e = U[-1]
    Q, _ = np.linalg.qr(np.column_stack([e, np.eye(r)]))
    return e / (e @ e), Q[:, 1:r].T.copy()


def soft_targets(torch, layers, p0, X, last_delta, W, schedule):
    """Soft targets from the output layer's update, regressed on its inputs.

    The output layer's update is ``sum_i c_i (p_i - q_i) h_i^T`` (and
    ``sum_i c_i (p_i - q_i)`` for its bias) to first order in the learning
    rate, with ``h_i`` its input and ``p_i`` the softmax output at
    ``theta_0``, ``c_i = sum_t W[t, i] / size_t``.
    """
    h = torch.as_tensor(X)
    with torch.no_grad():
        for kind, *rest in layers[:-1]:
            if kind == "linear":
                h = h @ p0[rest[0]].T + (p0[rest[1]] if rest[1] is not None else 0.0)
            else:
                h = rest[0](h)
        _, w_name, b_name = layers[-1]
        logits = h @ p0[w_name].T + (p0[b_name] if b_name is not None else 0.0)
        probs = torch.softmax(logits, dim=1).numpy()
    H = h.numpy()
    dW, db = last_delta
    if db is not None:
        H, target = np.column_stack([H, np.ones(len(H))]), np.column_stack([dW, db])
    else:
        target = dW
    signals = np.linalg.lstsq(H.T, target.T, rcond=None)[0]  # (N, K)
    sizes = np.array(schedule.step_sizes() * schedule.epochs, dtype=float)
    weight = (W / sizes[:, None]).sum(axis=0)
    return probs - signals / weight[:, None]


def one_hot(Q, margin=LABEL_MARGIN):
    """Soft targets made one-hot where their label is clear.

    The regression's targets are first-order (the outputs at ``theta_0``):
    where the largest coordinate leads the next by ``margin``, it is the
    label and the rest is off by ~0.2 after a few epochs, which costs the
    polish more than it helps (16 digits, E = 3: cost 5.5 from the soft
    rows, 2e-4 from one-hot rows); a row without a clear label stays soft
    (a wrong one-hot row stalls the polish: b = 4, 15 of 16 labels).
    """
    top = np.sort(Q, axis=1)
    clear = top[:, -1] - top[:, -2] >= margin
    out = Q.copy()
    out[clear] = np.eye(Q.shape[1])[np.argmax(Q[clear], axis=1)]
    return out


def trajectory(torch, layers, p0, X, Q, order, schedule):
    """The parameters before each local step, simulated (list of dicts)."""
    W = torch.as_tensor(memberships(order, schedule))
    X, Q = torch.as_tensor(X), torch.as_tensor(Q)
    with torch.no_grad():
        # momentum buffers make each step depend on the whole prefix
        return [simulate(torch, layers, p0, X, Q, W, schedule, n_steps=t)
                for t in range(schedule.n_steps)]


def interpolated(p0, pT, n_steps):
    """Parameters before each step on the straight line from ``theta_0`` to ``theta_T``."""
    return [{k: p0[k] + (t / n_steps) * (pT[k] - p0[k]) for k in p0}
            for t in range(n_steps)]


def assign_steps(torch, X, thetas, first, second, act, has_bias, basis_P, schedule):
    """The order of each epoch whose steps best explain each sample.

    Sample ``i``'s column of the first layer's update is
    ``sum_e (A_{t_e} u_{i,e}) * sigma'(Omega_{t_e} x_i + b_{t_e})`` over
    the steps ``t_e`` that used it (one per epoch): for the right steps
    some vector of that family lies in the update's column space
    ``basis_P``. Each combination of steps is scored by that misfit; each
    epoch's order then follows from one assignment problem (``batch_size``
    slots per step) on the misfits, minimised over the other epochs' steps.
    """
    S, E, N = schedule.steps_per_epoch, schedule.epochs, schedule.n_samples
    Xa = np.column_stack([X, np.ones(N)]) if has_bias else X
    slopes, outs = [], []
    for theta in thetas:
        Om = theta[f"{first}.weight"].numpy()
        if has_bias:
            Om = np.column_stack([Om, theta[f"{first}.bias"].numpy()])
        t = torch.as_tensor(Om @ Xa.T)
        slopes.append(slope(torch, act, t, act(t)).numpy())  # (m, N)
        outs.append(theta[f"{second}.weight"].numpy().T)  # (m, K)
    combos = list(itertools.product(range(S), repeat=E))
    cost = np.empty((N, len(combos)))
    for i in range(N):
        for c, steps in enumerate(combos):
            F = np.column_stack([slopes[e * S + s][:, i, None] * outs[e * S + s]
                                 for e, s in enumerate(steps)])
            B = linalg.orth(F, rcond=1e-12)
            top = np.linalg.svd(basis_P.T @ B, compute_uv=False)[0]
            cost[i, c] = np.log(max(1.0 - min(top, 1.0) ** 2, 1e-32))
    slots = np.repeat(np.arange(S), schedule.step_sizes())
    index = {steps: c for c, steps in enumerate(combos)}

    def assign(costs):  # (N, S) -> each sample's step, b slots per step
        rows, cols = linear_sum_assignment(costs.T[slots])  # slot -> sample
        step = np.empty(N, dtype=int)
        step[cols] = slots[rows]
        return step

    # each epoch on the misfits minimised over the other epochs' steps, then
    # sweeps that re-assign one epoch with the others' steps held: the
    # minimum alone cannot tell the epochs apart (8 digits, b = 4, E = 3:
    # three equal orders)
    steps = np.empty((E, N), dtype=int)
    for e in range(E):
        marginal = np.full((N, S), np.inf)
        for c, combo in enumerate(combos):
            marginal[:, combo[e]] = np.minimum(marginal[:, combo[e]], cost[:, c])
        steps[e] = assign(marginal)
    for _ in range(_ASSIGN_SWEEPS if E > 1 else 0):
        before = steps.copy()
        for e in range(E):
            held = np.empty((N, S))
            for i in range(N):
                for s_ in range(S):
                    combo = tuple(s_ if k == e else steps[k, i] for k in range(E))
                    held[i, s_] = cost[i, index[combo]]
            steps[e] = assign(held)
        if np.array_equal(steps, before):
            break
    orders = []
    for e in range(E):
        orders.append(np.concatenate([np.flatnonzero(steps[e] == s_) for s_ in range(S)]))
    return np.array(orders)


def _sample_fit(v0, T, Om, As, L, activation, fit=True):
    """Refit one sample: ``(v, x, misfit before, misfit after)``.

    ``Om``, ``As``: the first layer (in the span) and the output layer before
    each of its steps; ``L``: orthonormal basis of the column space it must
    fit; ``x``: the tangent step and the signals (one ``K``-vector per step).
    """
    n_free, K = T.shape[1], As[0].shape[1]
    OmT = [M @ T for M in Om]

    def residual(x, jacobian=False):
        v, u = v0 + T @ x[:n_free], x[n_free:].reshape(len(As), K)
        y, Jv, Ju = 0.0, 0.0, []
        for M, MT, A, ue in zip(Om, OmT, As, u):
            t = M @ v
            s1 = activation.derivative(t, 1)
            Au = A @ ue
            y = y + s1 * Au
            if jacobian:
                Jv = Jv + (activation.derivative(t, 2) * Au)[:, None] * MT
                Ju.append(s1[:, None] * A)
        norm = float(np.sqrt(y @ y))
        g = y / norm
        if not jacobian:
            return g - L @ (L.T @ g)
        J = np.hstack([Jv] + Ju) / norm
        J -= np.outer(g, g @ J)
        return J - L @ (L.T @ J)

    # the signals that best fit the column space at the start: the top
    # singular direction of col(L) against the family's columns
    F = np.column_stack([activation.derivative(M @ v0, 1)[:, None] * A
                         for M, A in zip(Om, As)])
    B, s, Vt = np.linalg.svd(F, full_matrices=False)
    keep = s > 1e-10 * s[0]
    w = np.linalg.svd(L.T @ B[:, keep], full_matrices=False)[2][0]
    u0 = Vt[keep].T @ (w / s[keep])
    x0 = np.concatenate([np.zeros(n_free), u0 / np.linalg.norm(F @ u0)])
    r0 = residual(x0)
    before = float(r0 @ r0)
    if not fit:  # the misfit at the start only
        return v0, x0, before, before
    out = least_squares(residual, x0, jac=lambda x: residual(x, jacobian=True),
                        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15,
                        max_nfev=100 * len(x0))
    after = float(out.fun @ out.fun) if np.all(np.isfinite(out.fun)) else np.inf
    if not after < before:
        return v0, x0, before, before
    return v0 + T @ out.x[:n_free], out.x, before, after


def refit_samples(X, thetas, order, first, second, activation, has_bias, U, P,
                  schedule, output_bias=None):
    """Each sample fitted alone to the update's column space with its own steps.

    In the span coordinates (``(x_i, 1) = U v_i``) the first layer's update
    is ``P = sum_i y_i v_i^T`` with ``y_i = sum_e sigma'(Omega_e v_i) * (A_e
    u_{i,e})`` over the steps ``e`` that used sample ``i``, ``Omega_e`` and
    ``A_e`` the first layer (in the span) and the output layer before that
    step: each ``y_i`` lies in ``col(P)``. With the weights ``thetas``
    simulated from the current batch (list of dicts, one per step), ``v_i``
    and the signals ``u_i`` minimise ``||(I - L L^T) y_i|| / ||y_i||`` by
    Levenberg-Marquardt from the current ``v_i`` (the endpoint family of the
    start sees the weights of the first step only, and misses samples of
    late steps: 0.31 relative error for one of 16 digits at b = 4, lr 0.05).

    Samples are refitted in order of their misfit. ``L`` spans ``P N`` with
    ``N`` orthogonal to the samples already exact (misfit below
    ``_SETTLED``): that deflation removes their ``y_j`` from the column space,
    so that another sample cannot converge onto them. A refit that does not
    lower its misfit, or that lands on another sample's row, keeps its row.

    When the second layer is the output layer (name ``output_bias`` for its
    bias, or ``""`` without one), the signal of a step is ``p - q`` up to
    scale, with ``p`` the softmax output of the sample at that step's weights
    and ``q`` its one-hot target: the label ``y`` is the one for which ``p -
    lambda u = e_y`` fits best, summed over the sample's steps.

    Returns the samples ``(n_samples, n_inputs)``, their misfits before and
    after ``(n_samples,)`` each, and (output layer only, else ``None``) the
    label misfits ``(n_samples, K)``: ``min_lambda ||p - lambda u - e_y||^2``
    per candidate label ``y``.
    """
    N = schedule.n_samples
    W = memberships(order, schedule)
    Xa = np.column_stack([X, np.ones(N)]) if has_bias else X
    V = Xa @ U
    T = linalg.null_space(U[-1][None, :]) if has_bias else np.eye(U.shape[1])
    n_free = T.shape[1]
    Omegas, outputs = [], []
    for theta in thetas:
        Om = theta[f"{first}.weight"].numpy()
        if has_bias:
            Om = np.column_stack([Om, theta[f"{first}.bias"].numpy()])
        Omegas.append(Om @ U)
        outputs.append(theta[f"{second}.weight"].numpy().T)
    K = outputs[0].shape[1]
    L_full = linalg.orth(P)
    before, after = np.empty(N), np.empty(N)
    label_misfit = None if output_bias is None else np.zeros((N, K))
    families = []
    for i in range(N):
        steps = np.flatnonzero(W[:, i])
        families.append((steps, [Omegas[t] for t in steps], [outputs[t] for t in steps]))
        before[i] = _sample_fit(V[i], T, families[i][1], families[i][2], L_full,
                                activation, fit=False)[2]
    settled, done = [], []
    for i in np.argsort(before, kind="stable"):
        steps, Om, As = families[i]
        L = L_full
        if settled:
            L = linalg.orth(P @ linalg.null_space(V[settled]))
        v, x, _, after[i] = _sample_fit(V[i], T, Om, As, L, activation)
        if done and np.min(np.linalg.norm(V[done] - v, axis=1)) < _TWIN * np.linalg.norm(v):
            # onto another sample: keep the row for the next round
            v, x = V[i], None
            after[i] = before[i]
        V[i] = v
        done.append(i)
        if after[i] < _SETTLED:
            settled.append(i)
        if label_misfit is None or x is None:
            continue
        for t, M, ue in zip(steps, Om, x[n_free:].reshape(len(As), K)):
            logits = outputs[t].T @ activation(M @ V[i])
            if output_bias:
                logits = logits + thetas[t][output_bias].numpy()
            p = np.exp(logits - logits.max())
            p /= p.sum()
            E = p[None, :] - np.eye(K)  # p - e_y, one row per label
            lam = (E @ ue) / (ue @ ue)
            label_misfit[i] += np.sum((E - lam[:, None] * ue) ** 2, axis=1)
    if label_misfit is not None:
        # a row without a fitted signal: no label information
        label_misfit[np.all(label_misfit == 0, axis=1)] = 1.0
    Xa = V @ U.T
    return (Xa[:, :-1] / Xa[:, -1:] if has_bias else Xa), before, after, label_misfit


def signal_labels(soft, label_misfit, ratio=SIGNAL_LABEL_RATIO):
    """``soft`` with a one-hot row wherever the refitted signal names the label.

    A row is replaced where its best label's misfit (see
    :func:`refit_samples`) is below ``ratio`` times the second best.
    """
    if label_misfit is None:
        return soft
    top = np.sort(label_misfit, axis=1)
    clear = top[:, 0] < ratio * top[:, 1]
    out = soft.copy()
    out[clear] = np.eye(soft.shape[1])[np.argmin(label_misfit[clear], axis=1)]
    return out


def refined_start(torch, layers, p0, X, soft, order, first, second, activation,
                  has_bias, U, P, basis_P, last_delta, schedule, verbose=0, labels=None,
                  score=None):
    """The start, its order and labels refitted in rounds on the simulated steps.

    Each round simulates the trajectory of the current batch, targets and
    order, refits every sample with its own steps (:func:`refit_samples`),
    reads labels off the refitted signals (two-layer models) and the
    regression (:func:`soft_targets`), and re-assigns the order on the
    refitted batch's trajectory (mini-batches). The rounds stop when the
    order holds and neither the worst misfit halves nor more samples are
    exact, or the worst misfit is below ``_REFIT_DONE``.

    ``labels`` (n_samples,) start the targets one-hot (else the clear rows of
    ``soft``); with ``score`` (a :class:`skrecon._order_search.ResidualScore`)
    a re-assigned order replaces the current one only where the simulated
    residual is lower, and :func:`skrecon._order_search.search_order` then
    searches the order and labels near it.

    Returns the samples ``(n_samples, n_inputs)``, the order ``(epochs,
    n_samples)``, the regressed soft targets ``(n_samples, K)`` and the
    targets the polish starts from (one-hot where the signal or the
    regression names the label clearly, else soft).
    """
    output_bias = (None if sum(kind == "linear" for kind, *_ in layers) > 2
                   else layers[-1][2] or "")
    act = layers[1][1]
    W = memberships(order, schedule)
    targets = one_hot(soft) if labels is None else np.eye(soft.shape[1])[labels]
    worst, most_exact = np.inf, 0
    for _ in range(_REFIT_ROUNDS):
        tic = time.perf_counter()
        thetas = trajectory(torch, layers, p0, X, targets, order, schedule)
        X, before, after, label_misfit = refit_samples(
            X, thetas, order, first, second, activation, has_bias, U, P, schedule,
            output_bias)
        soft = soft_targets(torch, layers, p0, X, last_delta, W, schedule)
        targets = signal_labels(one_hot(soft), label_misfit)
        if verbose:
            print(f"fedavg: samples refitted with their steps, misfit median "
                  f"{np.median(before):.1e} -> {np.median(after):.1e}, worst "
                  f"{before.max():.1e} -> {after.max():.1e} "
                  f"({time.perf_counter() - tic:.1f} s)")
        new = order
        if schedule.steps_per_epoch > 1:
            thetas = trajectory(torch, layers, p0, X, targets, order, schedule)
            new = assign_steps(torch, X, thetas, first, second, act, has_bias, basis_P,
                               schedule)
            if score is not None and not np.array_equal(new, order):
                hard = np.argmax(targets, axis=1)
                if score(X, hard, order) <= score(X, hard, new):
                    new = order
                found, new, _ = search_order(score, X, hard, new, schedule)
                changed = found != hard
                targets = targets.copy()
                targets[changed] = np.eye(targets.shape[1])[found[changed]]
        # progress: the worst misfit halves, or more samples are exact (a
        # sample far off keeps the worst misfit up while the others settle:
        # 16 digits, b = 4, lr 0.1, 12 exact in the second round)
        n_exact = int(np.sum(after < _SETTLED))
        progress = after.max() > _REFIT_DONE and (after.max() < 0.5 * worst
                                                  or n_exact > most_exact)
        worst, most_exact = min(worst, after.max()), max(most_exact, n_exact)
        if np.array_equal(new, order):
            if not progress:
                break
        else:
            order, W = new, memberships(new, schedule)
            soft = soft_targets(torch, layers, p0, X, last_delta, W, schedule)
            if score is None:  # else the targets searched with the order
                targets = signal_labels(one_hot(soft), label_misfit)
    return X, order, soft, targets
