"""Model parameters as a federated server receives them (shared by the adapters).

A Flower round carries parameters as a list of arrays in ``state_dict``
order (the ``NumPyClient`` convention), as a mapping of ``state_dict`` names
(a ``state_dict``; Opacus's ``"_module."`` prefix ignored) or as a Flower
``ArrayRecord``. :func:`as_arrays` reads any of them in the order of a
model's ``state_dict``; :func:`check_pair` checks a sent/returned pair
against the model's shapes. :mod:`skrecon.flower` and :mod:`skrecon.fedavg`
both take their ``sent`` and ``returned`` arguments through here.
"""

from collections.abc import Mapping

import numpy as np

__all__ = ["as_arrays", "check_pair"]

# Opacus wraps a model in a GradSampleModule whose state_dict names carry this
# prefix; parameters saved from either the wrapper or the plain model match.
_OPACUS_PREFIX = "_module."


def _strip(name):
    return name[len(_OPACUS_PREFIX):] if name.startswith(_OPACUS_PREFIX) else name


def as_arrays(parameters, keys, what):
    """The parameters as NumPy arrays in the order of ``keys``.

    Parameters
    ----------
    parameters : list of array, mapping of str to array, or flwr.app.ArrayRecord
        Arrays or tensors, one per ``state_dict`` entry.
    keys : list of str
        The model's ``state_dict`` names, in order.
    what : str
        The argument's name, for messages (``"sent"``, ``"returned"``).

    Returns
    -------
    arrays : list of ndarray
        One numeric array per key (dtype as given).

    Raises
    ------
    TypeError
        If ``parameters`` is none of the accepted kinds.
    ValueError
        If names or the count do not match ``keys``, or an entry is not numeric.
    """
    if hasattr(parameters, "to_numpy_ndarrays"):  # a Flower ArrayRecord
        names = list(parameters.keys())
        arrays = parameters.to_numpy_ndarrays()
        # one made from a list of arrays names them "0", "1", ...: a list
        if names == [str(i) for i in range(len(names))]:
            parameters = arrays
        else:
            parameters = dict(zip(names, arrays))
    if isinstance(parameters, Mapping):
        by_name = {_strip(str(k)): v for k, v in parameters.items()}
        missing = [k for k in keys if _strip(k) not in by_name]
        if missing:
            raise ValueError(
                f"{what} has no entry for the model's {missing[:3]} (it has "
                f"{sorted(by_name)[:6]}): pass the model's state_dict names.")
        values = [by_name[_strip(k)] for k in keys]
    elif isinstance(parameters, (list, tuple)):
        if len(parameters) != len(keys):
            raise ValueError(
                f"{what} holds {len(parameters)} arrays but the model's "
                f"state_dict has {len(keys)} entries: Flower's NumPyClient "
                "convention is one array per state_dict entry, in order.")
        values = list(parameters)
    else:
        raise TypeError(
            f"{what} must be a list of arrays (in state_dict order), a mapping "
            f"of state_dict names to arrays or a Flower ArrayRecord, got "
            f"{type(parameters).__name__}.")
    out = []
    for key, value in zip(keys, values):
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.number):
            raise ValueError(f"{what}[{key!r}] is not numeric (dtype {value.dtype}).")
        out.append(value)
    return out


def check_pair(state, keys, sent, returned):
    """Check that ``sent`` and ``returned`` have the model's shapes and are finite.

    Raises
    ------
    ValueError
        Naming the first entry whose shape differs from ``state[key]`` or
        that holds NaN or infinity.
    """
    for key, a, b in zip(keys, sent, returned):
        shape = tuple(state[key].shape)
        for what, value in (("sent", a), ("returned", b)):
            if value.shape != shape:
                raise ValueError(
                    f"{what}[{key!r}] has shape {value.shape}, but the model's "
                    f"{key!r} has shape {shape}.")
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                raise ValueError(f"{what}[{key!r}] contains NaN or infinity.")
