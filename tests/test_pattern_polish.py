"""The least-squares fit of a ReLU-family layer with its patterns fixed
(skrecon/_pattern_polish.py): a float32 gradient's samples to what its
round-off allows, with standard errors that bound their errors."""

import warnings

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon._pattern_polish import input_fit, span_fit
from skrecon.activations import get_activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import relative_error


def _float32_query(activation, B=8, m=400, d=20, seed=0):
    """A ReLU-family layer's cross-entropy gradient computed in float32
    (inputs in [0, 1] with a bias input, Gaussian weights and output
    weights, signals of sizes 1 to 1e-3 -- a trained net's confident
    samples), and the truth: ``X`` ``(m, d + 1)`` (float64 of the float32
    values), ``W``, ``A``, the samples, their slopes ``S`` ``(m, B)`` and
    signals ``U``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (B, d))
    x_aug = np.hstack([x, np.ones((B, 1))]).astype(np.float32)
    W = (rng.standard_normal((m, d + 1)) / np.sqrt(d)).astype(np.float32)
    A = rng.standard_normal((m, 10)).astype(np.float32)
    U = rng.standard_normal((B, 10))
    U -= U.mean(axis=1, keepdims=True)
    U *= np.logspace(0, -3, B)[:, None]
    U = U.astype(np.float32)
    slope = get_activation(activation).derivative
    W64 = W.astype(np.float64)
    S = np.asarray(slope(W64 @ x_aug.T.astype(np.float64), 1))  # (m, B)
    delta = (A @ U.T) * S.astype(np.float32)  # float32 throughout
    X = (delta @ x_aug).astype(np.float64)
    return X, W64, A.astype(np.float64), x, S, U.astype(np.float64)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_input_fit_reaches_the_roundoff_and_bounds_its_errors(activation):
    X, _, A, x, S, U = _float32_query(activation)
    rng = np.random.default_rng(1)
    start = x + 1e-3 * rng.standard_normal(x.shape)  # the span fit's result
    fit = input_fit(X, A, S, start, U * (1 + 1e-3), get_activation(activation), bias=True,
                    rows=np.ones(len(X), dtype=bool))
    errors = np.linalg.norm(fit.samples - x, axis=1) / np.linalg.norm(x, axis=1)
    # float32 round-off over each sample's share of the gradient (1 to 1e-3)
    assert np.all(errors < 1e-4)
    assert errors.max() > 1e-9  # round-off, not an exact fit
    # the standard errors give the errors' size (within a factor 5)
    assert np.all(errors <= 5 * fit.errors)
    assert np.all(fit.errors <= 5 * errors)


@pytest.mark.parametrize("activation", ["relu"])
def test_span_fit_flips_wrong_slopes_back(activation):
    # the patterns found on the data, with ten slopes of the four strongest
    # samples wrong: the data flip them back, and every sample returns to
    # its round-off (leaky ReLU from the same start: the weakest sample, 1e-3
    # of the gradient, is lost -- its misfit, 2e-2, shows it)
    X, W, A, x, S, _ = _float32_query(activation, seed=2)
    act = get_activation(activation)
    B, n = x.shape[0], x.shape[1] + 1
    V = np.hstack([x, np.ones((B, 1))])
    rng = np.random.default_rng(3)
    spread = np.linalg.norm(V, axis=1)[:, None] / np.sqrt(n)
    V0 = V + 1e-3 * rng.standard_normal(V.shape) * spread
    V0[:, -1] = 1.0
    active = S.T > np.min(S)  # (B, m)
    rows = rng.choice(len(X), 10, replace=False)
    samples = rng.integers(0, 4, 10)
    active[samples, rows] = ~active[samples, rows]
    e = np.zeros(n)
    e[-1] = 1.0
    fit = span_fit(X, W, A, act, 0.0, V0, active, np.ones(B, dtype=bool), fixed=(e, 1.0))
    # (measured: one left, on a neuron where two samples' slopes compete;
    # its sample's misfit shows it, 3.5e-3)
    assert np.sum(fit.S != S) < 5
    errors = np.linalg.norm(fit.V[:, :-1] - x, axis=1) / np.linalg.norm(x, axis=1)
    assert np.all(errors < 1e-4)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_relu_batch_through_the_reconstructor(activation, seed):
    # a float32 gradient of eight digits (Gaussian weights, 1000 neurons):
    # the patterns found on the data, the fit with them fixed, every row
    # certified by its standard error (main: 0, 7, 0 and 0 of 8 found)
    import warnings

    from skrecon import GradientReconstructor
    from skrecon.clients import make_gradient_query
    from skrecon.datasets import load_digits_batch
    from skrecon.metrics import relative_error

    batch, _ = load_digits_batch(8, random_state=seed)
    q = make_gradient_query(batch, n_neurons=1000, activation=activation,
                            random_state=seed, dtype=np.float32)
    assert q.grad.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(**q.estimator_params, random_state=0).fit(
            q.grad, **q.fit_params)
    errors, perm = relative_error(batch, np.asarray(rec.samples_, dtype=np.float64))
    assert np.all(perm >= 0)
    found = np.asarray(rec.found_)
    # the stated float32 precision, on every row flagged found
    assert np.all(errors[found[perm]] <= 1e-4)
    # measured: all 8 found, worst 5.4e-7
    assert found.sum() == 8
    assert errors.max() < 1e-5


def test_rows_that_together_do_not_explain_the_gradient_are_not_certified():
    """float32 ReLU, 8 digits and a near-duplicate 1e-2 from one of them:
    every row used to pass its own check, two of them wrong (8e-3, 2.6e-2),
    while the batch left a gradient residual of 8e-3 (a tester). A row
    flagged found is within the stated 1e-4, whatever the search reaches;
    rows that together leave a residual above the noise are not certified."""
    x = load_digits_batch(8, random_state=0)[0]
    batch = np.vstack([x, x[:1] + 1e-2 * np.random.default_rng(0).standard_normal(64)])
    q = make_gradient_query(batch, n_neurons=1000, activation="relu", bias="gaussian",
                            dtype=np.float32, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(**q.estimator_params, random_state=0).fit(
            q.grad, **q.fit_params)
    errors, match = relative_error(batch, rec.samples_)
    found = np.zeros(len(batch), dtype=bool)
    found[match >= 0] = rec.found_[match[match >= 0]]
    assert np.all(errors[found] <= 1e-4), (errors, rec.found_)
    if rec.n_found_ == len(batch):
        assert rec.gradient_residual_ <= 1e-6
    else:
        assert not rec.converged_


@pytest.mark.parametrize("activation, seed", [("relu", 0), ("leaky_relu", 1),
                                              ("leaky_relu", 2)])
def test_span_fit_iterates_the_patterns_it_was_not_given(activation, seed):
    # five samples' patterns found on the data, the three weakest (7e-3 to
    # 1e-3 of the gradient) unknown, started 30 % off: their slopes from the
    # start's signs are wrong on many neurons, and that residual (their
    # share of the gradient) moved every sample off, the strongest included
    # (measured before: 4e-4, 1e-1 and 3e-2 worst); their pattern iterated,
    # every sample is back within float32 precision
    X, W, A, x, S, _ = _float32_query(activation, seed=seed)
    B, n = x.shape[0], x.shape[1] + 1
    V = np.hstack([x, np.ones((B, 1))])
    rng = np.random.default_rng(3)
    spread = np.linalg.norm(V, axis=1)[:, None] / np.sqrt(n)
    V0 = V + 1e-3 * rng.standard_normal(V.shape) * spread
    V0[5:] = V[5:] + 0.3 * rng.standard_normal((3, n)) * spread[5:]
    V0[:, -1] = 1.0
    e = np.zeros(n)
    e[-1] = 1.0
    fit = span_fit(X, W, A, get_activation(activation), 0.0, V0, S.T > np.min(S),
                   np.arange(B) < 5, fixed=(e, 1.0))
    errors = np.linalg.norm(fit.V[:, :-1] - x, axis=1) / np.linalg.norm(x, axis=1)
    # (measured: 2e-5 worst, the weakest sample)
    assert np.all(errors < 1e-4)
