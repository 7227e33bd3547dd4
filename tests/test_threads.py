"""The BLAS thread limit that fits share (``skrecon._threads.blas_threads``).

OpenBLAS's thread count is process-wide. Fits that overlap in the threads of
one process (joblib's threading backend, a Dask cluster of threads) each
limit it to one thread; restored out of order, the limits used to leave the
whole process at one thread after the fits were done.
"""

import threading

import pytest
from threadpoolctl import threadpool_info

from skrecon._threads import blas_threads


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def counts():
    """The BLAS libraries' thread counts, when they run several threads (the
    tests need a count to lose)."""
    counts = _blas_threads()
    if not counts or min(counts) < 2:
        pytest.skip("no BLAS library here runs several threads")
    return counts


def test_nested_limits_restore_the_count(counts):
    with blas_threads(1):
        assert set(_blas_threads()) == {1}
        with blas_threads(1):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == counts
    with blas_threads(None):
        assert _blas_threads() == counts


def test_overlapping_limits_in_threads_restore_the_count(counts):
    """A enters, B enters, A leaves, B leaves: the count is one while either
    is inside, and back to the original after both (it stayed at one)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with blas_threads(1):
            a_in.set()
            b_in.wait(10)
        seen["after first"] = _blas_threads()
        a_out.set()

    def second():
        a_in.wait(10)
        with blas_threads(1):
            b_in.set()
            a_out.wait(10)
            seen["second inside"] = _blas_threads()

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert set(seen["after first"]) == {1}  # the second fit is still inside
    assert set(seen["second inside"]) == {1}
    assert _blas_threads() == counts
    # and the main thread can still set the count afterwards
    with blas_threads(1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == counts
