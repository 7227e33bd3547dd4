"""Validation of gradient queries: the gradient, the weights, the output weights."""

import numpy as np
from sklearn.utils.validation import validate_data

from ._array_api import (get_namespace, is_numpy_like, namespace_name_of, to_host)

_ROUTING_HINT = (
    "Inside a Pipeline, GridSearchCV or cross_val_score, enable metadata "
    "routing with sklearn.set_config(enable_metadata_routing=True) and pass "
    "weights=... (and output_weights=...) to fit."
)


def _check_finite(name, array, xp=np):
    if bool(xp.all(xp.isfinite(array))):
        return
    array = to_host(array)  # an error message: the host may look
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        n_nan = int(np.isnan(array).sum())
        n_inf = int(bad.shape[0] - n_nan)
        raise ValueError(
            f"{name} contains NaN or inf ({n_nan} NaN, {n_inf} inf; first at "
            f"index {tuple(int(i) for i in bad[0])}). skrecon needs finite "
            f"values: remove or repair the non-finite entries of "
            f"{name[0].lower() + name[1:]}."
        )


def check_query(estimator, X, weights, output_weights, *, reset, require_weights=True):
    """Validate a gradient query and return float64 arrays ``(X, W, A)``.

    ``X`` goes through scikit-learn's ``validate_data`` (which records
    ``n_features_in_`` when ``reset``); ``weights`` must have the shape of
    ``X``; ``output_weights`` is ``(n_neurons, K)``, ``(n_neurons,)`` (read as
    ``K = 1``) or ``None`` (all ones). Non-finite values raise a
    ``ValueError`` naming the argument, before any decomposition. With
    ``reset=False`` and ``weights=None`` only ``X`` is checked and ``W`` is
    ``None``.
    """
    if not is_numpy_like(X):
        return _check_query_xp(estimator, X, weights, output_weights, reset=reset,
                               require_weights=require_weights)
    if not (is_numpy_like(weights) and is_numpy_like(output_weights)):
        get_namespace(X, weights, output_weights)  # raises, naming both
    X_dtype = getattr(X, "dtype", None)
    if X_dtype is not None and np.dtype(X_dtype).kind == "b":
        raise ValueError(_BOOL_MESSAGE)
    ndim = getattr(X, "ndim", None)
    if ndim is None and isinstance(X, (list, tuple)):
        ndim = np.asarray(X, dtype=object).ndim
    if ndim is not None and ndim != 2:
        raise ValueError(
            f"The gradient X must be 2-D, (n_neurons, n_inputs) with one row per "
            f"neuron, got shape {np.shape(X)}. Pass the first layer's weight "
            "gradient as it is shaped (torch: layer.weight.grad is "
            "(out_features, in_features)), with the bias gradient as an extra "
            "last column."
        )
    X = validate_data(
        estimator, X, reset=reset, dtype=[np.float64, np.float32],
        ensure_all_finite=False, ensure_min_samples=1,
    )
    _check_finite("The gradient X", X)
    if reset:
        estimator._input_dtype = np.dtype(X.dtype)
    X = np.asarray(X, dtype=np.float64)
    if weights is None:
        if reset and require_weights:
            raise ValueError(
                f"{type(estimator).__name__}.fit needs the query's first-layer "
                "weights: call fit(X, weights=W) with W of the shape of X. "
                + _ROUTING_HINT
            )
        return X, None, None
    W = np.asarray(weights)
    if W.dtype.kind not in "fiu":
        raise ValueError(f"weights must be a real numeric array, got dtype {W.dtype}.")
    W = W.astype(np.float64)
    if W.shape != X.shape:
        raise ValueError(
            f"weights has shape {W.shape} but the gradient X has shape "
            f"{X.shape}: they must match (one row per neuron, the same columns)."
        )
    _check_finite("weights", W)
    if output_weights is None:
        A = np.ones((X.shape[0], 1))
    else:
        A = np.asarray(output_weights)
        if A.dtype.kind not in "fiu":
            raise ValueError(
                f"output_weights must be a real numeric array, got dtype {A.dtype}."
            )
        A = A.astype(np.float64)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2 or A.shape[0] != X.shape[0]:
            raise ValueError(
                f"output_weights has shape {np.shape(output_weights)} but the "
                f"gradient X has shape {X.shape}: output_weights must be "
                "(n_neurons, n_outputs) or (n_neurons,), one row per neuron."
            )
        _check_finite("output_weights", A)
        if not np.any(A):
            raise ValueError(
                "output_weights are all zero: no neuron passes a signal to the "
                "next layer, so the gradient carries none. Pass the next layer's "
                "weight matrix, transposed.")
    return X, W, A


_BOOL_MESSAGE = (
    "The gradient X has boolean dtype: skrecon needs the real-valued "
    "gradient (integers, e.g. quantisation codes, are converted to "
    "float64; rescale them first if the scale matters).")


def _check_query_xp(estimator, X, weights, output_weights, *, reset, require_weights):
    """:func:`check_query` for arrays of another namespace (CuPy, array-api-strict ...).

    The same checks and messages as the NumPy path, written with the Array
    API so that nothing leaves the device but the error messages. The
    arrays are returned in their namespace, as float64.
    """
    # a PyTorch tensor that requires grad would record every step below
    X, weights, output_weights = (
        a.detach() if getattr(a, "requires_grad", False) else a
        for a in (X, weights, output_weights))
    xp, device = get_namespace(X, weights, output_weights)
    if xp.isdtype(X.dtype, "bool"):
        raise ValueError(_BOOL_MESSAGE)
    if not xp.isdtype(X.dtype, ("real floating", "integral")):
        raise ValueError(f"The gradient X must be a real numeric array, got dtype {X.dtype}.")
    if X.ndim != 2:
        raise ValueError(
            f"The gradient X must be 2-D, (n_neurons, n_inputs) with one row per "
            f"neuron, got shape {tuple(X.shape)}. Pass the first layer's weight "
            "gradient as it is shaped (torch: layer.weight.grad is "
            "(out_features, in_features)), with the bias gradient as an extra "
            "last column.")
    m, n_cols = X.shape
    if m < 1 or n_cols < 1:
        raise ValueError(
            f"The gradient X has shape {tuple(X.shape)}: it needs at least one "
            "neuron and one column.")
    if reset:
        estimator.n_features_in_ = n_cols
        estimator._input_dtype = (np.dtype("float32") if X.dtype == xp.float32
                                  else np.dtype("float64"))
    elif n_cols != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_cols} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input.")
    X = xp.astype(X, xp.float64)
    _check_finite("The gradient X", X, xp)
    if weights is None:
        if reset and require_weights:
            raise ValueError(
                f"{type(estimator).__name__}.fit needs the query's first-layer "
                "weights: call fit(X, weights=W) with W of the shape of X. "
                + _ROUTING_HINT)
        return X, None, None
    if not xp.isdtype(weights.dtype, ("real floating", "integral")):
        raise ValueError(f"weights must be a real numeric array, got dtype {weights.dtype}.")
    W = xp.astype(weights, xp.float64)
    if W.shape != X.shape:
        raise ValueError(
            f"weights has shape {tuple(W.shape)} but the gradient X has shape "
            f"{tuple(X.shape)}: they must match (one row per neuron, the same columns).")
    _check_finite("weights", W, xp)
    if output_weights is None:
        return X, W, xp.ones((m, 1), dtype=xp.float64, device=device)
    if not xp.isdtype(output_weights.dtype, ("real floating", "integral")):
        raise ValueError(
            f"output_weights must be a real numeric array, got dtype {output_weights.dtype}.")
    A = xp.astype(output_weights, xp.float64)
    if A.ndim == 1:
        A = xp.reshape(A, (-1, 1))
    if A.ndim != 2 or A.shape[0] != m:
        raise ValueError(
            f"output_weights has shape {tuple(output_weights.shape)} but the "
            f"gradient X has shape {tuple(X.shape)}: output_weights must be "
            "(n_neurons, n_outputs) or (n_neurons,), one row per neuron.")
    _check_finite("output_weights", A, xp)
    if not bool(xp.any(A != 0)):
        raise ValueError(
            "output_weights are all zero: no neuron passes a signal to the "
            "next layer, so the gradient carries none. Pass the next layer's "
            "weight matrix, transposed.")
    return X, W, A


def float_dtype_of(X):
    """``float32`` for float32 input, else ``float64`` (host NumPy dtypes):
    the dtype that transforms return."""
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        return np.dtype("float64")
    if is_numpy_like(X):
        return np.dtype("float32") if np.dtype(dtype) == np.float32 else np.dtype("float64")
    xp, _ = get_namespace(X)
    return np.dtype("float32") if dtype == xp.float32 else np.dtype("float64")


def transform_namespace(estimator, X, fitted):
    """``(xp, out_dtype)`` for a transform of ``X``: the fit's namespace
    (``X`` from another one is refused) and the dtype to return, float32
    for float32 ``X``, else float64."""
    xp, _ = check_fitted_namespace(estimator, X, fitted)
    return xp, getattr(xp, float_dtype_of(X).name)


def check_coefficients(estimator, X, n_columns, fitted):
    """Validate the input of ``inverse_transform``: real, finite, 2-D with
    ``n_columns`` columns, in the fit's namespace.

    Returns ``(X, xp, out_dtype)``: ``X`` as float64, and what
    :func:`transform_namespace` returns.
    """
    xp, out_dtype = transform_namespace(estimator, X, fitted)
    if is_numpy_like(X):
        X = np.asarray(X)
        real = X.dtype.kind in "fiu"
    else:
        real = xp.isdtype(X.dtype, ("real floating", "integral"))
    if not real:
        raise ValueError(
            f"X must be a real numeric array for inverse_transform, got dtype {X.dtype}.")
    X = X.astype(np.float64) if is_numpy_like(X) else xp.astype(X, xp.float64)
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(
            "X contains NaN or inf: inverse_transform needs finite coefficients.")
    if X.ndim != 2 or X.shape[1] != n_columns:
        raise ValueError(
            f"X has shape {tuple(X.shape)}; inverse_transform expects "
            f"(n_neurons, {n_columns}).")
    return X, xp, out_dtype


def check_fitted_namespace(estimator, X, fitted):
    """Refuse ``X`` from another array namespace (or device) than the fit's.

    ``fitted`` is a fitted attribute; its namespace is the fit's. Returns
    ``(xp, device)`` of the fit.
    """
    fitted_name, given_name = namespace_name_of(fitted), namespace_name_of(X)
    if fitted_name != given_name:
        raise ValueError(
            f"{type(estimator).__name__} was fitted on {fitted_name} arrays but X "
            f"comes from {given_name}: pass X in the array namespace of the fit "
            f"({fitted_name}), or refit on {given_name} arrays.")
    try:
        return get_namespace(fitted, None if is_numpy_like(X) else X)
    except ValueError as exc:
        raise ValueError(
            f"{type(estimator).__name__} was fitted on another device than X's: "
            f"{exc}") from None
