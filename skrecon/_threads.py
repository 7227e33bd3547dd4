"""BLAS thread limits through one cached :class:`threadpoolctl.ThreadpoolController`.

``threadpoolctl.threadpool_limits`` scans the process's loaded libraries on
every call (~5 ms); a fit limits the threads several times (once per search
round), so the scan is done once and reused, as scikit-learn does.
"""

from functools import lru_cache

from threadpoolctl import ThreadpoolController

__all__ = []


@lru_cache(maxsize=1)
def _controller():
    return ThreadpoolController()


def blas_threads(limits):
    """Context manager: at most ``limits`` BLAS threads (``None``: no change)."""
    return _controller().limit(limits=limits, user_api="blas")
