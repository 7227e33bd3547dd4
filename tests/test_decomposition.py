"""Jennrich's algorithm and CP-ALS on exact and noisy tensors."""

import numpy as np
from scipy.optimize import linear_sum_assignment

from skrecon.decomposition import _real_eigenvectors, cp_als, cp_reconstruct, jennrich


def _tensor(rank=5, dim=6, first=7, seed=0, collinear=0.0):
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    B = rng.standard_normal((dim, rank)) + collinear * common[:, None]
    A = rng.standard_normal((first, rank))
    return cp_reconstruct([A, B, B]), A, B


def _worst_cosine(B_true, B_est):
    bt = B_true / np.linalg.norm(B_true, axis=0)
    be = B_est / np.linalg.norm(B_est, axis=0)
    c = np.abs(bt.T @ be)
    r, col = linear_sum_assignment(-c)
    return c[r, col].min()


def test_jennrich_is_exact_on_an_exact_tensor():
    T, A, B = _tensor(collinear=2.0)  # pairwise cosines ~0.8, like digits
    factors = jennrich(T, 5, np.random.default_rng(3))
    assert _worst_cosine(B, factors[1]) > 1 - 1e-10
    assert np.linalg.norm(cp_reconstruct(factors) - T) / np.linalg.norm(T) < 1e-10


def test_complex_pairs_give_two_real_vectors():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    vecs = _real_eigenvectors(rot)
    assert np.linalg.matrix_rank(vecs) == 3


def test_als_lifts_a_poor_jennrich_start_on_a_noisy_tensor():
    T, A, B = _tensor(rank=4, dim=10, first=9, collinear=0.5, seed=1)
    noise = np.random.default_rng(2).standard_normal(T.shape)
    noisy = T + 0.01 * np.linalg.norm(T) / np.sqrt(T.size) * noise
    start = jennrich(noisy, 4, np.random.default_rng(0))
    start_err = np.linalg.norm(cp_reconstruct(start) - noisy) / np.linalg.norm(noisy)
    assert _worst_cosine(B, start[1]) < 0.7  # Jennrich alone is fragile on noise
    factors, err = cp_als(noisy, start, max_iter=200)
    assert err <= start_err
    assert err < 0.012  # at the noise level (1 %)
    assert _worst_cosine(B, factors[1]) > 0.9999
