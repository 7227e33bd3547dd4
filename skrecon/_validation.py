"""Validation of gradient queries: the gradient, the weights, the output weights."""

import sys
from numbers import Real

import numpy as np
from scipy import sparse
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._array_api import (from_host, get_namespace, is_numpy_like, namespace_name,
                         namespace_name_of, to_host)

def one_row_prefix(n_rows):
    """The words that open a batch-size error on a one-row gradient: one
    row is one neuron (``n_samples = 1`` in scikit-learn's words), whose
    gradient mixes any number of samples."""
    return ("X has one row (n_samples = 1: a single neuron, whose gradient "
            "mixes any number of samples). " if n_rows == 1 else "")


ROUTING_HINT = (
    "Inside a Pipeline, GridSearchCV or cross_val_score, enable metadata "
    "routing with sklearn.set_config(enable_metadata_routing=True) and pass "
    "weights=... (and output_weights=...) to fit."
)


def _check_dense(name, array):
    if sparse.issparse(array):
        raise ValueError(
            f"{name} is a sparse matrix; skrecon needs a dense array (the "
            f"query's weights are Gaussian, hence dense): pass {name}.toarray().")


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


def _check_not_a_module(value, name):
    """Refuse a PyTorch model where an array is expected, saying what to pass."""
    if value is None or not any(
            cls.__module__.startswith("torch.nn") and cls.__name__ == "Module"
            for cls in type(value).__mro__):
        return
    raise TypeError(
        f"{name} is a torch.nn.Module ({type(value).__name__}), not an array: "
        "fit takes the first layer's gradient and weights as arrays. Read them "
        "off the model after loss.backward() with skrecon.torch.first_layer_query: "
        "q = first_layer_query(model); rec.fit(q.grad, **q.fit_params).")


def _check_bias_column(estimator, W, xp):
    """With ``bias=False``, refuse weights whose last column looks like a bias.

    The server's weights are i.i.d. ``N(0, s^2)``: a constant column, or one
    whose standard deviation differs from the others' by far more than the
    sampling error ``s / sqrt(2 m)`` allows, is not an input's weights but
    the bias. Treated as an input it makes the fit fail slowly, blaming the
    weights; the error says so at once.
    """
    if getattr(estimator, "bias", True) or W.ndim != 2 or W.shape[1] < 2:
        return
    m = W.shape[0]
    if m < 30:
        return  # too few neurons to tell the columns apart
    last = W[:, -1]
    last_std = float(xp.std(last))
    others_std = float(xp.sqrt(xp.mean(xp.var(W[:, :-1], axis=0))))
    if not others_std > 0:
        return
    ratio = last_std / others_std
    tolerance = max(0.25, 8.0 / np.sqrt(2.0 * m))
    if last_std == 0:
        what = f"constant ({float(last[0]):.6g} for every neuron)"
    elif abs(ratio - 1.0) > tolerance:
        what = (f"Gaussian with std {last_std:.3g}, {ratio:.3g} times that of the "
                f"other columns ({others_std:.3g})")
    else:
        return
    raise ValueError(
        f"The last column of weights is {what}: it looks like the first layer's "
        f"bias, but {type(estimator).__name__} has bias=False and would treat it "
        "as an input's Gaussian weights. Did you mean bias=True? (With a bias, "
        "the last column of the gradient and of weights is the bias; from a "
        f"GradientQuery q, {type(estimator).__name__}(**q.estimator_params).fit("
        "q.grad, **q.fit_params) sets it.)")


def _transposed_hint(x_shape, a_shape):
    """Where ``output_weights`` has as many rows as ``X`` has columns, the
    likelier mistake is a transposed gradient: say so."""
    if len(a_shape) == 2 and len(x_shape) == 2 and a_shape[0] == x_shape[1] != x_shape[0]:
        return (f" X has {x_shape[1]} columns, as many as output_weights has rows: "
                "are X and weights transposed? The gradient is (n_neurons, "
                "n_inputs), one row per neuron, as torch's weight.grad is.")
    return ""


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
    _check_not_a_module(X, "X")
    _check_not_a_module(weights, "weights")
    if not is_numpy_like(X):
        return _check_query_xp(estimator, X, weights, output_weights, reset=reset,
                               require_weights=require_weights)
    if not (is_numpy_like(weights) and is_numpy_like(output_weights)):
        get_namespace(X, weights, output_weights)  # raises, naming both
    X_dtype = getattr(X, "dtype", None)
    if X_dtype is not None and np.dtype(X_dtype).kind == "b":
        raise ValueError(_BOOL_MESSAGE)
    if X_dtype is not None and np.dtype(X_dtype) == np.float16:
        # (read as float64, its round-off of 1e-3 passed for samples: 42 read
        # for 4, and a fit that ran for minutes)
        raise ValueError(
            "The gradient X is float16: its round-off (relative 1e-3) hides "
            "every sample whose share of the gradient is below it, and the batch "
            "size cannot be read off its spectrum. skrecon supports float32 and "
            "float64 gradients: compute the gradient in float32 or float64 "
            "(X.astype(np.float32) does not undo the rounding).")
    ndim = getattr(X, "ndim", None)
    if ndim is None and isinstance(X, (list, tuple)):
        ndim = np.asarray(X, dtype=object).ndim
    if ndim is not None and ndim != 2:
        raise ValueError(
            f"The gradient X must be 2-D, (n_neurons, n_inputs) with one row per "
            f"neuron, got shape {np.shape(X)}. Reshape your data: pass the first "
            "layer's weight gradient as it is shaped (torch: layer.weight.grad "
            "is (out_features, in_features)), with the bias gradient as an extra "
            "last column; one neuron's row is X.reshape(1, -1)."
        )
    X = validate_data(
        estimator, X, reset=reset, dtype=[np.float64, np.float32],
        ensure_all_finite=False, ensure_min_samples=1,
    )
    _check_finite("The gradient X", X)
    # (no |X| temporary: a copy of the whole gradient, 0.75 GiB at 8192 x 12289)
    largest = float(max(np.max(X), -np.min(X))) if X.size else 0.0
    if 0 < largest < np.finfo(X.dtype).tiny:
        raise ValueError(
            f"The gradient X is subnormal: its largest entry {largest:.3g} is below "
            f"the smallest normal {X.dtype} number ({np.finfo(X.dtype).tiny:.3g}), "
            "where floating point keeps only a few digits. Multiply X by a large "
            "positive factor first: the samples do not depend on the gradient's "
            "scale.")
    if reset:
        estimator._input_dtype = np.dtype(X.dtype)
    X = np.asarray(X, dtype=np.float64)
    if weights is None:
        if reset and require_weights:
            raise ValueError(
                f"{type(estimator).__name__}.fit needs the query's first-layer "
                "weights: call fit(X, weights=W) with W of the shape of X. "
                + ROUTING_HINT
            )
        return X, None, None
    _check_dense("weights", weights)
    W = np.asarray(weights)
    if W.dtype.kind not in "fiu":
        raise ValueError(f"weights must be a real numeric array, got dtype {W.dtype}.")
    W = W.astype(np.float64, copy=False)
    if W.shape != X.shape:
        raise ValueError(
            f"weights has shape {W.shape} but the gradient X has shape "
            f"{X.shape}: they must match (one row per neuron, the same columns)."
        )
    _check_finite("weights", W)
    if reset:
        _check_bias_column(estimator, W, np)
    if output_weights is None:
        A = np.ones((X.shape[0], 1))
    else:
        _check_dense("output_weights", output_weights)
        A = np.asarray(output_weights)
        if A.dtype.kind not in "fiu":
            raise ValueError(
                f"output_weights must be a real numeric array, got dtype {A.dtype}."
            )
        A = A.astype(np.float64, copy=False)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2 or A.shape[0] != X.shape[0]:
            raise ValueError(
                f"output_weights has shape {np.shape(output_weights)} but the "
                f"gradient X has shape {X.shape}: output_weights must be "
                "(n_neurons, n_outputs) or (n_neurons,), one row per neuron."
                + _transposed_hint(X.shape, A.shape))
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
            f"neuron, got shape {tuple(X.shape)}. Reshape your data: pass the "
            "first layer's weight gradient as it is shaped (torch: "
            "layer.weight.grad is (out_features, in_features)), with the bias "
            "gradient as an extra last column; one neuron's row is "
            "X.reshape(1, -1).")
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
    X = xp.astype(X, xp.float64, copy=False)
    _check_finite("The gradient X", X, xp)
    if weights is None:
        if reset and require_weights:
            raise ValueError(
                f"{type(estimator).__name__}.fit needs the query's first-layer "
                "weights: call fit(X, weights=W) with W of the shape of X. "
                + ROUTING_HINT)
        return X, None, None
    if not xp.isdtype(weights.dtype, ("real floating", "integral")):
        raise ValueError(f"weights must be a real numeric array, got dtype {weights.dtype}.")
    W = xp.astype(weights, xp.float64, copy=False)
    if W.shape != X.shape:
        raise ValueError(
            f"weights has shape {tuple(W.shape)} but the gradient X has shape "
            f"{tuple(X.shape)}: they must match (one row per neuron, the same columns).")
    _check_finite("weights", W, xp)
    if reset:
        _check_bias_column(estimator, W, xp)
    if output_weights is None:
        return X, W, xp.ones((m, 1), dtype=xp.float64, device=device)
    if not xp.isdtype(output_weights.dtype, ("real floating", "integral")):
        raise ValueError(
            f"output_weights must be a real numeric array, got dtype {output_weights.dtype}.")
    A = xp.astype(output_weights, xp.float64, copy=False)
    if A.ndim == 1:
        A = xp.reshape(A, (-1, 1))
    if A.ndim != 2 or A.shape[0] != m:
        raise ValueError(
            f"output_weights has shape {tuple(output_weights.shape)} but the "
            f"gradient X has shape {tuple(X.shape)}: output_weights must be "
            "(n_neurons, n_outputs) or (n_neurons,), one row per neuron."
            + _transposed_hint(tuple(X.shape), tuple(A.shape)))
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


def _calling_method(estimator):
    """Name of the innermost method of ``estimator`` on the call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_locals.get("self") is estimator:
            return frame.f_code.co_name
        frame = frame.f_back
    return "method"


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
            f"({fitted_name}), or refit on {given_name} arrays. (The inputs of "
            f"{type(estimator).__name__}.{_calling_method(estimator)}() must use "
            "the same namespace as the fit.)")
    try:
        return get_namespace(fitted, None if is_numpy_like(X) else X)
    except ValueError as exc:
        raise ValueError(
            f"{type(estimator).__name__} was fitted on another device than X's: "
            f"{exc}") from None


def check_activation_namespace(activation, xp, device):
    """Evaluate ``sigma'`` and ``sigma''`` on three points of the input's
    namespace: an activation that cannot run there fails before any work."""
    probe = from_host([-1.0, 0.0, 1.0], xp, device)
    lib = namespace_name(xp)
    hint = (" A custom activation must evaluate in its argument's namespace (e.g. "
            "with array_api_compat.array_namespace(t)): the host calls it on NumPy "
            "arrays, the refinement on the input's.")
    try:
        values = [activation.derivative(probe, order) for order in (1, 2)]
    except Exception as exc:
        raise TypeError(
            f"Activation {activation.name!r} cannot be evaluated on {lib} arrays: "
            f"{exc}{hint}") from exc
    for value in values:
        if namespace_name_of(value) != lib or getattr(value, "shape", None) != (3,):
            raise TypeError(
                f"Activation {activation.name!r} returned a {type(value).__name__} "
                f"for {lib} input, not a {lib} array of the input's shape.{hint}")


def check_row_weights(sample_weight, X, xp):
    """``sample_weight`` checked (one finite non-negative value per
    row), as a column of ``X``'s namespace and device; ``None`` stays."""
    if sample_weight is None:
        return None
    if not isinstance(sample_weight, Real):  # (a number weighs all rows alike)
        sample_weight = to_host(sample_weight)
    w = _check_sample_weight(sample_weight, np.empty((X.shape[0], 0)),
                             dtype=np.float64, ensure_non_negative=True)
    return from_host(w[:, None], xp, get_namespace(X)[1], dtype=X.dtype)
