"""Array-namespace helpers: which library holds the query, and moves to the host.

skrecon follows the inputs: the namespace of the gradient (``numpy``,
``cupy``, ``array_api_strict``, ...; read by ``array_api_compat``) is the
namespace of every step whose size grows with the number of neurons ``m`` or
of inputs ``d``, and of the fitted attributes. Steps of size ``B`` (the
batch) run on the host in NumPy; they move there and back only through
:func:`to_host` and :func:`from_host`, so that a stray conversion elsewhere
fails loudly in the tests (``array_api_strict`` arrays on a non-CPU device
refuse ``numpy.asarray``).

The namespace is an argument of every helper that needs one, never global
state, and it does not depend on scikit-learn's ``array_api_dispatch``
switch (which governs scikit-learn's own estimators).
"""

import array_api_compat
import numpy as np

__all__ = []


# array_api_compat's NumPy namespace: what host data (arrays, lists) gets
_NUMPY = array_api_compat.array_namespace(np.empty(0))


def is_numpy_like(x):
    """Whether ``x`` is a NumPy array, a scalar or a nested sequence (host data)."""
    return not array_api_compat.is_array_api_obj(x) or array_api_compat.is_numpy_array(x)


def get_namespace(*arrays):
    """``(xp, device)`` of the arrays (``None`` entries skipped).

    Host data (NumPy arrays, lists, scalars) gives the NumPy namespace of
    ``array_api_compat``. Arrays of two namespaces or two devices raise a
    ``ValueError`` that names both.
    """
    present = [a for a in arrays if a is not None]
    if not present:
        return _NUMPY, "cpu"
    names = {namespace_name_of(a) for a in present}
    if len(names) > 1:
        raise ValueError(
            f"The arrays passed together come from different array libraries "
            f"({', '.join(sorted(names))}): pass the gradient, weights and "
            "output_weights in one namespace, on one device.")
    if names == {"numpy"}:
        return _NUMPY, "cpu"
    xp = array_api_compat.array_namespace(*present)
    devices = {str(array_api_compat.device(a)) for a in present}
    if len(devices) > 1:
        raise ValueError(
            f"The arrays passed together live on different devices "
            f"({', '.join(sorted(devices))}): move them to one device first.")
    return xp, array_api_compat.device(present[0])


def namespace_name_of(x):
    """Short name of the library that holds ``x`` (``"numpy"`` for host data)."""
    if is_numpy_like(x):
        return "numpy"
    return namespace_name(array_api_compat.array_namespace(x))


def namespace_name(xp):
    """Short name of a namespace: ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` ..."""
    name = getattr(xp, "__name__", str(xp))
    if name.startswith("array_api_compat."):
        name = name[len("array_api_compat."):]
    return name.split(".")[0]


def is_numpy_namespace(xp):
    return namespace_name(xp) == "numpy"


def to_host(x):
    """A NumPy copy (or view) of ``x``, wherever it lives.

    The only way skrecon moves device data to the host: used for the
    ``B``-sized steps, for error messages, and for pickling.
    """
    if x is None or is_numpy_like(x):
        return x if x is None or isinstance(x, np.ndarray) else np.asarray(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        import array_api_strict
        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    # other libraries: DLPack, from the CPU
    try:
        return np.from_dlpack(x)
    except (RuntimeError, TypeError, ValueError, BufferError):
        return np.from_dlpack(array_api_compat.to_device(x, "cpu"))


def from_host(a, xp, device, dtype=None):
    """``a`` (host data) as an array of namespace ``xp`` on ``device``."""
    if dtype is None:
        dtype = xp.float64
    if is_numpy_namespace(xp):
        return np.asarray(a, dtype=dtype)
    return xp.asarray(np.asarray(a), dtype=dtype, device=device)


def as_namespace(a, xp, device, dtype=None):
    """``a`` in ``xp`` on ``device``: host data is moved, ``xp`` arrays kept."""
    if is_numpy_namespace(xp):
        return np.asarray(a, dtype=dtype)
    if is_numpy_like(a):
        return from_host(a, xp, device, dtype)
    return a if dtype is None or a.dtype == dtype else xp.astype(a, dtype)


def column_sum_squares(M, xp):
    """``sum(M * M, axis=0)`` of a 2-D array, in its namespace; on the host
    without the ``M * M`` temporary (``M`` may be a strided view)."""
    if is_numpy_namespace(xp):
        return np.einsum("ij,ij->j", M, M)
    return xp.sum(M * M, axis=0)


def frobenius_norm(M, xp):
    """``sqrt(sum(M * M))`` as a float; on the host by one dot product, no
    temporary. Entries whose squares underflow or overflow (a gradient
    scaled by 1e-170 or 1e160) are scaled by the largest one first."""
    def norm(M):
        if is_numpy_namespace(xp):
            return float(np.linalg.norm(M))
        return float(xp.sqrt(xp.sum(M * M)))

    with np.errstate(over="ignore", under="ignore"):
        value = norm(M)
    if 1e-150 < value < 1e150:
        return value
    largest = float(xp.max(xp.abs(M))) if M.shape[0] * M.shape[1] else 0.0
    if largest == 0.0 or not np.isfinite(largest):
        return value if largest == 0.0 else largest
    return largest * norm(M / largest)


def elementwise_namespace(t):
    """Namespace for an elementwise function of ``t``: NumPy itself for host
    data (unchanged NumPy results), else the array's namespace."""
    return np if is_numpy_like(t) else array_api_compat.array_namespace(t)


def host_state(state):
    """An estimator's ``__dict__`` for pickling, with every array on the host.

    An estimator fitted on CuPy (or any namespace) pickles as NumPy arrays,
    so it loads on a machine without a GPU; move its attributes back with
    ``xp.asarray`` if needed.
    """
    return {key: (to_host(value) if array_api_compat.is_array_api_obj(value) else value)
            for key, value in state.items()}


def special_function(xp, name):
    """``erf`` (or another ``scipy.special`` function) for namespace ``xp``.

    The Array API has no special functions: NumPy uses ``scipy.special``,
    CuPy ``cupyx.scipy.special``, PyTorch ``torch.special``; other namespaces
    raise a ``TypeError`` naming the activation's need.
    """
    lib = namespace_name(xp)
    if lib == "numpy":
        import scipy.special
        return getattr(scipy.special, name)
    if lib == "cupy":
        import cupyx.scipy.special
        return getattr(cupyx.scipy.special, name)
    if lib == "torch":
        import torch
        return getattr(torch.special, name)
    raise TypeError(
        f"This activation needs the special function {name!r}, which the array "
        f"namespace {lib!r} does not provide (the Array API standard has no "
        "special functions). Pass NumPy, CuPy or PyTorch arrays, or use an "
        "activation built from elementary functions (tanh, sigmoid, relu, "
        "leaky_relu, elu, silu, softplus).")
