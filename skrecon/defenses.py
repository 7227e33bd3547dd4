"""Defences against gradient inversion, as transformers of the gradient.

Every defence here is a scikit-learn transformer of the observed first-layer
gradient ``X`` of shape ``(n_neurons, n_inputs)`` (one row per neuron; the
bias gradient, when present, is the last column and is treated like any other
column). A defence is therefore an experiment step; the weights reach the
reconstructor through scikit-learn's metadata routing (the noise here is 1 %
of the gradient's RMS: ``relative=True``)::

    sklearn.set_config(enable_metadata_routing=True)
    attack = make_pipeline(GaussianGradientNoise(scale=0.01, relative=True),
                           GradientReconstructor(bias=True))
    attack.fit(grad, weights=W, output_weights=A)

The transformers share these conventions:

- ``__init__`` only stores its keyword-only parameters; they are validated
  by :meth:`fit` (scikit-learn's ``InvalidParameterError``, a
  ``ValueError``).
- :meth:`fit` validates ``X`` (2-D, finite, converted to a float dtype;
  float32 is preserved) and learns only ``n_features_in_``; :meth:`transform`
  checks that ``X`` has that many columns and returns a new array, never
  modifying its input.
- Each acts on the *whole* gradient matrix as the server sees it (a global
  threshold, a global range, a global noise level), not on rows
  independently, which is what a client applying the defence to the update it
  sends does.
"""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "GaussianGradientNoise",
    "RowNormClipping",
    "GlobalNormClipping",
    "TopKPruning",
    "UniformQuantization",
]

_FLOAT_DTYPES = (np.float64, np.float32)


class _GradientDefense(TransformerMixin, BaseEstimator):
    """Common fit / validation for gradient defences (private base)."""

    def _validate(self, X, *, reset):
        return validate_data(
            self,
            X,
            reset=reset,
            dtype=_FLOAT_DTYPES,
            ensure_all_finite=True,
            copy=False,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters and learn the number of gradient columns.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_inputs)
            The observed gradient, one row per neuron. Must be finite.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._validate(X, reset=True)
        return self

    def transform(self, X):
        """Apply the defence to a gradient.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_inputs)
            The observed gradient, one row per neuron, with ``n_features_in_``
            columns. Must be finite.

        Returns
        -------
        X_defended : ndarray of shape (n_neurons, n_inputs)
            The defended gradient, a new array of the dtype of ``X`` (float32
            kept, anything else converted to float64).
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        return self._defend(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class GaussianGradientNoise(_GradientDefense):
    """Add i.i.d. Gaussian noise to every entry of the gradient.

    Parameters
    ----------
    scale : float, default=0.0
        Standard deviation of the noise, ``>= 0``: in the units of the
        gradient entries when ``relative=False``; a dimensionless fraction of
        the gradient's Frobenius norm when ``relative=True``. ``0`` is the
        identity.
    relative : bool, default=False
        If True, the standard deviation of each entry is
        ``scale * ||X||_F / sqrt(X.size)``, computed on the ``X`` being
        transformed, so the Frobenius norm of the noise is about
        ``scale * ||X||_F`` (a signal-to-noise ratio of ``1 / scale``).
    random_state : int, RandomState instance or None, default=None
        Seeds the noise. An int gives the *same* noise on every call to
        :meth:`transform` with a gradient of the same shape (bitwise
        reproducible). A :class:`numpy.random.RandomState` instance gives new
        noise on each call, advancing that instance. ``None`` gives fresh,
        unreproducible noise from operating-system entropy on each call; the
        global ``np.random`` state is never used or advanced.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the columns seen in :meth:`fit`, when ``X`` has string column
        names.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At :meth:`fit`, if ``scale`` is negative, ``relative`` is not a bool
        or ``random_state`` is not an int, RandomState or None (a
        ``ValueError``).
    ValueError
        If ``X`` is not 2-D or contains NaN or infinity, or if
        :meth:`transform` gets a different number of columns than :meth:`fit`.

    See Also
    --------
    TopKPruning : Another defence studied by Zhu et al. (2019).

    Notes
    -----
    The noise for one call is drawn as
    ``np.random.default_rng(seed).standard_normal(X.shape)`` with
    ``seed = check_random_state(random_state).randint(2**31 - 1)`` (or,
    for ``random_state=None``, from ``np.random.default_rng()``), then
    multiplied by the standard deviation and cast to the dtype of ``X``.

    Noise added by the client to its update is the defence evaluated by Zhu
    et al. (2019); noise calibrated to per-example clipping is the Gaussian
    mechanism of DP-SGD (Abadi et al., 2016), which needs the clipping in
    the client (see ``skrecon.clients.make_gradient_query(dp_clip_norm=...)``).

    References
    ----------
    .. [1] L. Zhu, Z. Liu and S. Han, "Deep Leakage from Gradients",
       NeurIPS 2019.
    .. [2] M. Abadi et al., "Deep Learning with Differential Privacy",
       ACM CCS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.defenses import GaussianGradientNoise
    >>> X = np.ones((200, 50))
    >>> noise = GaussianGradientNoise(scale=0.1, relative=True, random_state=0)
    >>> Xn = noise.fit_transform(X)
    >>> round(float(np.linalg.norm(Xn - X) / np.linalg.norm(X)), 2)
    0.1
    >>> bool(np.array_equal(noise.transform(X), Xn))
    True
    """

    _parameter_constraints: dict = {
        "scale": [Interval(Real, 0, None, closed="left")],
        "relative": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, *, scale=0.0, relative=False, random_state=None):
        self.scale = scale
        self.relative = relative
        self.random_state = random_state

    def _rng(self):
        if self.random_state is None:
            return np.random.default_rng()
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return np.random.default_rng(seed)

    def _defend(self, X):
        std = float(self.scale)
        if self.relative and X.size:
            std *= float(np.linalg.norm(X)) / math.sqrt(X.size)
        noise = self._rng().standard_normal(X.shape)
        return (X + std * noise).astype(X.dtype, copy=False)


class RowNormClipping(_GradientDefense):
    """Clip the Euclidean norm of each neuron's gradient row.

    Each row ``X[j]`` (including the bias column when present) with
    ``||X[j]|| > max_norm`` is scaled to norm ``max_norm``; rows at or below
    the threshold are returned unchanged, bit for bit.

    Parameters
    ----------
    max_norm : float, default=1.0
        Largest Euclidean norm of a row after clipping, in the units of the
        gradient; ``> 0``.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the columns seen in :meth:`fit`, when ``X`` has string column
        names.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At :meth:`fit`, if ``max_norm <= 0`` (a ``ValueError``).
    ValueError
        If ``X`` is not 2-D or contains NaN or infinity, or if
        :meth:`transform` gets a different number of columns than :meth:`fit`.

    See Also
    --------
    GlobalNormClipping : Clip the norm of the whole matrix.

    Notes
    -----
    This is clipping of the aggregate gradient, per neuron: it changes the
    relative weight of the neurons but not the direction of any row. It is
    not the per-example clipping of DP-SGD (Abadi et al., 2016), which the
    server cannot apply to an aggregate gradient; that happens in the client,
    see ``skrecon.clients.make_gradient_query(dp_clip_norm=...)``.

    References
    ----------
    .. [1] M. Abadi et al., "Deep Learning with Differential Privacy",
       ACM CCS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.defenses import RowNormClipping
    >>> X = np.array([[3.0, 4.0], [0.3, 0.4]])
    >>> RowNormClipping(max_norm=1.0).fit_transform(X)
    array([[0.6, 0.8],
           [0.3, 0.4]])
    """

    _parameter_constraints: dict = {
        "max_norm": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, max_norm=1.0):
        self.max_norm = max_norm

    def _defend(self, X):
        out = X.copy()
        norms = np.linalg.norm(X, axis=1)
        over = norms > self.max_norm
        out[over] = X[over] * (self.max_norm / norms[over])[:, None]
        return out


class GlobalNormClipping(_GradientDefense):
    """Clip the Frobenius norm of the whole gradient matrix.

    ``X`` is scaled by ``min(1, max_norm / ||X||_F)``.

    Parameters
    ----------
    max_norm : float, default=1.0
        Largest Frobenius norm of the gradient after clipping, in the units
        of the gradient; ``> 0``.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the columns seen in :meth:`fit`, when ``X`` has string column
        names.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At :meth:`fit`, if ``max_norm <= 0`` (a ``ValueError``).
    ValueError
        If ``X`` is not 2-D or contains NaN or infinity, or if
        :meth:`transform` gets a different number of columns than :meth:`fit`.

    See Also
    --------
    RowNormClipping : Clip each neuron's row separately.

    Notes
    -----
    This is a single global scale of the gradient, and skrecon's
    reconstruction is invariant to a global scale of the gradient (the same
    batch is recovered from a ``"mean"`` or ``"sum"`` loss, or any learning
    rate), so this defence changes nothing for skrecon. It is provided to
    show exactly that. The clipping that is a defence is the per-example
    clipping of DP-SGD (Abadi et al., 2016), applied to each sample's
    gradient before aggregation; it happens in the client, see
    ``skrecon.clients.make_gradient_query(dp_clip_norm=...)``.

    References
    ----------
    .. [1] M. Abadi et al., "Deep Learning with Differential Privacy",
       ACM CCS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.defenses import GlobalNormClipping
    >>> X = np.array([[3.0, 0.0], [0.0, 4.0]])
    >>> GlobalNormClipping(max_norm=1.0).fit_transform(X)
    array([[0.6, 0. ],
           [0. , 0.8]])
    """

    _parameter_constraints: dict = {
        "max_norm": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, max_norm=1.0):
        self.max_norm = max_norm

    def _defend(self, X):
        norm = float(np.linalg.norm(X))
        if norm <= self.max_norm:
            return X.copy()
        return (X * (self.max_norm / norm)).astype(X.dtype, copy=False)


class TopKPruning(_GradientDefense):
    """Keep the largest-magnitude entries of the gradient, zero the rest.

    Parameters
    ----------
    keep_fraction : float, default=0.1
        Fraction of entries kept, in ``(0, 1]``: the ``k =
        ceil(keep_fraction * X.size)`` entries of largest absolute value of
        the whole matrix are kept, the others set to 0. ``1`` is the
        identity.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the columns seen in :meth:`fit`, when ``X`` has string column
        names.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At :meth:`fit`, if ``keep_fraction`` is not in ``(0, 1]`` (a
        ``ValueError``).
    ValueError
        If ``X`` is not 2-D or contains NaN or infinity, or if
        :meth:`transform` gets a different number of columns than :meth:`fit`.

    See Also
    --------
    UniformQuantization : Another compression of the update.

    Notes
    -----
    Exactly ``k`` entries are kept. Ties in absolute value at the threshold
    are broken deterministically in favour of the entry that comes first in
    C (row-major) order. The threshold is global, so the number of entries
    kept per neuron varies. Gradient pruning (sparsification) is the defence
    found most effective by Zhu et al. (2019) at high pruning ratios.

    References
    ----------
    .. [1] L. Zhu, Z. Liu and S. Han, "Deep Leakage from Gradients",
       NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.defenses import TopKPruning
    >>> X = np.array([[0.1, -3.0], [2.0, 0.5]])
    >>> TopKPruning(keep_fraction=0.5).fit_transform(X)
    array([[ 0., -3.],
           [ 2.,  0.]])
    """

    _parameter_constraints: dict = {
        "keep_fraction": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(self, *, keep_fraction=0.1):
        self.keep_fraction = keep_fraction

    def _defend(self, X):
        flat = X.ravel()
        k = min(flat.size, math.ceil(self.keep_fraction * flat.size))
        out = np.zeros_like(X)
        if k == 0:
            return out
        keep = np.argsort(-np.abs(flat), kind="stable")[:k]
        out.ravel()[keep] = flat[keep]
        return out


class UniformQuantization(_GradientDefense):
    """Quantise every gradient entry to ``2**n_bits`` uniform levels.

    With ``m = max|X|`` and ``L = 2**n_bits``, the levels are the ``L``
    equally spaced values ``-m, -m + step, ..., m`` with
    ``step = 2 m / (L - 1)`` (symmetric about 0), and each entry is rounded
    to the nearest level. The quantisation error of every entry is at most
    ``step / 2``.

    Parameters
    ----------
    n_bits : int, default=8
        Bits per entry, in ``[1, 32]``; the number of levels is
        ``2**n_bits``. ``n_bits=1`` sends ``m * sign(X)``.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the columns seen in :meth:`fit`, when ``X`` has string column
        names.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At :meth:`fit`, if ``n_bits`` is not an int in ``[1, 32]`` (a
        ``ValueError``).
    ValueError
        If ``X`` is not 2-D or contains NaN or infinity, or if
        :meth:`transform` gets a different number of columns than :meth:`fit`.

    Notes
    -----
    The range ``m`` is that of the ``X`` being transformed (sent alongside
    the codes, as in any scaled quantiser). The quantiser is deterministic
    (no stochastic rounding). Because the number of levels is even, 0 is not
    a level: an entry exactly between two levels (0 included) goes to the
    upper one, so zeros become ``+step / 2``. An all-zero gradient stays
    zero. The computation is done in float64 and cast back to the dtype of
    ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.defenses import UniformQuantization
    >>> X = np.array([[-1.0, -0.4], [0.2, 1.0]])
    >>> UniformQuantization(n_bits=2).fit_transform(X)
    array([[-1.        , -0.33333333],
           [ 0.33333333,  1.        ]])
    """

    _parameter_constraints: dict = {
        "n_bits": [Interval(Integral, 1, 32, closed="both")],
    }

    def __init__(self, *, n_bits=8):
        self.n_bits = n_bits

    def _defend(self, X):
        Xd = np.asarray(X, dtype=np.float64)
        m = float(np.max(np.abs(Xd))) if Xd.size else 0.0
        if m == 0.0:
            return np.zeros_like(X)
        half = 2.0 ** (int(self.n_bits) - 1)  # L / 2
        step = m / (half - 0.5)  # 2 m / (L - 1)
        # Midrise levels step * (j + 1/2), j = -L/2 .. L/2 - 1.
        j = np.clip(np.floor(Xd / step), -half, half - 1)
        return (step * (j + 0.5)).astype(X.dtype, copy=False)
