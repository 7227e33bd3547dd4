"""Validation of gradient queries: the gradient, the weights, the output weights."""

import numpy as np
from sklearn.utils.validation import validate_data

_ROUTING_HINT = (
    "Inside a Pipeline, GridSearchCV or cross_val_score, enable metadata "
    "routing with sklearn.set_config(enable_metadata_routing=True) and pass "
    "weights=... (and output_weights=...) to fit."
)


def _check_finite(name, array):
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        n_nan = int(np.isnan(array).sum())
        n_inf = int(bad.shape[0] - n_nan)
        raise ValueError(
            f"{name} contains NaN or inf ({n_nan} NaN, {n_inf} inf; first at "
            f"index {tuple(int(i) for i in bad[0])}). skrecon needs finite "
            f"values: remove or repair the non-finite entries of {name}."
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
    X_dtype = getattr(X, "dtype", None)
    if X_dtype is not None and np.dtype(X_dtype).kind == "b":
        raise ValueError(
            "The gradient X has boolean dtype: skrecon needs the real-valued "
            "gradient (integers, e.g. quantisation codes, are converted to "
            "float64; rescale them first if the scale matters)."
        )
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
        estimator._input_dtype = X.dtype
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
