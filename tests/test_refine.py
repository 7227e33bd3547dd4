"""Levenberg-Marquardt refinement of the exact gradient model (DESIGN F7)."""

import re

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon.activations import get_activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import relative_error
from skrecon.refine import (_normal_equations, fit_signals, gradient_model,
                            is_piecewise_linear, levenberg_marquardt, pattern_iteration)


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


# piecewise-linear activations (ReLU, leaky ReLU): the pattern is found by
# the hyperplane search and made exact by the margin-trimmed pattern iteration

def _bias_problem(activation, m=4000, B=4, K=2, seed=0):
    """Samples whose last coordinate is the bias input ``c``, as in the span."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((B, B))
    V[:, -1] = 1.0
    U = rng.standard_normal((B, K))
    Omega = rng.standard_normal((m, B))
    A = rng.standard_normal((m, K))
    act = get_activation(activation)
    P = gradient_model(V, U, Omega, A, act, 0.0)
    return V, U, Omega, A, P, act, (np.eye(B)[-1], 1.0)


@pytest.mark.parametrize("name, expected", [("relu", True), ("leaky_relu", True),
                                            ("tanh", False), ("gelu", False),
                                            ("elu", False)])
def test_is_piecewise_linear(name, expected):
    assert is_piecewise_linear(get_activation(name)) is expected


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_pattern_iteration_is_exact_from_an_accurate_start(activation):
    V, U, Omega, A, P, act, fixed = _bias_problem(activation)
    V0 = V + 0.02 * np.random.default_rng(1).standard_normal(V.shape)
    V0[:, -1] = 1.0
    # the untrimmed step alone leaves neurons with a wrong pattern
    assert pattern_iteration(V0, P, Omega, A, act, fixed=fixed, margins=(0.0,),
                             max_iter=1).relative_residual > 1e-6
    result = pattern_iteration(V0, P, Omega, A, act, fixed=fixed)
    assert result.status == 3 and result.relative_residual < 1e-10
    np.testing.assert_allclose(result.V, V, atol=1e-9)
    np.testing.assert_allclose(result.U, U, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_piecewise_linear_digits_are_recovered_exactly(activation):
    X, _ = load_digits_batch(batch_size=8, random_state=0)
    q = make_gradient_query(X, n_neurons=20000, activation=activation, bias="gaussian",
                            random_state=0)
    rec = GradientReconstructor(activation=activation, bias=True, batch_size=8,
                                random_state=0, n_jobs=1).fit(q.grad, **q.fit_params)
    err, _ = relative_error(X, rec.samples_)
    assert np.max(err) <= 1e-6


@pytest.mark.parametrize("call, message", [
    (lambda V, U, P, O, A, act: gradient_model(V, U, O, A, "tanh"),
     "activation must be an Activation"),
    (lambda V, U, P, O, A, act: gradient_model(V, U[:, [0, 0]], O, A, act),
     "U must have shape (2, 1) (one signal per sample and output), got (2, 2)."),
    (lambda V, U, P, O, A, act: fit_signals(V, P, O, A, act, ridge=-1.0),
     "ridge must be non-negative, got -1.0."),
    (lambda V, U, P, O, A, act: fit_signals(V, P[:10], O, A, act),
     "P must have the shape of Omega, (500, 2), got (10, 2)."),
    (lambda V, U, P, O, A, act: levenberg_marquardt(V, U, 0 * P, O, A, act),
     "P is zero everywhere: there is no gradient to fit."),
    (lambda V, U, P, O, A, act: levenberg_marquardt(V, U, P, O, A, act,
                                                    fixed=(np.zeros(2), 1.0)),
     "fixed must be (e, c) with e a nonzero vector of shape (2,)."),
    (lambda V, U, P, O, A, act: pattern_iteration(V, P, O, A, "relu"),
     "activation must be an Activation"),
])
def test_public_fits_say_what_is_wrong(call, message):
    """The refinement's public functions check their input (break-it: a
    string activation gave AttributeError, a zero P ZeroDivisionError, a
    zero constraint NaN samples, a negative ridge LAPACK's messages)."""
    rng = np.random.default_rng(0)
    act = get_activation("tanh")
    V, U = rng.standard_normal((2, 2)), rng.standard_normal((2, 1))
    Omega, A = rng.standard_normal((500, 2)), rng.standard_normal((500, 1))
    P = gradient_model(V, U, Omega, A, act)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(V, U, P, Omega, A, act)
