"""The exact gradient model in span coordinates, and its pieces.

In span coordinates the gradient row of neuron ``j`` is

    p_j = sum_i (a_j . u_i) sigma'(omega_j . v_i + b0) v_i

(:ref:`theory-model`). The search (:mod:`skrecon.search`), the joint polish
and the pattern iteration (:mod:`skrecon.refine`) and the functional core
(:mod:`skrecon._core`) evaluate it through the plain functions here: the
pre-activations, ``sigma'`` with subnormal values flushed, the model from
its slopes, and the least-squares signals of fixed samples. The arrays
over neurons may be of any Array API namespace; the ``B``-sized systems
are solved on the host.
"""

import numpy as np

from ._array_api import as_namespace, elementwise_namespace, get_namespace, to_host
from ._lm import solve_spd

__all__ = ["pre_activations", "derivative", "flush_subnormal", "on_device",
           "check_finite_and_activation", "slopes_at", "model_from_slopes",
           "signals_from_slopes"]

_FLUSH = 1e-100  # squares of smaller numbers are subnormal


def pre_activations(Omega, V, bias_mean):
    """``Omega V^T + b0``: the pre-activations ``(m, B)``."""
    return Omega @ V.T + bias_mean  # (m, B)


def derivative(activation, t, order):
    """``sigma^(order)(t)`` with subnormal values flushed to zero.

    Saturated units (tanh'' at |t| ~ 100) give tiny floats whose products
    in the normal equations are subnormal, which slows BLAS down by orders
    of magnitude and carries no information.
    """
    return flush_subnormal(activation.derivative(t, order))


def flush_subnormal(d):
    """``d`` with entries below 1e-100 set to zero (in place for NumPy)."""
    xp = elementwise_namespace(d)
    if xp is np:
        d[np.abs(d) < _FLUSH] = 0.0
        return d
    return xp.where(xp.abs(d) < _FLUSH, xp.zeros_like(d), d)


def on_device(P, *host):
    """``(xp, arrays)``: the host arrays ``host`` moved to ``P``'s namespace."""
    xp, device = get_namespace(P)
    return xp, [as_namespace(a, xp, device, dtype=xp.float64) for a in host]


def check_finite_and_activation(activation, **arrays):
    """A ValueError naming the first of ``arrays`` that holds NaN or inf,
    or saying that ``activation`` is not an Activation."""
    for name, M in arrays.items():
        xp, _ = get_namespace(M)
        if not bool(xp.all(xp.isfinite(M))):
            raise ValueError(f"{name} holds NaN or inf.")
    if not callable(getattr(activation, "derivative", None)):
        raise ValueError(
            f"activation must be an Activation (skrecon.activations."
            f"get_activation), got {activation!r}.")


def slopes_at(Omega, V, activation, bias_mean):
    """``sigma'(Omega V^T + b0)`` (``(m, B)``): shared by a signal fit and the
    model of the same samples."""
    return derivative(activation, pre_activations(Omega, V, bias_mean), 1)


def model_from_slopes(s1, V, U, A):
    """:func:`skrecon.refine.gradient_model` from the slopes ``s1`` of ``V``."""
    return ((A @ U.T) * s1) @ V


def signals_from_slopes(s1, V, P, A, ridge):
    """:func:`skrecon.refine.fit_signals` from the slopes ``s1`` of ``V`` (``V`` in ``P``'s
    namespace)."""
    n_samples = V.shape[0]
    K = A.shape[1]
    xp, _ = get_namespace(P)
    # normal matrix over (i, k) x (i', k'): (v_i . v_i') sum_j a_jk a_jk' s1_ij s1_i'j
    sa = s1[:, :, None] * A[:, None, :]  # (m, B, K)
    sa2 = xp.reshape(sa, (A.shape[0], n_samples * K))
    normal = to_host(sa2.T @ sa2).reshape(n_samples, K, n_samples, K)
    rhs = to_host(xp.sum(sa * (P @ V.T)[:, :, None], axis=0)).reshape(-1)
    V = to_host(V)
    normal *= (V @ V.T)[:, None, :, None]
    normal = normal.reshape(n_samples * K, -1)
    normal[np.diag_indices_from(normal)] += ridge * np.trace(normal) / len(normal)
    return solve_spd(normal, rhs).reshape(n_samples, K)
