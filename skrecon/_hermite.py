"""Hermite polynomials, Hermite features and Gaussian expectations.

Probabilists' Hermite polynomials ``He_n`` are orthogonal under the standard
normal density, with ``E[He_n(z) He_k(z)] = n! [n == k]``. For ``z ~ N(0, I)``
the multivariate features ``He_alpha(z) = prod_q He_{alpha_q}(z_q)`` are
orthogonal too, and a smooth ``f`` expands as
``f(z) = sum_alpha E[d^alpha f] He_alpha(z) / alpha!`` (Stein's lemma). The
moment tensor of order ``p + 1`` is read off the degree-``p`` coefficients of
a least-squares fit of the gradient rows on these features (fact F4b of
the theory page, :ref:`theory-f4b`).
"""

from functools import lru_cache
from itertools import combinations_with_replacement
from math import comb, factorial

import numpy as np
from numpy.polynomial.hermite_e import hermegauss, hermeval
from scipy import linalg

from ._array_api import from_host, get_namespace, is_numpy_namespace, to_host

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_N_HERMITE_NODES = 120
_N_LEGENDRE_NODES = 200
_HALF_WIDTH = 12.0  # standard deviations: the Gaussian mass beyond is < 1e-32


def hermite_e(n, x):
    """Probabilists' Hermite polynomial ``He_n(x)``, elementwise."""
    coef = np.zeros(n + 1)
    coef[n] = 1.0
    return hermeval(x, coef)


@lru_cache(maxsize=4)
def _quadrature(kind, n_nodes):
    """Gauss-Hermite (``"hermite"``) or Gauss-Legendre nodes and weights,
    computed once per size (read-only)."""
    nodes, weights = (hermegauss if kind == "hermite"
                      else np.polynomial.legendre.leggauss)(n_nodes)
    nodes.flags.writeable = weights.flags.writeable = False
    return nodes, weights


def gaussian_expectation_stein(f1, k, tau, mean=0.0, kinks=()):
    """``E[f^(k-1)... ]``: the Stein form of ``E[sigma^(k)(t)]``.

    Returns ``E[f1(t) He_{k-1}((t - mean) / tau)] / tau**(k-1)`` with
    ``t ~ N(mean, tau**2)``, which equals ``E[sigma^(k)(t)]`` for
    ``f1 = sigma'`` by Stein's lemma, also when ``sigma'`` has kinks or
    jumps. Smooth integrands use Gauss-Hermite quadrature; at a kink the
    integral is split and each side uses Gauss-Legendre quadrature over
    +-12 standard deviations, which converges like for a smooth integrand.

    Parameters
    ----------
    f1 : callable
        Elementwise ``sigma'``.
    k : int
        ``k >= 1``.
    tau : float or ndarray
        Standard deviation(s), ``> 0``.
    mean : float, default=0.0
    kinks : sequence of float, default=()
        Points where ``f1`` or its derivatives are not smooth.

    Returns
    -------
    value : ndarray of shape ``np.shape(tau)``
    """
    tau = np.asarray(tau, dtype=float)
    shape = tau.shape
    tau = tau.reshape(-1, 1)
    if not kinks:
        nodes, weights = _quadrature("hermite", _N_HERMITE_NODES)
        vals = f1(mean + tau * nodes) * hermite_e(k - 1, nodes)
        out = vals @ weights / _SQRT_2PI
    else:
        out = np.zeros(tau.shape[0])
        leg_x, leg_w = _quadrature("legendre", _N_LEGENDRE_NODES)
        for row, t in enumerate(tau[:, 0]):
            cuts = sorted((c - mean) / t for c in kinks)
            cuts = [c for c in cuts if -_HALF_WIDTH < c < _HALF_WIDTH]
            edges = [-_HALF_WIDTH, *cuts, _HALF_WIDTH]
            total = 0.0
            for lo, hi in zip(edges[:-1], edges[1:]):
                xi = 0.5 * (hi - lo) * leg_x + 0.5 * (hi + lo)
                w = 0.5 * (hi - lo) * leg_w
                dens = np.exp(-0.5 * xi * xi) / _SQRT_2PI
                total += np.sum(w * dens * f1(mean + t * xi) * hermite_e(k - 1, xi))
            out[row] = total
    out = out / tau[:, 0] ** (k - 1)
    return out.reshape(shape)


def hermite_multi_indices(n_dims, degree):
    """Sorted index tuples ``(q1 <= q2 <= ...)`` of every monomial degree.

    Returns a list of tuples, the degree-0 tuple ``()`` first, then degree 1,
    and so on up to ``degree``. There are ``C(n_dims + degree, degree)``.
    """
    out = []
    for deg in range(degree + 1):
        out.extend(combinations_with_replacement(range(n_dims), deg))
    return out


def n_hermite_features(n_dims, degree):
    """Number of Hermite features of total degree ``<= degree``."""
    return comb(n_dims + degree, degree)


def hermite_features(Z, degree, xp=np):
    """Design matrix of multivariate Hermite features up to ``degree``.

    Parameters
    ----------
    Z : array of shape (n_neurons, n_dims)
        Standard normal coordinates.
    degree : int
        Highest total degree (2 or 3 for tensors of order 3 or 4).
    xp : namespace, default=numpy

    Returns
    -------
    Phi : array of shape (n_neurons, n_features)
        Columns in the order of :func:`hermite_multi_indices`.
    """
    n, dims = Z.shape
    # He_n(z_q) for n = 0..degree, each (n_neurons, n_dims)
    he = [xp.ones_like(Z), Z]
    for deg in range(2, degree + 1):
        he.append(Z * he[deg - 1] - (deg - 1) * he[deg - 2])
    cols = []
    for index in hermite_multi_indices(dims, degree):
        col = xp.ones_like(Z[:, 0])
        for q in set(index):
            col = col * he[index.count(q)][:, q]
        cols.append(col)
    return xp.stack(cols, axis=1)


def coefficients_to_tensor(coef, n_dims, degree):
    """Symmetric derivative tensor ``E[d^degree f]`` from Hermite coefficients.

    Parameters
    ----------
    coef : ndarray of shape (n_features, n_responses)
        Least-squares coefficients on :func:`hermite_features`.
    n_dims : int
    degree : int
        Which degree's tensor to return.

    Returns
    -------
    tensor : ndarray of shape (n_responses,) + (n_dims,) * degree
        ``tensor[:, q1, ..., q_degree] = coef[alpha] * alpha!`` where ``alpha``
        counts how often each index occurs (``z_p z_q`` carries ``T[p, q]``,
        ``z_p**2 - 1`` carries ``T[p, p] / 2``).
    """
    from itertools import permutations

    coef = np.asarray(coef)
    tensor = np.zeros((coef.shape[1],) + (n_dims,) * degree, dtype=coef.dtype)
    for row, index in enumerate(hermite_multi_indices(n_dims, degree)):
        if len(index) != degree:
            continue
        weight = 1
        for q in set(index):
            weight *= factorial(index.count(q))
        value = coef[row] * weight
        for perm in set(permutations(index)):
            tensor[(slice(None),) + perm] = value
    return tensor


def hermite_regression(Z, P, R, degree, max_features):
    """Coefficient tensors ``T_0 ... T_degree`` of ``p_j`` on Hermite features.

    The model is ``p_j = sum_o R_jo h_o(z_j)`` with known regressors ``R``
    (the output weights, times Hermite polynomials of a Gaussian bias when
    there is one). Returns a list whose entry ``k`` has shape
    ``(B, n_regressors) + (B,) * k`` with ``T_k[:, o] = E[d^k h_o]``: the
    known regressors enter the design, so no division by a small output
    weight occurs. When ``n_regressors * n_features`` exceeds
    ``max_features`` (or ``m / 2``), the response ``p_j (x) R_j`` is
    regressed on the features instead (its tensors then carry
    ``E[R R^T] u_i`` in the second mode); when even ``n_features`` does, the
    top degree is a plain average of the residual of the lower-degree
    regression.
    """
    xp, device = get_namespace(Z)
    m, n_dims = Z.shape
    n_resp = P.shape[1]
    K = R.shape[1]
    n_feat = n_hermite_features(n_dims, degree)
    Phi = hermite_features(Z, degree, xp)
    if K * n_feat <= max_features and m >= 2 * K * n_feat:
        design = xp.reshape(Phi[:, None, :] * R[:, :, None], (m, K * n_feat))
        coef = to_host(_normal_lstsq(design, P, xp))  # (K * F, B)
        coef = coef.reshape(K, n_feat, n_resp).transpose(1, 2, 0)  # (F, B, K)
    else:
        Y = xp.reshape(P[:, :, None] * R[:, None, :], (m, n_resp * K))
        if n_feat <= max_features and m >= 2 * n_feat:
            coef = to_host(_normal_lstsq(Phi, Y, xp))
        else:
            n_low = n_hermite_features(n_dims, degree - 1)
            low = _normal_lstsq(Phi[:, :n_low], Y, xp)
            resid = Y - Phi[:, :n_low] @ low
            top = to_host(Phi[:, n_low:].T @ resid) / m  # = T[alpha], i.e. coef * alpha!
            idx = hermite_multi_indices(n_dims, degree)[n_low:]
            fact = np.array([np.prod([factorial(i.count(q)) for q in set(i)])
                             for i in idx], dtype=float)
            coef = np.vstack([to_host(low), top / fact[:, None]])
        coef = coef.reshape(n_feat, n_resp, K)
    # from here on B-sized: the host builds the symmetric tensors
    flat = coef.reshape(n_feat, n_resp * K)
    tensors = []
    for k in range(degree + 1):
        t = coefficients_to_tensor(flat, n_dims, k) if k else flat[:1].T
        t = t.reshape((n_resp, K) + (n_dims,) * k)
        tensors.append(t)
    return tensors


def bias_regressors(A, z_bias, n_bias_orders):
    """Known regressors ``R = A (x) [He_0(z_b), ..., He_L(z_b)] / l!``.

    With a Gaussian bias the gradient row depends on the bias too; expanding
    that dependence in Hermite polynomials of the standardised bias
    ``z_b`` gives ``L + 1`` moment tensors ``E[d_b^l d^p h]`` (``l <= L``)
    that share the samples as components: more slices for the
    decomposition, and the bias's variance explained rather than left as
    noise. Returns ``(m, K * (L + 1))``, ordered ``(output, l)``.
    """
    if z_bias is None:
        return A
    xp, device = get_namespace(A, z_bias)
    he = [xp.ones_like(z_bias), z_bias]
    for n in range(2, n_bias_orders):
        he.append(z_bias * he[n - 1] - (n - 1) * he[n - 2])
    he = xp.stack(he[:n_bias_orders], axis=1)
    he = he / from_host([factorial(n) for n in range(n_bias_orders)], xp, device)
    return xp.reshape(A[:, :, None] * he[:, None, :], (A.shape[0], -1))


def _normal_lstsq(design, Y, xp):
    """Least squares through the normal equations (Hermite features of a
    Gaussian are nearly orthonormal, so the Gram matrix is well conditioned)."""
    gram = design.T @ design
    if is_numpy_namespace(xp):
        return linalg.solve(gram, design.T @ Y, assume_a="pos")
    return xp.linalg.solve(gram, design.T @ Y)
