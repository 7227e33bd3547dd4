"""Levenberg-Marquardt refinement of the exact gradient model (DESIGN F7)."""

import numpy as np
import pytest

from skrecon.activations import get_activation
from skrecon.refine import (_normal_equations, fit_signals, gradient_model,
                            levenberg_marquardt)


def _problem(m=600, B=3, K=2, seed=0, activation="tanh"):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((B, B)) * 0.7
    U = rng.standard_normal((B, K))
    Omega = rng.standard_normal((m, B))
    A = rng.standard_normal((m, K))
    act = get_activation(activation)
    P = gradient_model(V, U, Omega, A, act, 0.3)
    return V, U, Omega, A, P, act


def test_structured_normal_equations_match_a_dense_jacobian():
    V, U, Omega, A, P, act = _problem()
    V1, U1 = V + 0.1, U - 0.2
    jtj, grad, cost = _normal_equations(V1, U1, P, Omega, A, act, 0.3)
    theta = np.hstack([V1, U1]).ravel()
    B, width = V.shape[0], V.shape[1] + U.shape[1]

    def model(th):
        th = th.reshape(B, width)
        return gradient_model(th[:, :B], th[:, B:], Omega, A, act, 0.3).ravel()

    h = 1e-6
    J = np.column_stack([(model(theta + h * e) - model(theta - h * e)) / (2 * h)
                         for e in np.eye(theta.size)])
    r = P.ravel() - model(theta)
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-6, atol=1e-6 * np.abs(jtj).max())
    np.testing.assert_allclose(grad, J.T @ r, rtol=1e-6, atol=1e-6 * np.abs(grad).max())
    assert cost == pytest.approx(0.5 * r @ r)


def test_signals_are_exact_given_the_samples():
    V, U, Omega, A, P, act = _problem()
    np.testing.assert_allclose(fit_signals(V, P, Omega, A, act, 0.3), U, atol=1e-10)


def test_lm_converges_to_the_exact_solution_from_a_nearby_start():
    V, U, Omega, A, P, act = _problem(seed=1)
    rng = np.random.default_rng(5)
    V0 = V + 0.1 * rng.standard_normal(V.shape)
    U0 = fit_signals(V0, P, Omega, A, act, 0.3)
    result = levenberg_marquardt(V0, U0, P, Omega, A, act, 0.3, max_iter=100)
    assert result.converged and result.status == 3
    assert result.relative_residual < 1e-14
    assert result.n_iter < 100
    np.testing.assert_allclose(result.V, V, atol=1e-10)
    assert "residual" in repr(result)


def test_fixed_coordinate_is_kept():
    V, U, Omega, A, P, act = _problem(seed=2)
    e = np.array([0.0, 0.0, 1.0])
    V0 = V + 0.05
    result = levenberg_marquardt(V0, fit_signals(V0, P, Omega, A, act, 0.3), P,
                                 Omega, A, act, 0.3, fixed=(e, 1.5), max_iter=5)
    np.testing.assert_allclose(result.V @ e, 1.5, atol=1e-12)
