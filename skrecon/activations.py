"""Activation functions, their derivatives and their Gaussian moments.

Every activation of the first layer is an :class:`Activation`: the function
``sigma``, its first two derivatives (the gradient model needs ``sigma'`` and
the Gauss-Newton Jacobian ``sigma''``) and, through :meth:`Activation.mu`, the
Gaussian expectations ``mu_k = E[sigma^(k)(t)]``, ``t ~ N(mean, tau**2)``
that weigh each sample in the Hermite moment tensor (facts F2 and F3 of
the theory page, :ref:`theory-f2`, :ref:`theory-f3`).
"""

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit as _scipy_expit

from ._array_api import elementwise_namespace as _ns
from ._array_api import special_function
from ._hermite import gaussian_expectation_stein

__all__ = ["Activation", "get_activation", "ACTIVATIONS", "select_tensor_order"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)  # Python floats: any namespace takes them

# The built-in activations are written with Array API functions only (plus
# erf, from the namespace's special functions), so they evaluate in the
# namespace of their argument: NumPy on the host, CuPy on the GPU.


def _expit(t):
    xp = _ns(t)
    if xp is np:
        return _scipy_expit(t)
    e = xp.exp(-xp.abs(t))  # never overflows
    return xp.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # arrays, not scalars


def _erf(t):
    return special_function(_ns(t), "erf")(t)


def _phi(t):
    return _ns(t).exp(-0.5 * t * t) / _SQRT_2PI


def _Phi(t):
    return 0.5 * (1.0 + _erf(t / math.sqrt(2.0)))


def _tanh(t):
    return _ns(t).tanh(t)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation with its derivatives.

    Parameters
    ----------
    name : str
        Name used in messages and in the registry.
    function : callable
        ``sigma(t)``, elementwise on an array ``t``. Inputs of another
        array namespace (CuPy ...) reach the callables as arrays of that
        namespace: the built-in activations are written with Array API
        functions; a custom one must be too, to be used with such inputs.
    derivatives : tuple of callable
        ``(sigma', sigma'')``, elementwise. ``sigma''`` may be zero almost
        everywhere (ReLU) - the refinement then keeps the activation pattern
        fixed within one Gauss-Newton step.
    kinks : tuple of float, default=()
        Points where ``sigma'`` or ``sigma''`` is not smooth. The Gaussian
        expectations split their quadrature there.
    even_derivative : bool or None, default=None
        ``True`` when ``sigma'`` is even (tanh, sigmoid, erf): without a bias
        the sign of each sample is then not identifiable. ``None`` lets
        :func:`get_activation` decide numerically.
    scale_free : bool, default=False
        ``True`` when ``sigma'(c t) = sigma'(t)`` for ``c > 0`` (ReLU, leaky
        ReLU): without a bias the norm of each sample is not identifiable.
    linear : bool, default=False
        ``True`` for the identity: the gradient reveals only the span.
    params : dict, default={}
        The activation's own parameters (``negative_slope`` of leaky ReLU,
        ``alpha`` of ELU), for display; the callables already use them.

    See Also
    --------
    get_activation : The built-in activations, by name.
    select_tensor_order : The moment order an activation needs.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.activations import Activation
    >>> cube = Activation("cube", lambda t: t**3, (lambda t: 3 * t**2, lambda t: 6 * t))
    >>> float(cube.derivative(np.array(2.0), 1))
    12.0
    """

    name: str
    function: object
    derivatives: tuple
    kinks: tuple = ()
    even_derivative: object = None
    scale_free: bool = False
    linear: bool = False
    params: dict = field(default_factory=dict)

    def __call__(self, t):
        return self.function(t)

    def derivative(self, t, order=1):
        """Evaluate the derivative ``sigma^(order)(t)``, elementwise.

        Parameters
        ----------
        t : float or ndarray
            Pre-activations ``w . x + b``.
        order : {1, 2}, default=1
            Which derivative: ``sigma'`` (the gradient model) or ``sigma''``
            (the Jacobian of its fit).

        Returns
        -------
        derivative : ndarray
            ``sigma^(order)(t)``, same shape as ``t``.

        Raises
        ------
        ValueError
            If ``order`` is not 1 or 2.

        Examples
        --------
        >>> from skrecon.activations import get_activation
        >>> tanh = get_activation("tanh")
        >>> float(tanh.derivative(0.0)), float(tanh.derivative(0.0, order=2))
        (1.0, -0.0)
        """
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}.")
        return self.derivatives[order - 1](t)

    def mu(self, k, tau, mean=0.0):
        """Gaussian moment ``mu_k = E[sigma^(k)(t)]``, ``t ~ N(mean, tau**2)``.

        Computed in Stein's form ``E[sigma'(t) He_{k-1}((t - mean)/tau)] /
        tau**(k-1)`` by Gauss-Hermite quadrature (split at kinks), so it is
        defined for kinked activations too.

        Parameters
        ----------
        k : int
            Derivative order, ``k >= 1``.
        tau : float or ndarray
            Standard deviation(s) of the pre-activation, ``> 0``.
        mean : float, default=0.0
            Mean of the pre-activation (a constant bias).

        Returns
        -------
        mu : ndarray
            Same shape as ``tau``.

        References
        ----------
        .. [1] C. M. Stein, "Estimation of the mean of a multivariate normal
           distribution", The Annals of Statistics 9(6), 1981.

        Examples
        --------
        ReLU's fourth moment has the closed form ``-1 / (sqrt(2 pi) tau^3)``;
        tanh's third is nonzero, its fourth vanishes without a bias:

        >>> import numpy as np
        >>> from skrecon.activations import get_activation
        >>> relu = get_activation("relu")
        >>> bool(np.isclose(relu.mu(4, 1.0), -1 / np.sqrt(2 * np.pi)))
        True
        >>> tanh = get_activation("tanh")
        >>> bool(tanh.mu(3, 1.0) < 0), bool(abs(tanh.mu(4, 1.0)) < 1e-12)
        (True, True)
        """
        return gaussian_expectation_stein(
            lambda t: self.derivative(t, 1), k, tau, mean, kinks=self.kinks
        )


def _tanh_d1(t):
    return 1.0 - _ns(t).tanh(t) ** 2


def _tanh_d2(t):
    th = _ns(t).tanh(t)
    return -2.0 * th * (1.0 - th**2)


def _sigmoid_d1(t):
    s = _expit(t)
    return s * (1.0 - s)


def _sigmoid_d2(t):
    s = _expit(t)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _erf_d1(t):
    return 2.0 / math.sqrt(math.pi) * _ns(t).exp(-t * t)


def _erf_d2(t):
    return -4.0 / math.sqrt(math.pi) * t * _ns(t).exp(-t * t)


def _relu(t):
    xp = _ns(t)
    return xp.maximum(t, xp.zeros_like(xp.asarray(t)))


def _step(t):
    xp = _ns(t)
    t = xp.asarray(t)
    return xp.where(t > 0, xp.ones_like(t), xp.zeros_like(t))


def _zeros(t):
    return 0.0 * t


def _make_leaky_relu(negative_slope=0.01):
    a = float(negative_slope)

    def f(t):
        return _ns(t).where(t > 0, t, a * t)  # arrays, not scalars

    def d1(t):
        xp = _ns(t)
        ones = xp.ones_like(xp.asarray(t))
        return xp.where(t > 0, ones, a * ones)

    return Activation(
        "leaky_relu", f, (d1, _zeros), kinks=(0.0,), even_derivative=False,
        scale_free=True, params={"negative_slope": a},
    )


def _make_elu(alpha=1.0):
    a = float(alpha)

    # no Python scalars in minimum / where: the Array API allows them only
    # from its 2024.12 revision
    def f(t):
        xp = _ns(t)
        t = xp.asarray(t)
        return xp.where(t > 0, t, a * xp.expm1(xp.minimum(t, xp.zeros_like(t))))

    def d1(t):
        xp = _ns(t)
        t = xp.asarray(t)
        return xp.where(t > 0, xp.ones_like(t), a * xp.exp(xp.minimum(t, xp.zeros_like(t))))

    def d2(t):
        xp = _ns(t)
        t = xp.asarray(t)
        return xp.where(t > 0, xp.zeros_like(t), a * xp.exp(xp.minimum(t, xp.zeros_like(t))))

    return Activation("elu", f, (d1, d2), kinks=(0.0,), even_derivative=False,
                      params={"alpha": a})


def _gelu(t):
    return t * _Phi(t)


def _gelu_d1(t):
    return _Phi(t) + t * _phi(t)


def _gelu_d2(t):
    return _phi(t) * (2.0 - t * t)


def _silu(t):
    return t * _expit(t)


def _silu_d1(t):
    s = _expit(t)
    return s + t * s * (1.0 - s)


def _silu_d2(t):
    s = _expit(t)
    return s * (1.0 - s) * (2.0 + t * (1.0 - 2.0 * s))


def _softplus(t):
    xp = _ns(t)
    if xp is np:
        return np.logaddexp(0.0, t)
    return xp.maximum(t, xp.zeros_like(t)) + xp.log1p(xp.exp(-xp.abs(t)))


def _identity(t):
    return t


def _ones(t):
    return 1.0 + 0.0 * t


ACTIVATIONS = {
    "tanh": Activation("tanh", _tanh, (_tanh_d1, _tanh_d2), even_derivative=True),
    "sigmoid": Activation("sigmoid", _expit, (_sigmoid_d1, _sigmoid_d2),
                          even_derivative=True),
    "erf": Activation("erf", _erf, (_erf_d1, _erf_d2), even_derivative=True),
    "relu": Activation("relu", _relu, (_step, _zeros), kinks=(0.0,),
                       even_derivative=False, scale_free=True),
    "leaky_relu": _make_leaky_relu(),
    "elu": _make_elu(),
    "gelu": Activation("gelu", _gelu, (_gelu_d1, _gelu_d2), even_derivative=False),
    "silu": Activation("silu", _silu, (_silu_d1, _silu_d2), even_derivative=False),
    "softplus": Activation("softplus", _softplus, (_expit, _sigmoid_d1),
                           even_derivative=False),
    "identity": Activation("identity", _identity, (_ones, _zeros),
                           even_derivative=True, linear=True),
}
"""The built-in activations, by name (dict of str to :class:`Activation`).

Keys: ``"tanh"``, ``"sigmoid"``, ``"erf"``, ``"relu"``, ``"leaky_relu"``
(``negative_slope=0.01``), ``"elu"`` (``alpha=1``), ``"gelu"``, ``"silu"``,
``"softplus"``, ``"identity"``. :func:`get_activation` reads it and builds
leaky ReLU and ELU with other parameters.

Examples
--------
>>> from skrecon.activations import ACTIVATIONS
>>> sorted(ACTIVATIONS)[:4]
['elu', 'erf', 'gelu', 'identity']
>>> ACTIVATIONS["relu"].scale_free
True
"""


def get_activation(activation, **params):
    """Return the :class:`Activation` for a name or pass an instance through.

    Parameters
    ----------
    activation : str or Activation
        One of ``ACTIVATIONS`` (``"tanh"``, ``"sigmoid"``, ``"erf"``,
        ``"relu"``, ``"leaky_relu"``, ``"elu"``, ``"gelu"``, ``"silu"``,
        ``"softplus"``, ``"identity"``) or a custom :class:`Activation`.
    **params
        ``negative_slope`` for ``"leaky_relu"``, ``alpha`` for ``"elu"``.

    Returns
    -------
    activation : Activation
        The registered activation, a new one when ``params`` are given, or
        ``activation`` itself when it is an :class:`Activation`.

    Raises
    ------
    ValueError
        If the name is unknown.

    Examples
    --------
    >>> from skrecon.activations import get_activation
    >>> get_activation("tanh").name
    'tanh'
    >>> get_activation("leaky_relu", negative_slope=0.2).params
    {'negative_slope': 0.2}
    """
    if isinstance(activation, Activation):
        return activation
    if activation == "leaky_relu" and params:
        return _make_leaky_relu(**params)
    if activation == "elu" and params:
        return _make_elu(**params)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} "
            "or an skrecon.activations.Activation instance."
        )
    return ACTIVATIONS[activation]


_TAU_GRID = np.array([0.3, 0.7, 1.5, 3.0])


def _relative_moment(activation, k, mean):
    """max over a tau grid of |mu_k tau^(k-1)| / max |mu_1|: scale-free size."""
    mu1 = np.abs(activation.mu(1, _TAU_GRID, mean)).max()
    muk = np.abs(activation.mu(k, _TAU_GRID, mean) * _TAU_GRID ** (k - 1)).max()
    return muk / max(mu1, np.finfo(float).tiny)


def select_tensor_order(activation, bias_mean=0.0, *, order="auto", tol=1e-8):
    """Choose the order ``p + 1`` of the moment tensor (:ref:`theory-f3`).

    The lowest ``p >= 2`` for which ``mu_{p+1}`` does not vanish identically
    for a pre-activation of mean ``bias_mean``.

    Parameters
    ----------
    activation : Activation
        The first layer's activation (see :func:`get_activation`).
    bias_mean : float, default=0.0
        Mean of the first layer's bias (0 without a bias).
    order : {"auto", 3, 4}, default="auto"
        Requested order; checked when given.
    tol : float, default=1e-8
        Relative size below which a moment counts as zero.

    Returns
    -------
    order : int
        3 or 4.

    Raises
    ------
    ValueError
        For a linear activation (only the span is identifiable), or when the
        requested order's moment vanishes for this activation.

    Examples
    --------
    >>> from skrecon.activations import get_activation, select_tensor_order
    >>> select_tensor_order(get_activation("tanh"))
    3
    >>> select_tensor_order(get_activation("relu"))
    4
    """
    if activation.linear:
        raise ValueError(
            f"activation {activation.name!r} is linear: every moment of order "
            ">= 2 vanishes, so the gradient reveals only the span of the batch, "
            "not its samples. Reconstruction needs a nonlinear activation."
        )
    nonzero = {k: _relative_moment(activation, k, bias_mean) > tol for k in (3, 4)}
    if order == "auto":
        for k in (3, 4):
            if nonzero[k]:
                return k
        raise ValueError(
            f"activation {activation.name!r}: both mu_3 and mu_4 vanish for a "
            f"pre-activation of mean {bias_mean}; the order-3 and order-4 moment "
            "tensors carry no information about the samples."
        )
    if order not in (3, 4):
        raise ValueError(f"order must be 'auto', 3 or 4, got {order!r}.")
    if not nonzero[order]:
        other = 7 - order
        hint = (f" Use order={other} (or 'auto')." if nonzero[other] else "")
        raise ValueError(
            f"order={order} is not identifiable for activation "
            f"{activation.name!r}: mu_{order} = E[sigma^({order})(t)] vanishes "
            f"identically for a pre-activation of mean {bias_mean}, so the "
            f"order-{order} moment tensor is zero.{hint}"
        )
    return order


# doctest does not see the docstring of a module-level constant: run the
# example of ACTIVATIONS's docstring through the module's __test__ hook.
__test__ = {
    "ACTIVATIONS": """
    >>> from skrecon.activations import ACTIVATIONS
    >>> sorted(ACTIVATIONS)[:4]
    ['elu', 'erf', 'gelu', 'identity']
    >>> ACTIVATIONS["relu"].scale_free
    True
    """,
}
