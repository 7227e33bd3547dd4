"""BLAS thread limits through one cached :class:`threadpoolctl.ThreadpoolController`.

``threadpoolctl.threadpool_limits`` scans the process's loaded libraries on
every call (~5 ms); a fit limits the threads several times (once per search
round), so the scan is done once and reused, as scikit-learn does.

The BLAS thread count is process-wide, and fits may run concurrently in the
threads of one process (joblib's threading backend, a Dask cluster of
threads). Each limiter restores the count it saw on entry, so two
overlapping limits restored out of order left the process at one thread
for good. The limit is therefore shared and counted: the first context in
sets it, nested and concurrent ones join it, and the last one out restores
the original count. threadpoolctl (>= 3.6) lets only the thread that first
set OpenBLAS's process-wide count change it again; the last one out may be
another thread, so it releases that hold before restoring, and after.
"""

import threading
from contextlib import contextmanager
from functools import lru_cache

import threadpoolctl
from threadpoolctl import ThreadpoolController

__all__ = []

_lock = threading.Lock()
_active = {"depth": 0, "limiter": None}


@lru_cache(maxsize=1)
def _controller():
    return ThreadpoolController()


@contextmanager
def blas_threads(limits):
    """Context manager: at most ``limits`` BLAS threads (``None``: no change).

    While any such context is open in the process, the first one's limit
    holds (skrecon only ever asks for one thread); the original count comes
    back when the last one closes, whatever the order they close in.
    """
    if limits is None:
        yield
        return
    with _lock:
        if _active["depth"] == 0:
            _active["limiter"] = _controller().limit(limits=limits, user_api="blas")
        _active["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _active["depth"] -= 1
            if _active["depth"] == 0:
                _release_openblas()
                _active["limiter"].restore_original_limits()
                _active["limiter"] = None
                _release_openblas()


def _release_openblas():
    """Let any thread set OpenBLAS's thread count (threadpoolctl >= 3.6 keeps
    it to the thread that set it first; older versions have no such hold)."""
    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    if hasattr(openblas, "clear_controlling_thread"):
        openblas.clear_controlling_thread(force=True)
