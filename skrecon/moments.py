"""The projection of a query onto the batch's span, and the Hermite moment tensor.

A gradient query is the first layer's gradient ``X`` (one row per neuron),
the weights the server chose (same layout) and the output weights. Its span
comes from :mod:`skrecon._span` (facts F1, F4 of the theory page,
:ref:`theory-f1`, :ref:`theory-f4`); this module projects the query onto it
(the standardised weights, the gradient in span coordinates) and estimates
the Hermite moment tensor in that span (F2, F4b, the regression in
:mod:`skrecon._hermite`): the input of the tensor decomposition.
"""

import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._hermite import bias_regressors, hermite_regression, n_hermite_features
from ._array_api import (column_sum_squares, from_host, get_namespace, host_state,
                         is_numpy_namespace, to_host)
from ._validation import check_coefficients, check_query, transform_namespace
from .activations import Activation, get_activation, select_tensor_order
from ._roundoff import check_noise_std, noise_floor
from ._span import estimate_batch_size, fit_span
from ._threads import blas_threads
from .exceptions import BatchSizeWarning, BlindFitWarning, NonGaussianWeightsWarning

__all__ = ["MomentTensorTransformer", "estimate_batch_size", "BatchSizeWarning",
           "NonGaussianWeightsWarning"]


# the largest batch whose moment tensor "auto" starts compute
_AUTO_TENSOR_MAX_BATCH = 16


def _non_gaussian_message(w_in):
    """Why the input weights clearly are not i.i.d. Gaussian, or ``None``.

    The moment tensor is the Stein identity of a Gaussian (:ref:`theory-f2`): with
    other weights (PyTorch's default ``nn.Linear`` init is uniform, excess
    kurtosis -1.2; a trained layer) it is biased. The test is the sample
    excess kurtosis and the mean, against ``6`` standard errors (and at
    least ``0.2`` and ``0.05 std``). Only the tensor's starts need it: the
    warning is issued where the tensor is computed (:meth:`_fit_tensor`).
    """
    xp, _ = get_namespace(w_in)
    # the entries of every k-th row, at most ~100 000 (strided rows, not a
    # copy of the whole): the standard error (0.016) stays far below the
    # kurtosis threshold (0.2)
    step = max(1, -(-(w_in.shape[0] * w_in.shape[1]) // 100_000))
    w = xp.reshape(w_in[::step, ...], (-1,))
    n = w.shape[0]
    if n < 50:
        return None
    mean, std = float(xp.mean(w)), float(xp.std(w))
    if not std > 0:
        return None
    z = (w - mean) / std
    z = z * z
    kurtosis = float(xp.mean(z * z)) - 3.0
    se = np.sqrt(24.0 / n)
    if abs(kurtosis) > max(0.2, 6 * se) or abs(mean) > max(0.05, 6 / np.sqrt(n)) * std:
        return (
            f"The first-layer weights do not look like i.i.d. Gaussian draws "
            f"(mean {mean:.3g}, std {std:.3g}, excess kurtosis {kurtosis:.3g}; a "
            "centred Gaussian has mean 0 and excess kurtosis 0, PyTorch's "
            "default uniform init -1.2), and the moment tensor is being computed: "
            "it assumes Gaussian weights (Stein's identity) and is biased here, so "
            "its factors are poorer starts. Nothing else needs Gaussian weights: "
            "the per-sample search is exact at any known weights (a trained "
            "model's, PyTorch's default init), from random starts too "
            "(init='random' skips the tensor).")
    return None


@dataclass
class _Projection:
    """A gradient query in span coordinates: what the decomposition and the
    refinement work on. ``P`` and ``Omega`` are ``(m, B)``, ``Z`` the Hermite
    coordinates ``(m, B)``, ``A`` the output weights ``(m, K)``: arrays of the
    input's namespace ``xp``, on its ``device``. ``column_scale`` and
    ``bias_row`` are small host (NumPy) arrays."""

    P: object
    Omega: object
    Z: object
    A: object
    scaled_basis: object  # (n_inputs_aug, B): orthonormal basis of span{D x~_i}
    hermite_basis: object  # (n_random, B): basis of the random coordinates' span
    column_scale: np.ndarray  # D, (n_inputs_aug,), host
    bias_mean: float
    regressors: object  # (m, K * n_bias_orders): known factors of the moments
    degree: int  # Hermite degree p of the moment tensor (order p + 1)
    max_features: int
    xp: object = None
    device: object = None

    @property
    def has_bias(self):
        return self.column_scale.shape[0] > self.hermite_basis.shape[0]

    @property
    def bias_row(self):
        """The scaled basis's bias coordinates ``(B,)`` (host), or ``None``."""
        if not self.has_bias:
            return None
        return to_host(self.scaled_basis[-1, :])

    def take_rows(self, rows):
        """``(P, Omega, A)`` of the neurons ``rows`` (host indices; ``None``: all)."""
        if rows is None:
            return self.P, self.Omega, self.A
        idx = from_host(rows, self.xp, self.device, dtype=self.xp.int64)
        return tuple(self.xp.take(a, idx, axis=0) for a in (self.P, self.Omega, self.A))

    def to_host(self):
        """This projection with every array in NumPy (for the host-only steps)."""
        if is_numpy_namespace(self.xp):
            return self
        if getattr(self, "_host_copy", None) is not None:
            return self._host_copy
        moved = {name: to_host(getattr(self, name))
                 for name in ("P", "Omega", "Z", "A", "scaled_basis", "hermite_basis",
                              "regressors")}
        self._host_copy = _Projection(
            column_scale=self.column_scale, bias_mean=self.bias_mean,
            degree=self.degree, max_features=self.max_features,
            xp=get_namespace()[0], device="cpu", **moved)
        return self._host_copy


def _weight_statistics(weights, bias, weight_std):
    """Input-weight std, and the bias's mean and std (0 for a constant bias)."""
    xp, _ = get_namespace(weights)
    w_in = weights[:, :-1] if bias else weights
    size = w_in.shape[0] * w_in.shape[1]
    with np.errstate(under="ignore", over="ignore"):
        squares = float(xp.sum(column_sum_squares(w_in, xp))) if size else 0.0
    largest = 1.0
    if not 1e-290 < squares < 1e290:
        # scaled by the largest first (squares of 1e-200 underflow)
        largest = float(xp.max(xp.abs(w_in))) if size else 0.0
        if not largest > 0:
            raise ValueError(
                "The first-layer weights are all zero: the weight std must be "
                "positive for the moment method."
            )
        squares = float(xp.sum(column_sum_squares(w_in / largest, xp)))
    rms = largest * float(np.sqrt(squares / size))
    s = rms if weight_std == "auto" else float(weight_std)
    if not 1e-3 <= s / rms <= 1e3:
        raise ValueError(
            f"weight_std={s:.3g} is far from the RMS of the weights ({rms:.3g}): "
            "pass the standard deviation the server drew the weights with, or "
            "weight_std='auto'.")
    if bias:
        b = weights[:, -1]
        bias_mean = float(xp.mean(b))
        bias_std = float(xp.std(b))
        if bias_std <= 1e-12 * max(abs(bias_mean), s):
            bias_std = 0.0
    else:
        bias_mean, bias_std = 0.0, 0.0
    return s, bias_mean, bias_std


class MomentTensorTransformer(TransformerMixin, BaseEstimator):
    """Span of the batch and its Hermite moment tensor, from one gradient.

    Fitting computes the span of the private batch from the singular value
    decomposition of the gradient (its rank is the batch size), projects the
    gradient and the weights onto it, and estimates the Hermite moment tensor
    of order ``p + 1`` in the span by regressing the projected gradient rows
    on the Hermite features of the standardised weights.

    Parameters
    ----------
    n_components : "auto" or int, default="auto"
        Dimension of the span, i.e. the batch size ``B``. ``"auto"`` reads it
        off the largest relative gap of the singular values above the
        round-off floor of the input's dtype (:func:`estimate_batch_size`).
    order : "auto", 3 or 4, default="auto"
        Order of the moment tensor. ``"auto"`` chooses the lowest order whose
        Gaussian moment ``mu_order`` does not vanish for ``activation``
        (3 for tanh, sigmoid, erf, ELU; 4 for ReLU, leaky ReLU, GELU, SiLU,
        softplus without bias).
    activation : str or Activation, default="tanh"
        First-layer activation; see :mod:`skrecon.activations`.
    bias : bool, default=False
        Whether the last column of ``X`` and ``weights`` is the first layer's
        bias.
    weight_std : "auto" or float, default="auto"
        Standard deviation of the server's Gaussian weights (excluding the
        bias). ``"auto"`` reads it off ``weights``.
    max_features : int, default=2000
        Largest number of regressors in the Hermite regression. Above it the
        output weights move to the response, and above that the top degree is
        estimated by a plain average of the lower-degree regression's residual.

    Attributes
    ----------
    components_ : array of shape (n_components, n_features_in)
        Orthonormal basis (rows) of the span of the gradient rows, which is
        the span of the bias-augmented samples.
    singular_values_ : ndarray of shape (min(n_neurons, n_live),) or (n_sketch,)
        The singular values of ``X`` without its all-zero columns (``n_live``
        columns remain), decreasing: all of them, or, for a gradient with at
        least 256 live columns and rows whose spectrum falls to round-off,
        the leading ``n_sketch`` (the batch size and at least 16 more, all
        of those at round-off) from a random sketch of the gradient
        (Halko, Martinsson & Tropp 2011): two thin products with ``X``
        instead of its full factorisation.
    n_components_ : int
        Batch size used.
    spectral_gap_ : float
        ``s_B / s_{B+1}``: how clearly the spectrum shows the batch size.
    noise_level_ : float
        Estimated relative noise in the span coordinates of the gradient
        (dimensionless, ``||noise|| / ||signal||``): the energy of the
        singular values beyond the ``B``-th, spread evenly over all the
        live columns as white noise would be. About ``1e-16`` for an exact
        float64 gradient; a refinement cannot fit below it.
    order_ : int
        Order of ``moment_tensor_``.
    weight_std_, bias_mean_, bias_std_ : float
        Statistics of the server's weights (``bias_std_`` is 0 for a constant
        bias, both bias statistics 0 without bias).
    moment_tensor_ : ndarray of shape (n_components, n_outputs, n_bias_orders) + (n_components,) * (order - 1)
        Hermite moment tensor ``E[d_b^l d^(order-1) h_o]``: first mode in the
        scaled span (``scaled_components_``), then the output mode, then the
        order ``l`` of the derivative in a Gaussian bias (``n_bias_orders`` is
        ``order`` with a Gaussian bias, else 1), then the Hermite modes in the
        span of the inputs. Every slice has the samples as CP components.
    scaled_components_ : ndarray of shape (n_components, n_features_in)
        Orthonormal basis of the span after scaling each column by its
        weight's std: the coordinates of the moment tensor's first mode.
    hermite_components_ : ndarray of shape (n_components, n_inputs)
        Orthonormal basis of the span of the scaled inputs (bias excluded):
        the coordinates of the moment tensor's Hermite modes.
    n_features_in_ : int
        Number of columns of ``X``.

    See Also
    --------
    GradientReconstructor : decomposes this tensor into the batch.

    Notes
    -----
    For ``z ~ N(0, I)`` Stein's lemma gives ``E[g (x) He_p(z)] =
    sum_i mu_{p+1}(x_i) x_i (x) x_i^(x)p`` (:ref:`theory-f2`), a tensor of CP rank
    ``B`` whose components are the samples. It is estimated in ``B``
    dimensions after projecting on the span, never in ``n_inputs``.

    Inputs may be arrays of any Array API library (CuPy on the GPU, ...):
    the QR and SVD of the gradient, the projection and the Hermite
    regression run there, and every fitted array lives in the input's
    namespace and on its device (pickles hold NumPy copies); mixing
    libraries or devices raises a ``ValueError``.

    References
    ----------
    .. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.
    .. [2] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with
       randomness: probabilistic algorithms for constructing approximate
       matrix decompositions", SIAM Review 53(2), 2011.

    Examples
    --------
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon import MomentTensorTransformer
    >>> batch, labels = load_digits_batch(4, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
    >>> mt = MomentTensorTransformer(bias=True).fit(
    ...     q.grad, weights=q.weights, output_weights=q.output_weights)
    >>> mt.n_components_, mt.order_, mt.moment_tensor_.shape
    (4, 3, (4, 1, 3, 4, 4))
    """

    _parameter_constraints = {
        "n_components": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "order": [StrOptions({"auto"}), Interval(Integral, 3, 4, closed="both")],
        "activation": [str, Activation],
        "bias": ["boolean"],
        "weight_std": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "max_features": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, n_components="auto", order="auto", activation="tanh",
                 bias=False, weight_std="auto", max_features=2000):
        self.n_components = n_components
        self.order = order
        self.activation = activation
        self.bias = bias
        self.weight_std = weight_std
        self.max_features = max_features

    # The query's weights are row-aligned metadata, requested by default
    # (routed by Pipeline, GridSearchCV ... under enable_metadata_routing).
    __metadata_request__fit = {"weights": True, "output_weights": True, "noise_std": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, weights=None, output_weights=None, noise_std=None):
        """Compute the span and the moment tensor of a gradient query.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
            First-layer gradient, one row per neuron (bias gradient last when
            ``bias=True``).
        y : None
            Ignored.
        weights : array-like of the shape of ``X``, default=None
            The first-layer weights at which the gradient was taken.
            ``None``: only the span is computed (``components_``,
            ``singular_values_``, ``n_components_``, ``spectral_gap_``,
            ``noise_level_``), with a :class:`~skrecon.exceptions.BlindFitWarning`;
            the moment tensor and the weight statistics need the weights.
        output_weights : array-like of shape (n_neurons, n_outputs) or (n_neurons,), default=None
            The neurons' outgoing weights; ``None`` means all ones. Needs
            ``weights``.
        noise_std : float or array-like of the shape of ``X``, default=None
            The known standard deviation of each gradient entry's error, in
            the gradient's units: a parameter update's round-off, which
            :func:`skrecon.flower.update_query` puts in ``fit_params``. The
            batch size is then the number of singular values above that
            noise's floor. ``None``: read off the spectrum alone.

        Returns
        -------
        self : MomentTensorTransformer
            The fitted transformer.

        Raises
        ------
        ValueError
            If an argument holds NaN or inf, shapes do not match, the
            gradient is zero, the order is not identifiable for the
            activation, the gradient cannot show the batch size (fewer
            neurons than samples, full rank), or ``output_weights`` comes
            without ``weights``.

        Examples
        --------
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(4, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> mt.n_components_, mt.order_, bool(mt.noise_level_ < 1e-12)
        (4, 3, True)
        """
        if weights is None:
            return self._fit_span(X, output_weights, noise_std)
        self._fit(X, weights, output_weights, noise_std=noise_std)
        return self

    def _fit(self, X, weights, output_weights, tensor=True, noise_std=None):
        """Fit and return the projected query (kept out of the fitted state).

        ``tensor=False`` stops after the span and the projection: the
        moment tensor (the costly Hermite regression) is left ``None``;
        ``tensor="auto"`` computes it for batches of at most 16 samples
        whose Hermite features number at most ``max_features`` (beyond,
        Jennrich's starts are poor and the regression costs ``O(m F^2)``).
        """
        X, W, A = check_query(self, X, weights, output_weights, reset=True)
        return self._fit_checked(X, W, A, tensor,
                                 noise_std=check_noise_std(noise_std, X.shape))[0]

    def _fit_checked(self, X, W, A, tensor=True, input_dtype=None, noise_std=None,
                     streamed=None):
        """:meth:`_fit` on a query that :func:`check_query` has validated
        (float64 arrays of one namespace): the reconstructor, which has
        checked it already, passes its input's dtype (the dtype of the
        float attributes)."""
        if input_dtype is not None:
            self.n_features_in_ = X.shape[1]
            self._input_dtype = np.dtype(input_dtype)
        activation = get_activation(self.activation)
        s, bias_mean, bias_std = _weight_statistics(W, self.bias, self.weight_std)
        # (warned about where the moment tensor is computed, which needs them)
        self._non_gaussian = _non_gaussian_message(W[:, :-1] if self.bias else W)
        # A Gaussian bias drawn with mean 0 has a sample mean of order
        # std / sqrt(m): the parity argument of the theory page (F3) holds for its law.
        m_rows = X.shape[0]
        significant = abs(bias_mean) > 4 * bias_std / np.sqrt(m_rows)
        order_mean = bias_mean if (bias_std == 0 or significant) else 0.0
        self.order_ = select_tensor_order(activation, order_mean, order=self.order)
        m, n_cols = X.shape

        xp, device = get_namespace(X)
        floor = None if noise_std is None else noise_floor(noise_std)
        span = fit_span(X, self.n_components, xp, device, noise_floor=floor,
                        streamed=streamed)
        basis, sv, B, gap = span.basis, span.singular_values, span.batch_size, span.gap

        # Scale each column by its weight's std, so that the weights become
        # standard normal (theory page, F4). The Hermite modes live in the input
        # coordinates; a Gaussian bias is one more (nuisance) regressor, a
        # constant bias stays in the first mode only.
        scale = np.full(n_cols, s)
        gaussian_bias = bool(self.bias) and bias_std > 0
        if gaussian_bias:
            scale[-1] = bias_std
        centre = np.zeros(n_cols)
        if gaussian_bias:
            centre[-1] = bias_mean
        # the random coordinates: all but a constant bias
        n_random = n_cols - 1 if (self.bias and not gaussian_bias) else n_cols
        n_in = n_cols - 1 if self.bias else n_cols
        scale_x = from_host(scale, xp, device)
        # thin (n_cols x B) factorisations: one BLAS thread (two threads on a
        # loaded two-core machine: 12 s for these two at 3073 x 128)
        with blas_threads(1):
            scaled_basis = xp.linalg.qr(basis * scale_x[:, None])[0]
            if n_in == n_cols:
                hermite_basis = scaled_basis
            else:
                hermite_basis = xp.linalg.qr(scaled_basis[:n_in, :])[0]
        # B = n_in + 1 with a bias (the span is the whole space): the inputs
        # span only n_in Hermite modes, too few for B samples' tensor; the
        # span and the search need no more, so the missing modes are zero
        # columns and the tensor is declined (_fit_tensor)
        n_modes = hermite_basis.shape[1]
        if n_modes < B:
            hermite_basis = xp.concat(
                [hermite_basis, xp.zeros((n_in, B - n_modes), dtype=X.dtype,
                                         device=device)], axis=1)
        self._n_hermite_modes = n_modes
        # With Wz = (W - centre) / scale the standardised weights, Omega =
        # Wz[:, :n_random] @ scaled_basis[:n_random] and Z = Wz[:, :n_in] @
        # hermite_basis: both from one product of W with the small (n_cols,
        # 2B) matrix M, so that no (m, n_cols) temporary is formed
        M = xp.zeros((n_cols, 2 * B), dtype=X.dtype, device=device)
        M[:n_random, :B] = scaled_basis[:n_random, :]
        M[:n_in, B:] = hermite_basis
        M = M / scale_x[:, None]
        centre_x = from_host(centre, xp, device)
        OZ = W @ M - (centre_x @ M)[None, :]
        Omega, Z = OZ[:, :B], OZ[:, B:]
        P = X @ (scale_x[:, None] * scaled_basis)
        degree = self.order_ - 1
        n_bias_orders = degree + 1 if gaussian_bias else 1
        bias_z = (W[:, -1] - bias_mean) / bias_std if gaussian_bias else None
        R = bias_regressors(A, bias_z, n_bias_orders)
        dtype = getattr(xp, self._input_dtype.name)  # float32 input: float32 attributes
        self.components_ = xp.astype(basis.T, dtype)
        self.singular_values_ = from_host(sv, xp, device, dtype=dtype)
        self.n_components_ = B
        self.spectral_gap_ = gap
        self.noise_level_ = span.noise_level
        self.weight_std_ = s
        self.bias_mean_ = bias_mean if self.bias else 0.0
        self.bias_std_ = bias_std
        self.scaled_components_ = xp.astype(scaled_basis.T, dtype)
        self.hermite_components_ = xp.astype(hermite_basis.T, dtype)
        proj = _Projection(P, Omega, Z, A, scaled_basis, hermite_basis,
                           scale, self.bias_mean_, R, degree, self.max_features,
                           xp=xp, device=device)
        self._moment_tensor_host = self._lower_moments = self.moment_tensor_ = None
        self._fit_tensor(proj, tensor)
        return proj, span

    def _fit_tensor(self, proj, tensor="auto"):
        """The moment tensor of a fitted projection (the Hermite regression):
        sets ``moment_tensor_`` and its host copies, and returns whether it
        was computed. ``tensor="auto"``: only for batches of at most 16
        samples whose Hermite features number at most ``max_features``;
        ``False``: not at all (``moment_tensor_`` stays ``None``). The
        search engine calls it late, when its first starts need help."""
        B, degree = self.n_components_, proj.degree
        too_many = self._n_hermite_modes < B
        if tensor == "auto":
            tensor = (B <= _AUTO_TENSOR_MAX_BATCH and not too_many
                      and n_hermite_features(B, degree) <= self.max_features)
        if not tensor:
            return False
        if too_many:
            n_in = self._n_hermite_modes
            raise ValueError(
                f"The moment tensor cannot separate {B} samples: with the bias "
                f"column, {B} components span the whole space, and the samples' "
                f"inputs have only {n_in} coordinates, fewer than the samples (a "
                f"tensor of {n_in} dimensions has at most {n_in} separable "
                f"factors). Use n_components <= {n_in}, or, to reconstruct "
                f"{B} samples, GradientReconstructor with init='random' or 'auto' "
                "(the column-space search needs no tensor).")
        if getattr(self, "_non_gaussian", None):
            warnings.warn(self._non_gaussian, NonGaussianWeightsWarning)
        try:
            tensors = hermite_regression(proj.Z, proj.P, proj.regressors, degree,
                                          self.max_features)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "The Hermite regression of the moment tensor is singular: its "
                "features do not vary across neurons (weights constant, of rank "
                "one, or far from i.i.d. Gaussian, or too few neurons). The "
                "moment tensor needs i.i.d. Gaussian first-layer weights "
                f"(skrecon.torch.gaussian_reinit_). ({exc})") from exc
        K = proj.A.shape[1]
        tensors = [t.reshape((B, K, -1) + t.shape[2:]) for t in tensors]
        self._moment_tensor_host = tensors[degree]
        self._lower_moments = tensors[:degree]
        self.moment_tensor_ = from_host(tensors[degree], proj.xp, proj.device,
                                        dtype=getattr(proj.xp, self._input_dtype.name))
        return True

    def _tensor_for_starts(self, proj, tensor="auto"):
        """``(T, T0, order, weight_std)`` for the search's starts: the host
        moment tensor, its order-0 moments, its order and the weights' std,
        the tensor computed now (:meth:`_fit_tensor`) if it was not; ``None``
        when ``tensor="auto"`` declines it. Bound to its projection, this is
        the callable the functional core gets (it never sees the estimator)."""
        if self._moment_tensor_host is None and not self._fit_tensor(proj, tensor):
            return None
        return (self._moment_tensor_host, self._lower_moments[0], self.order_,
                self.weight_std_)

    def transform(self, X):
        """Coordinates of gradient rows in the span.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_features_in)
            Gradient rows.

        Returns
        -------
        X_new : ndarray of shape (n_neurons, n_components)
            ``X @ components_.T``.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``n_features_in_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(4, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> coords = mt.transform(q.grad)
        >>> coords.shape
        (2000, 4)
        >>> bool(np.allclose(mt.inverse_transform(coords), q.grad))
        True
        """
        check_is_fitted(self, "components_")
        xp, out_dtype = transform_namespace(self, X, self.components_)
        X = check_query(self, X, None, None, reset=False)[0]
        return xp.astype(X @ xp.astype(self.components_, xp.float64).T, out_dtype)

    def inverse_transform(self, X):
        """Map span coordinates back to gradient rows (bias column included).

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_components)
            Span coordinates, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_neurons, n_features_in)
            ``X @ components_``.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``n_components_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import MomentTensorTransformer
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(2, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1000, random_state=0)
        >>> mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
        >>> mt.inverse_transform(np.eye(2)).shape  # the basis vectors of the span
        (2, 65)
        """
        check_is_fitted(self, "components_")
        X, xp, out_dtype = check_coefficients(self, X, self.n_components_, self.components_)
        return xp.astype(X @ xp.astype(self.components_, xp.float64), out_dtype)

    def __getstate__(self):
        # fitted arrays are pickled as NumPy arrays: loadable without the
        # device (or the library) they were computed on
        return host_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # set only by a fit with weights; a span-only refit removes them
    _TENSOR_ONLY = ("order_", "weight_std_", "bias_mean_", "bias_std_",
                    "scaled_components_", "hermite_components_", "moment_tensor_",
                    "_moment_tensor_host", "_lower_moments")

    def _fit_span(self, X, output_weights, noise_std=None):
        """:meth:`fit` without weights: the span of the batch only."""

        if output_weights is not None:
            raise ValueError(
                "output_weights was given without weights: without weights only "
                "the span is computed, which uses neither. Pass weights=W too, "
                "or drop output_weights.")
        X = check_query(self, X, None, None, reset=True, require_weights=False)[0]
        xp, device = get_namespace(X)
        if not bool(xp.any(X != 0)):
            raise ValueError("The gradient X is zero everywhere: it carries no "
                             "information about the batch.")
        warnings.warn(
            "MomentTensorTransformer.fit got no weights: it computed the span of "
            "the batch only (components_, singular_values_, n_components_, "
            "spectral_gap_, noise_level_). The moment tensor (moment_tensor_, "
            "order_, the weight statistics) needs the first-layer weights: pass "
            "weights=W.", BlindFitWarning)
        noise_std = check_noise_std(noise_std, X.shape)
        floor = None if noise_std is None else noise_floor(noise_std)
        span = fit_span(X, self.n_components, xp, device, noise_floor=floor)
        basis, sv, B, gap = span.basis, span.singular_values, span.batch_size, span.gap
        for name in self._TENSOR_ONLY:
            self.__dict__.pop(name, None)
        dtype = getattr(xp, self._input_dtype.name)
        self.components_ = xp.astype(basis.T, dtype)
        self.singular_values_ = from_host(sv, xp, device, dtype=dtype)
        self.n_components_ = B
        self.spectral_gap_ = gap
        self.noise_level_ = span.noise_level
        return self
