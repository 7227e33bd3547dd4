"""Optional dependencies, imported when a feature needs them."""

import importlib

__all__ = ["import_optional"]


def import_optional(module, *, feature, package, extra):
    """Import ``module``, or raise an ImportError that names ``feature``, the
    missing ``package`` and the skrecon ``extra`` that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            f"{feature} needs {package}, which is not installed. Install the "
            f'optional extra: pip install "skrecon[{extra}]"') from exc
