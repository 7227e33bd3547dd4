"""The span of the samples not found yet (skrecon._remaining) and the
search's use of it (skrecon.search)."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from skrecon import search
from skrecon.activations import get_activation
from skrecon.refine import gradient_model
from skrecon._misfit import Slopes, orth
from skrecon._remaining import found_column, into_span, remaining_span, span_tangent


def _problem(B=6, K=2, m=2000, seed=0, n_close=0, spread=2.0, gap=0.02):
    """Samples in span coordinates with the bias input 1 (``e . v = 1``);
    the first ``n_close`` are near-duplicates: one point (std ``spread``)
    plus independent steps of std ``gap``."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((B, B))
    base = spread * rng.standard_normal(B)
    for i in range(n_close):
        V[i] = base + gap * rng.standard_normal(B)
    V[:, -1] = 1.0
    U = rng.standard_normal((B, K))
    Omega = rng.standard_normal((m, B))
    A = rng.standard_normal((m, K))
    act = get_activation("tanh")
    P = gradient_model(V, U, Omega, A, act, 0.0)
    return V, Omega, A, P, act, (np.eye(B)[-1], 1.0)


def test_remaining_span_holds_exactly_the_samples_not_found():
    V, Omega, A, P, act, fixed = _problem()
    Q = orth(P)
    columns = np.array([found_column(v, Q, Omega, A, Slopes(act), 0.0)
                        for v in V[:2]]).T
    assert columns.shape == (2000, 2)
    np.testing.assert_allclose(np.linalg.norm(columns, axis=0), 1.0, rtol=1e-12)
    Z = remaining_span(P, columns, 4)
    assert Z.shape == (6, 4)
    np.testing.assert_allclose(Z.T @ Z, np.eye(4), atol=1e-12)

    def distance(v):
        return np.linalg.norm(v - Z @ (Z.T @ v)) / np.linalg.norm(v)

    # the four not found lie in it (to round-off), the two found do not
    assert max(distance(v) for v in V[2:]) < 1e-10
    assert min(distance(v) for v in V[:2]) > 0.1
    # nothing found or nothing remaining: no span
    assert remaining_span(P, np.empty((2000, 0)), 6) is None
    assert remaining_span(P, columns, 0) is None


def test_starts_moved_into_the_span_meet_the_constraint():
    rng = np.random.default_rng(1)
    Z = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    fixed = (np.eye(6)[-1], 1.0)
    v = rng.standard_normal(6)
    w = into_span(v, Z, fixed)
    assert w[-1] == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(Z @ (Z.T @ w), w, atol=1e-12)
    # the same direction as v's projection (a start is a direction)
    p = Z @ (Z.T @ v)
    assert abs(w @ p) / (np.linalg.norm(w) * np.linalg.norm(p)) == pytest.approx(1.0)
    T = span_tangent(Z, fixed)
    assert T.shape == (6, 2)
    np.testing.assert_allclose(T[-1], 0.0, atol=1e-12)  # steps keep e . v
    np.testing.assert_allclose(Z @ (Z.T @ T), T, atol=1e-12)
    # a span orthogonal to the constraint's normal never meets it
    Z0 = np.eye(6)[:, :3]
    assert span_tangent(Z0, fixed) is None
    assert into_span(v, Z0, fixed) is None
    assert span_tangent(Z0, None) is Z0


@pytest.mark.parametrize("seed", [2, 4])
def test_near_duplicate_samples_are_all_found_exactly(seed, monkeypatch):
    # four samples 0.3 % apart (relative) beside four others, saturated
    # (norm ~6, tanh): the search goes through the span of the samples not
    # found and, where its minima are spurious, on from the plain start
    V, Omega, A, P, act, fixed = _problem(B=8, K=3, seed=seed, n_close=4)
    calls = []
    original = search._search_start

    def counted(*args):
        calls.append(args[9] is not None)  # searched in the remaining span
        return original(*args)

    monkeypatch.setattr(search, "_search_start", counted)
    rng = np.random.default_rng(10 + seed)
    result = search.search_samples(P, Omega, A, act, fixed=fixed,
                                   random_starts=lambda k: rng.standard_normal((k, 8)))
    assert result.n_found == 8
    assert any(calls)
    D = np.linalg.norm(result.V[:, None, :] - V[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(D)
    errors = D[rows, cols] / np.linalg.norm(V[cols], axis=1)
    assert errors.max() <= 1e-9  # measured 6e-14 and 8e-15
