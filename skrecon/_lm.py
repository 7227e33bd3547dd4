"""The one Levenberg-Marquardt driver: damped Gauss-Newton on a parameter vector.

Every least-squares fit of skrecon runs through :func:`lm_driver`: the
per-sample column-space search (:mod:`skrecon.search`) and the joint polish
of the whole batch (:func:`skrecon.refine.levenberg_marquardt`). The caller
supplies the normal equations and the cost at a parameter vector; the driver
damps them (Marquardt's scaling by the diagonal, Nielsen's update of the
damping) and reports a status as :class:`skrecon.refine.RefinementResult`
does. :func:`lm_driver` is public as ``skrecon.refine.lm_driver``.

References
----------
.. [1] H. B. Nielsen, "Damping parameter in Marquardt's method",
   IMM-REP-1999-05, DTU, 1999.
"""

import numpy as np
from scipy import linalg

__all__ = ["lm_driver", "solve_spd"]

def solve_spd(matrix, rhs):
    """Solve a symmetric positive (semi-)definite system, Jacobi-scaled.

    Cholesky on the diagonally scaled matrix (the samples' and the signals'
    parameters differ in scale by orders of magnitude); least squares if
    the factorisation fails.
    """
    d = np.sqrt(np.maximum(np.diag(matrix), np.finfo(float).tiny))
    scaled = matrix / d[:, None] / d[None, :]
    try:
        factor = linalg.cho_factor(scaled, check_finite=False)
        return linalg.cho_solve(factor, rhs / d, check_finite=False) / d
    except linalg.LinAlgError:
        return linalg.lstsq(scaled, rhs / d, check_finite=False)[0] / d


_MAX_DAMPING = 1e16


def _next_damping(damping, nu, gain):
    """Nielsen's update of the Levenberg-Marquardt damping ``(damping, nu)``
    after a step of gain ratio ``gain`` (accepted when positive)."""
    if gain > 0:
        return damping * max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3), 2.0
    return damping * nu, 2.0 * nu


def lm_driver(x0, normal_equations, cost, *, max_iter=100, atol=0.0, ftol=1e-15,
              xtol=1e-13, verbose=0, label="LM", scale=1.0, callback=None):
    """Levenberg-Marquardt iterations on a parameter vector (one loop for every fit).

    Parameters
    ----------
    x0 : ndarray of shape (n_par,)
        Starting parameters.
    normal_equations : callable
        ``normal_equations(x)`` returns ``(J^T J, -J^T r, cost)`` at ``x``
        (``r`` the residual, ``cost = ||r||^2 / 2``), or ``None`` where the
        model cannot be evaluated.
    cost : callable
        ``cost(x)``: ``||r||^2 / 2`` alone (``inf`` where undefined).
    max_iter : int, default=100
        Maximum number of steps (accepted or rejected).
    atol : float, default=0.0
        Stop when the cost is at most this.
    ftol, xtol : float
        Stop when an accepted step decreases the cost by a relative amount
        below ``ftol`` (or the undamped model predicts less: a minimum), or
        is below ``xtol`` relative to ``|x| + scale``.
    verbose : int, default=0
        Print one line per step, prefixed by ``label``, when positive.
    scale : float, default=1.0
        Reference size of the parameters for ``xtol`` (the iterate ``x`` may
        be a step from a base point, starting at 0).
    callback : callable or None, default=None
        ``callback(n_iter, max_iter)`` after each step (a progress line).

    Returns
    -------
    x : ndarray of shape (n_par,)
    cost : float
    n_iter : int
    status : int
        As :class:`RefinementResult`: 1 step below ``xtol``, 2 decrease below
        ``ftol``, 3 cost below ``atol``, 0 ``max_iter`` reached, -1 no
        descent (the damping grew without bound, or the start is undefined).

    References
    ----------
    .. [1] H. B. Nielsen, "Damping parameter in Marquardt's method",
       IMM-REP-1999-05, DTU, 1999.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.refine import lm_driver
    >>> def residual(x):  # Rosenbrock as least squares
    ...     return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])
    >>> def normal_equations(x):
    ...     J = np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])
    ...     r = residual(x)
    ...     return J.T @ J, -J.T @ r, 0.5 * r @ r
    >>> x, c, n_iter, status = lm_driver(np.array([-1.2, 1.0]), normal_equations,
    ...                                  lambda x: 0.5 * residual(x) @ residual(x),
    ...                                  atol=1e-30)
    >>> np.round(x, 8), status > 0
    (array([1., 1.]), True)
    """
    x = np.array(x0, dtype=float)
    current = normal_equations(x)
    if current is None:
        return x, np.inf, 0, -1
    jtj, grad, c = current
    damping, nu, status, n_iter = 1e-3, 2.0, 0, 0
    for n_iter in range(1, max_iter + 1):
        if c <= atol:
            status = 3
            break
        diag = np.diag(jtj).copy()
        diag = np.maximum(diag, 1e-12 * max(diag.max(), np.finfo(float).tiny))
        step = solve_spd(jtj + damping * np.diag(diag), grad)
        x_new = x + step
        new_c = cost(x_new) if np.all(np.isfinite(step)) else np.inf
        predicted = float(step @ grad) - 0.5 * float(step @ (jtj @ step))
        gain = (c - new_c) / predicted if predicted > 0 else -1.0
        if verbose:
            print(f"{label} {n_iter:3d}: cost {new_c:.3e} damping {damping:.2e} "
                  f"gain {gain:+.2f}")
        if callback is not None:
            callback(n_iter, max_iter)
        if predicted <= ftol * c and damping <= 1e-3:
            # the undamped model predicts no relative decrease: a minimum
            # (rejected steps there would only raise the damping)
            status = 2
            break
        if np.isfinite(new_c) and gain > 0:
            rel_decrease = (c - new_c) / max(c, 1e-300)
            rel_step = np.linalg.norm(step) / (np.linalg.norm(x) + scale)
            updated = normal_equations(x_new)
            if updated is None:
                break
            x = x_new
            jtj, grad, c = updated
            damping, nu = _next_damping(damping, nu, gain)
            if c <= atol:
                status = 3
                break
            if rel_step < xtol:
                status = 1
                break
            if rel_decrease < ftol:
                status = 2
                break
        else:
            damping, nu = _next_damping(damping, nu, gain)
            if damping > _MAX_DAMPING:
                status = -1
                break
    return x, c, n_iter, status
