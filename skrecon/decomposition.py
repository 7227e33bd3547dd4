"""CP decomposition of the moment tensor: Jennrich's algorithm and CP-ALS.

The moment tensor of a batch of ``B`` samples is (up to estimation error)
``T = sum_i a_i (x) b_i (x) ... (x) b_i``: its first mode carries the gradient
coordinates (and the output-weight mode, folded in), its other modes the
Hermite coordinates. Its CP rank is ``B`` and its components are the samples.
These are plain functions of NumPy arrays of size ``B``; the moment tensor is
already small when it gets here.

References
----------
.. [1] R. A. Harshman, "Foundations of the PARAFAC procedure", UCLA Working
   Papers in Phonetics 16, 1970 (Jennrich's simultaneous diagonalisation).
.. [2] T. G. Kolda and B. W. Bader, "Tensor decompositions and applications",
   SIAM Review 51(3), 2009.
"""

import numpy as np
from scipy import linalg

__all__ = ["jennrich", "cp_als", "cp_reconstruct", "khatri_rao", "moment_ratio_norms",
           "tensor_starts"]


def khatri_rao(factors):
    """Column-wise Kronecker product of matrices with the same column count.

    Parameters
    ----------
    factors : list of ndarray of shape (n_k, rank)
        The matrices, all with the same number of columns ``rank``.

    Returns
    -------
    product : ndarray of shape (prod n_k, rank)
        Column ``r`` is ``factors[0][:, r] (x) factors[1][:, r] (x) ...``;
        the row index is C-ordered over ``(n_0, n_1, ...)``.

    See Also
    --------
    cp_reconstruct : The tensor of a CP decomposition.

    References
    ----------
    .. [1] T. G. Kolda and B. W. Bader, "Tensor decompositions and
       applications", SIAM Review 51(3), 2009, section 2.6.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.decomposition import khatri_rao
    >>> a = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> khatri_rao([a, b])
    array([[1., 0.],
           [0., 2.],
           [1., 2.],
           [3., 0.],
           [0., 4.],
           [3., 4.]])
    """
    out = factors[0]
    for f in factors[1:]:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, out.shape[1])
    return out


def cp_reconstruct(factors):
    """Full tensor of a CP decomposition.

    Parameters
    ----------
    factors : list of ndarray of shape (n_k, rank)
        One factor matrix per mode, all with ``rank`` columns.

    Returns
    -------
    tensor : ndarray of shape (n_0, n_1, ...)
        ``sum_r factors[0][:, r] (x) factors[1][:, r] (x) ...``.

    See Also
    --------
    khatri_rao : The product this is built from.

    Examples
    --------
    A symmetric rank-2 tensor ``e_0 (x) e_0 (x) e_0 + 2 e_1 (x) e_1 (x) e_1``:

    >>> import numpy as np
    >>> from skrecon.decomposition import cp_reconstruct
    >>> T = cp_reconstruct([np.diag([1.0, 2.0]), np.eye(2), np.eye(2)])
    >>> T.shape, float(T[0, 0, 0]), float(T[1, 1, 1]), float(T[0, 1, 1])
    ((2, 2, 2), 1.0, 2.0, 0.0)
    """
    shape = tuple(f.shape[0] for f in factors)
    return (factors[0] @ khatri_rao(factors[1:]).T).reshape(shape)


def _unfold(tensor, mode):
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def _real_eigenvectors(matrix):
    """Real eigenvector basis of a nearly diagonalisable real matrix.

    A complex-conjugate pair (which a noisy Jennrich pencil produces where two
    eigenvalues nearly coincide) contributes its real and imaginary parts, so
    that the basis stays non-singular.
    """
    values, vectors = linalg.eig(matrix)
    out = np.empty(vectors.shape, dtype=float)
    used = np.zeros(len(values), dtype=bool)
    for k in range(len(values)):
        if used[k]:
            continue
        v = vectors[:, k]
        if abs(values[k].imag) <= 1e-12 * max(abs(values[k]), 1.0):
            out[:, k] = v.real / np.linalg.norm(v.real)
            used[k] = True
            continue
        # partner: the conjugate eigenvalue
        rest = np.where(~used)[0]
        rest = rest[rest != k]
        j = rest[np.argmin(np.abs(values[rest] - np.conj(values[k])))]
        out[:, k] = v.real / np.linalg.norm(v.real)
        out[:, j] = v.imag / np.linalg.norm(v.imag)
        used[k] = used[j] = True
    return out


def jennrich(tensor, rank, random_state):
    """Jennrich's simultaneous diagonalisation of a tensor ``(n1, B, B)``.

    With ``T = sum_i a_i (x) b_i (x) c_i`` and two random contractions of the
    first mode, ``M1 = T(theta1)`` and ``M2 = T(theta2)``, the matrix
    ``M1 pinv(M2)`` has eigenvectors ``b_i``. The first-mode factors follow by
    least squares.

    Parameters
    ----------
    tensor : ndarray of shape (n1, B, B)
        A third-order tensor of CP rank ``rank`` whose last two factor
        matrices are square and invertible (``B = rank``), e.g. the folded
        moment tensor. The first mode may be longer (``n1 >= rank``).
    rank : int
        Number of components (``B``).
    random_state : numpy.random.Generator
        Draws the two contraction vectors.

    Returns
    -------
    factors : list of three ndarray
        ``[A (n1, rank), Bf (B, rank), Cf (B, rank)]``; ``Bf`` and ``Cf``
        have unit columns, paired by their absolute cosine and oriented so
        that ``Bf[:, r] . Cf[:, r] >= 0``. The components come in no
        particular order. On an exact tensor they are exact; on an estimated
        one they are a start for :func:`cp_als`.

    See Also
    --------
    cp_als : Polishes the result on a noisy tensor.

    Notes
    -----
    A noisy pencil can have complex-conjugate eigenvalue pairs; the real and
    imaginary parts of such a pair are used as its two vectors (they span the
    pair's invariant subspace), so the start stays non-singular.

    References
    ----------
    .. [1] R. A. Harshman, "Foundations of the PARAFAC procedure", UCLA
       Working Papers in Phonetics 16, 1970 (the algorithm is credited there
       to R. I. Jennrich).
    .. [2] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.

    Examples
    --------
    A random rank-3 tensor is decomposed exactly:

    >>> import numpy as np
    >>> from skrecon.decomposition import cp_reconstruct, jennrich
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((5, 3)), rng.standard_normal((3, 3))
    >>> T = cp_reconstruct([A, B, B])
    >>> factors = jennrich(T, 3, np.random.default_rng(1))
    >>> [f.shape for f in factors]
    [(5, 3), (3, 3), (3, 3)]
    >>> bool(np.allclose(cp_reconstruct(factors), T))
    True
    """
    n1 = tensor.shape[0]
    theta = random_state.standard_normal((2, n1))
    m1 = np.tensordot(theta[0], tensor, axes=1)
    m2 = np.tensordot(theta[1], tensor, axes=1)
    # eigenvectors of M1 pinv(M2) span the second mode, of M1^T pinv(M2^T) the third
    bf = _real_eigenvectors(m1 @ np.linalg.pinv(m2))[:, :rank]
    cf = _real_eigenvectors(m1.T @ np.linalg.pinv(m2.T))[:, :rank]
    # pair the third-mode vectors with the second-mode ones by |cosine|
    from scipy.optimize import linear_sum_assignment

    _, col = linear_sum_assignment(-np.abs(bf.T @ cf))
    cf = cf[:, col]
    cf *= np.sign(np.sum(bf * cf, axis=0) + 1e-300)
    kr = khatri_rao([bf, cf])
    a = np.linalg.lstsq(kr, _unfold(tensor, 0).T, rcond=None)[0].T
    return [a, bf, cf]


def _als_sweep(tensor, factors):
    """One ALS sweep: each factor in turn by least squares given the others."""
    n_modes = tensor.ndim
    factors = list(factors)
    rank = factors[0].shape[1]
    eye = np.eye(rank)
    for mode in range(n_modes):
        others = [factors[k] for k in range(n_modes) if k != mode]
        gram = np.ones((rank, rank))
        for f in others:
            gram *= f.T @ f
        rhs = _unfold(tensor, mode) @ khatri_rao(others)
        gram += 1e-12 * np.trace(gram) * eye
        factors[mode] = np.linalg.solve(gram, rhs.T).T
    return _normalise(factors)


def _normalise(factors):
    """Unit columns in every mode but the first, which carries the weights."""
    factors = [f.copy() for f in factors]
    for mode in range(1, len(factors)):
        scale = np.linalg.norm(factors[mode], axis=0)
        scale[scale == 0] = 1.0
        factors[mode] /= scale
        factors[0] *= scale
    return factors


def cp_als(tensor, factors, *, max_iter=500, tol=1e-8):
    """Polish a CP decomposition by alternating least squares with line search.

    After each sweep the step from the previous iterate is extrapolated
    (``x + s (x_new - x)`` with ``s = n_sweep ** (1/3)``, Bro's line search)
    and the extrapolation kept when it fits better; this carries ALS through
    the long "swamps" that collinear components cause.

    Parameters
    ----------
    tensor : ndarray of shape (n_0, ..., n_{N-1})
    factors : list of ndarray of shape (n_k, rank)
        Starting factors (e.g. from :func:`jennrich`).
    max_iter : int, default=500
        Bound on the number of sweeps: long ALS runs on an estimated tensor
        can drift to degenerate solutions (nearly parallel components with
        large opposite weights), so keep it bounded.
    tol : float, default=1e-8
        Stop when the relative fit changes by less than this.

    Returns
    -------
    factors : list of ndarray
        Polished factors; all but the first have unit columns.
    relative_error : float
        ``||T - T_hat|| / ||T||``.

    See Also
    --------
    jennrich : A start for this polishing.

    References
    ----------
    .. [1] R. Bro, "Multi-way analysis in the food industry", PhD thesis,
       University of Amsterdam, 1998 (line search for ALS).
    .. [2] T. G. Kolda and B. W. Bader, "Tensor decompositions and
       applications", SIAM Review 51(3), 2009.

    Examples
    --------
    From a perturbed start, ALS returns to an exact rank-2 decomposition:

    >>> import numpy as np
    >>> from skrecon.decomposition import cp_als, cp_reconstruct
    >>> rng = np.random.default_rng(0)
    >>> true = [rng.standard_normal((4, 2)) for _ in range(3)]
    >>> T = cp_reconstruct(true)
    >>> start = [f + 0.1 * rng.standard_normal(f.shape) for f in true]
    >>> factors, err = cp_als(T, start, max_iter=500, tol=1e-14)
    >>> bool(err < 1e-6)
    True
    """
    norm = np.linalg.norm(tensor)
    first = _unfold(tensor, 0)

    def error(fs):
        # ||T - T_hat||^2 = ||T||^2 - 2 <T, T_hat> + ||T_hat||^2 from the
        # factors' Gram matrices (no reconstruction); near an exact fit the
        # difference cancels, and the error is computed directly
        gram = np.ones((fs[0].shape[1],) * 2)
        for f in fs:
            gram *= f.T @ f
        inner = np.sum((first @ khatri_rao(fs[1:])) * fs[0])
        squared = norm**2 - 2.0 * inner + np.sum(gram)
        if squared > 1e-12 * norm**2:
            return float(np.sqrt(squared)) / norm
        return np.linalg.norm(tensor - cp_reconstruct(fs)) / norm

    factors = _normalise([np.array(f, dtype=float) for f in factors])
    err = error(factors)
    for sweep in range(1, max_iter + 1):
        new = _als_sweep(tensor, factors)
        new_err = error(new)
        if sweep > 2:
            step = sweep ** (1.0 / 3.0)
            trial = _normalise([f + step * (g - f) for f, g in zip(factors, new)])
            trial_err = error(trial)
            if trial_err < new_err:
                new, new_err = trial, trial_err
        converged = abs(err - new_err) < tol * max(new_err, 1e-300) or new_err < 1e-14
        factors, err = new, new_err
        if converged:
            break
    return factors, err


# ALS sweeps polishing the Jennrich factors of one decomposition (starts
# for the search, which only need to lie in a sample's basin)
_ALS_ITER = 30


def _contract_extra_modes(tensor, rng):
    """Contract Hermite modes beyond the third with random unit vectors.

    Component ``i`` of the result carries the factor ``prod_eta eta . h_i``;
    the vectors ``eta`` are returned to divide it out.
    """
    etas = []
    while tensor.ndim > 3:
        eta = rng.standard_normal(tensor.shape[-1])
        eta /= np.linalg.norm(eta)
        etas.append(eta)
        tensor = tensor @ eta
    return tensor, etas


def _first_mode_vectors(first, n_dims):
    """Leading direction of each first-mode factor ``(n_dims * n_slices,)``.

    The first mode folds the gradient coordinates with the output (and bias
    order) slices: each component is ``v_i (x) w_i``; the best rank-one
    approximation recovers ``v_i`` up to scale and sign.
    """
    out = np.empty((first.shape[1], n_dims))
    for i, col in enumerate(first.T):
        u, s, _ = np.linalg.svd(col.reshape(n_dims, -1), full_matrices=False)
        out[i] = u[:, 0] * s[0]
    return out


def moment_ratio_norms(h, factors, lower_t0, order, activation, weight_std, etas=()):
    """Signed norms ``r_i`` of the samples ``r_i h_i`` without a bias.

    The degree-0 moment is ``T_0 = sum_i mu_1(|r_i|) r_i w_i h_i`` and the
    moment tensor ``sum_i mu_{p+1}(|r_i|) r_i^(p+1) w_i h_i^(p+1)``; their
    per-sample ratio ``r^p mu_{p+1}(|r|) / mu_1(|r|)`` is a known function of
    ``r`` alone, inverted on a grid. It is even in ``r`` for ``p = 2`` (the
    sign is left to the search, and is not identifiable for an even
    ``sigma'``). For scale-free activations (ReLU) it is constant: the norm
    is not identifiable and unit input norms are returned. ``etas`` are the
    vectors that contracted the Hermite modes beyond the third: they
    multiplied each component by ``eta . h_i``, which is divided out.

    Parameters
    ----------
    h : ndarray of shape (B, B)
        Unit sample directions (span coordinates), one per row.
    factors : list of ndarray
        CP factors of the (folded, contracted) moment tensor.
    lower_t0 : ndarray
        The degree-0 moment ``T_0`` of the same query.
    order : int
        Order of the moment tensor.
    activation : Activation
    weight_std : float
        The weights' std (input units per pre-activation unit).
    etas : sequence of ndarray of shape (B,), default=()
        Contraction vectors of the extra Hermite modes.

    Returns
    -------
    norms : ndarray of shape (B,)
        Signed norms in scaled span units.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.decomposition import moment_ratio_norms
    >>> relu = get_activation("relu")  # scale-free: the norm is not identifiable
    >>> moment_ratio_norms(np.eye(2), [np.eye(2)] * 3, np.ones((2, 1)), 4, relu, 0.1)
    array([0.1, 0.1])
    """
    n = h.shape[0]
    p = order - 1
    if activation.scale_free:
        return np.full(n, weight_std)  # |x| = 1 in input units
    kappa = np.linalg.lstsq(h.T, lower_t0.reshape(n, -1), rcond=None)[0]
    lam = np.empty_like(kappa)
    for i in range(n):
        sign = 1.0
        for f in factors[2:]:
            sign *= np.sign(f[:, i] @ h[i]) or 1.0
        lam[i] = sign * (h[i] @ factors[0][:, i].reshape(n, -1)) * np.prod(
            [np.linalg.norm(f[:, i]) for f in factors[1:]])
        for eta in etas:
            lam[i] /= eta @ h[i]
    rho = np.sum(lam * kappa, axis=1) / np.maximum(np.sum(kappa * kappa, axis=1), 1e-300)
    grid = np.geomspace(1e-2, 1e2, 400)
    ratio = grid**p * activation.mu(order, grid) / activation.mu(1, grid)
    signed_grid = np.concatenate([-grid[::-1], grid])
    signed_ratio = np.concatenate([(-1) ** p * ratio[::-1], ratio])
    idx = np.argmin(np.abs(signed_ratio[None, :] - rho[:, None]), axis=1)
    return signed_grid[idx]


def tensor_starts(tensor, lower_t0, activation, order, weight_std, random_state, *,
                  fixed=None):
    """Start samples from one CP decomposition of the moment tensor.

    The tensor's first mode (gradient coordinates, folded with the output
    and bias-order slices) is contracted away by Jennrich's algorithm on two
    random slices, Hermite modes beyond the third are contracted with random
    unit vectors first, and CP-ALS polishes the factors. With a bias input,
    the bias coordinate of each first-mode vector pins its scale and sign
    exactly; without one the direction comes from a Hermite mode and the
    norm from :func:`moment_ratio_norms`.

    Parameters
    ----------
    tensor : ndarray of shape (B, K, L) + (B,) * (order - 1)
        The moment tensor (first mode, output mode, bias-order mode, then
        the Hermite modes), as ``MomentTensorTransformer.moment_tensor_``.
    lower_t0 : ndarray of shape (B, K, L)
        The degree-0 moment (for the norms without a bias).
    activation : Activation
    order : int
        Order of the moment tensor.
    weight_std : float
        The weights' std.
    random_state : numpy.random.Generator
        Draws Jennrich's slices and the contraction vectors.
    fixed : tuple (e, c) or None, default=None
        With a bias input, every scaled sample satisfies ``e . v = c``.

    Returns
    -------
    starts : ndarray of shape (B, B)
        One start per CP component (span coordinates); rows may be
        non-finite where a component was degenerate.
    cp_error : float
        Relative error of the CP fit of the (contracted) tensor.

    References
    ----------
    .. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import get_activation
    >>> from skrecon.decomposition import cp_reconstruct, tensor_starts
    >>> rng = np.random.default_rng(0)
    >>> V = rng.standard_normal((3, 3))  # samples in span coordinates
    >>> V[:, -1] = 1.0  # the bias coordinate
    >>> h = V / np.linalg.norm(V, axis=1, keepdims=True)
    >>> T = cp_reconstruct([V.T, h.T, h.T]).reshape(3, 1, 1, 3, 3)
    >>> starts, err = tensor_starts(T, np.zeros((3, 1, 1)), get_activation("tanh"), 3,
    ...                             1.0, rng, fixed=(np.eye(3)[-1], 1.0))
    >>> bool(np.allclose(np.sort(starts, axis=0), np.sort(V, axis=0)))
    True
    """
    n = tensor.shape[0]
    folded, etas = _contract_extra_modes(tensor.reshape((-1,) + tensor.shape[3:]),
                                         random_state)
    factors = jennrich(folded, n, random_state)
    factors, cp_error = cp_als(folded, factors, max_iter=_ALS_ITER)
    if fixed is not None:
        e, c = fixed
        v = _first_mode_vectors(factors[0], n)
        last = v @ e
        last = np.where(np.abs(last) > 1e-300, last, 1e-300)
        return v * (c / last)[:, None], cp_error
    h = factors[1].T / np.linalg.norm(factors[1].T, axis=1, keepdims=True)
    norms = moment_ratio_norms(h, factors, lower_t0, order, activation, weight_std, etas)
    return h * norms[:, None], cp_error
