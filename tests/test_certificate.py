"""Each row's first-order error bound (skrecon._certificate) and the found_
flags it decides."""

import re
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from skrecon import GradientReconstructor
from skrecon._certificate import row_error_bounds
from skrecon.activations import get_activation
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.exceptions import IdentifiabilityWarning
from skrecon.refine import gradient_model


def _span_problem(B=6, K=2, m=2000, gap=1e-4, seed=0):
    """Samples in span coordinates with the bias input 1 (``e . v = 1``,
    an orthonormal basis of 8 input coordinates + bias); samples 0 and 1 a
    near-duplicate pair ``gap`` apart (relative)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((9, B)))[0]
    e = basis[-1]
    V = rng.standard_normal((B, B))
    V[1] = V[0] + gap * np.linalg.norm(V[0]) * rng.standard_normal(B) / np.sqrt(B)
    V += np.outer((1.0 - V @ e) / (e @ e), e)  # onto e . v = 1
    U = rng.standard_normal((B, K))
    Omega = rng.standard_normal((m, B)) / np.sqrt(B)
    A = rng.standard_normal((m, K))
    act = get_activation("tanh")
    P = gradient_model(V, U, Omega, A, act, 0.0)
    kw = dict(basis=basis, column_scale=np.ones(9), bias=True, fixed=(e, 1.0))
    return V, U, P, Omega, A, act, kw


def _input_error(V, V_true, kw):
    X = V @ kw["basis"].T
    T = V_true @ kw["basis"].T
    X, T = X[:, :-1] / X[:, -1:], T[:, :-1] / T[:, -1:]
    return np.linalg.norm(X - T, axis=1) / np.linalg.norm(X, axis=1)


def test_exact_rows_are_pinned_and_a_blend_or_a_step_off_is_not():
    V, U, P, Omega, A, act, kw = _span_problem()
    bounds = row_error_bounds(V, P, Omega, A, act, 0.0, **kw)
    assert bounds.shape == (6,)
    # at the samples: round-off (measured 1e-13 to 1e-11), the pair too
    assert np.all(bounds <= 1e-9), bounds
    # row 0 moved to the pair's midpoint, row 2 moved by 1e-5: each bound
    # covers its row's error; the others stay pinned
    W = V.copy()
    W[0] = (V[0] + V[1]) / 2
    step = np.random.default_rng(1).standard_normal(6)
    step -= (step @ kw["fixed"][0]) * kw["fixed"][0]
    W[2] = V[2] + 1e-5 * np.linalg.norm(V[2]) * step / np.linalg.norm(step)
    errors = _input_error(W, V, kw)
    bounds = row_error_bounds(W, P, Omega, A, act, 0.0, **kw)
    assert errors[0] > 1e-6 and errors[2] > 1e-6
    assert bounds[0] >= errors[0] and bounds[2] >= errors[2], (bounds, errors)
    assert np.all(bounds[3:] <= 1e-9)



def test_a_rows_bound_does_not_depend_on_the_other_rows():
    """Each row is certified with its own best signal: a wrong row beside it
    (whose missing sample a joint least-squares fit of the signals spreads
    over every row's signal) leaves the exact rows pinned. Measured before:
    float32 sigmoid at trained weights, B = 32, three wrong rows of the
    search left every bound at 0.004 to 0.26 (0 rows found of the 28 within
    1e-4); with each row's own signal 14 found, none wrong."""
    V, U, P, Omega, A, act, kw = _span_problem(K=3)
    alone = row_error_bounds(V, P, Omega, A, act, 0.0, **kw)
    W = V.copy()
    W[3] = V[3] + 0.5 * np.linalg.norm(V[3]) * np.eye(6)[0]  # far off its sample
    W[3] += (1.0 - W[3] @ kw["fixed"][0]) * kw["fixed"][0]
    beside = row_error_bounds(W, P, Omega, A, act, 0.0, **kw)
    assert _input_error(W, V, kw)[3] > 0.1
    assert beside[3] > 1e-2
    keep = np.arange(6) != 3
    np.testing.assert_allclose(beside[keep], alone[keep], rtol=1e-9)
    assert np.all(beside[keep] <= 1e-9), beside

def _near_duplicates(seed, n=8, k=2, gap=1e-4):
    """``n`` digits and ``k`` near-duplicates of the first ``k``, each
    ``gap`` of its sample's norm away in a random direction."""
    x = load_digits_batch(n, random_state=seed)[0]
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((k, x.shape[1]))
    E /= np.linalg.norm(E, axis=1)[:, None]
    return np.vstack([x, x[:k] + gap * np.linalg.norm(x[:k], axis=1)[:, None] * E])


@pytest.mark.parametrize("seed", [0, 1])
def test_near_duplicate_blends_are_not_found(seed):
    """float64 tanh, 8 digits and 2 near-duplicates 1e-4 apart: rows that
    blend a pair fit the gradient's column space to round-off (misfit of
    order (error x separation)^2) and were flagged found 1e-5 to 8e-5 off
    (two, and one); the stated 1e-6 holds on every row flagged found, and
    the warning names the rows the gradient does not pin."""
    batch = _near_duplicates(seed)
    q = make_gradient_query(batch, n_neurons=1024, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the batch size given: the spectrum's reading of a pair 1e-4 apart
        # depends on the BLAS kernel (11 for 10 under Nehalem, seed 1)
        rec = GradientReconstructor(**q.estimator_params, batch_size=len(batch),
                                    random_state=0).fit(q.grad, **q.fit_params)
    samples = np.asarray(rec.samples_)
    assert samples.shape == (10, 64)
    D = (np.linalg.norm(samples[:, None] - batch[None], axis=2)
         / np.linalg.norm(batch, axis=1)[None])
    rows, cols = linear_sum_assignment(D)
    errors = D[rows, cols]
    found = np.asarray(rec.found_)[rows]
    assert np.all(errors[found] <= 1e-6), (errors, found)
    # measured: 6 and 7 of 10 found (the others 1e-5 to 2.2)
    assert found.sum() >= 6
    texts = [str(w.message) for w in caught if w.category is IdentifiabilityWarning]
    named = [t for t in texts if "the gradient does not pin them" in t
             and "do not bound their errors by 1e-6" in t]
    assert len(named) == 1
    listed = {int(i) for i in re.search(r"Rows \[([\d, ]+)\]", named[0]).group(1).split(",")}
    # every row within 1e-3 but not found is named (the blends)
    blends = {int(rows[i]) for i in np.flatnonzero(~found & (errors < 1e-3))}
    assert blends and blends <= listed
    assert not np.any(np.asarray(rec.found_)[sorted(listed)])
