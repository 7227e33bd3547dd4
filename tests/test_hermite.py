"""Hermite features and the coefficient-to-tensor factors (DESIGN F4b)."""

import numpy as np
from math import comb

from skrecon._hermite import (coefficients_to_tensor, hermite_features,
                              hermite_multi_indices, n_hermite_features)


def test_feature_count_and_order():
    idx = hermite_multi_indices(4, 3)
    assert len(idx) == comb(4 + 3, 3) == n_hermite_features(4, 3)
    assert idx[0] == () and idx[1] == (0,) and idx[-1] == (3, 3, 3)


def test_features_are_orthogonal_with_factorial_norms():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((400_000, 3))
    Phi = hermite_features(Z, 3)
    gram = Phi.T @ Phi / len(Z)
    expected = []
    for index in hermite_multi_indices(3, 3):
        w = 1
        for q in set(index):
            w *= [1, 1, 2, 6][index.count(q)]
        expected.append(w)
    np.testing.assert_allclose(np.diag(gram), expected, rtol=0.03)
    corr = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    off = corr - np.diag(np.diag(corr))
    assert np.abs(off).max() < 0.03


def test_regression_recovers_symmetric_tensor_exactly():
    # f(z) = T[q, r, s] z_q z_r z_s / 6 has E[d^3 f] = T and lower-degree parts
    rng = np.random.default_rng(1)
    T = rng.standard_normal((3, 3, 3))
    T = sum(np.transpose(T, p) for p in
            [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6
    Z = rng.standard_normal((5000, 3))
    y = np.einsum("qrs,jq,jr,js->j", T, Z, Z, Z) / 6
    Phi = hermite_features(Z, 3)
    coef = np.linalg.lstsq(Phi, y[:, None], rcond=None)[0]
    np.testing.assert_allclose(coefficients_to_tensor(coef, 3, 3)[0], T, atol=1e-10)
    # and the degree-2 tensor of z_0 z_1 is T[0, 1] = T[1, 0] = 1
    y2 = Z[:, 0] * Z[:, 1] + 0.5 * (Z[:, 2] ** 2 - 1)
    coef2 = np.linalg.lstsq(hermite_features(Z, 2), y2[:, None], rcond=None)[0]
    t2 = coefficients_to_tensor(coef2, 3, 2)[0]
    np.testing.assert_allclose(t2, [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-10)
