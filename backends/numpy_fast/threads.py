"""Chunks of samples, the threads that share them, and control of BLAS's own threads.

Each op splits its batch into chunks of about :data:`COL_CHUNK_BYTES` of work
arrays (columns and products stay in cache, memory does not grow with the
batch). With ``NNCORE_NUM_THREADS=N`` the chunks are shared out between N
threads, whole chunks each, and BLAS is held to one thread meanwhile so the
threads do not oversubscribe the cores. The chunks do not depend on N, and
sums over samples are combined chunk by chunk in sample order (:func:`in_order`),
so for one BLAS thread count the numbers are bitwise the same for every N.
OpenBLAS itself rounds a product differently with more threads, though, so a
run with N > 1 (BLAS on one thread) may differ from a serial one (BLAS on all
cores) by float rounding: same maths, last bits apart.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Target size of the work arrays of one chunk of samples (columns, products; bytes):
#: small enough to stay in the last-level cache, large enough that Python's per-call
#: overhead stays small (benchmarks/FAST_PATHS.md says how it was chosen).
COL_CHUNK_BYTES = 4 << 20

#: Below this many elements an op runs on the calling thread alone.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _default_workers():
    env = os.environ.get("NNCORE_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else 1


#: Threads that share one op (the caller plus WORKERS - 1 pool threads). Default 1: one
#: thread whose matrix products use every core through BLAS was faster on the 2-core
#: reference machine (benchmarks/FAST_PATHS.md). ``NNCORE_NUM_THREADS=N`` opts in.
WORKERS = _default_workers()

_pool = None
_pool_lock = threading.Lock()
_region = threading.Lock()
_blas = None


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(WORKERS - 1, 1), thread_name_prefix="nncore-fast")
        return _pool


def _forget_pool():  # a forked child has none of the parent's threads
    global _pool, _pool_lock, _region
    _pool, _pool_lock, _region = None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def chunk(n, bytes_per_sample):
    """Samples per chunk so that one chunk's work arrays are about ``COL_CHUNK_BYTES``."""
    return max(1, min(n, COL_CHUNK_BYTES // max(bytes_per_sample, 1)))


def ranges(n, step, elements=None):
    """Contiguous ``(lo, hi)`` sample ranges, one per thread, made of whole chunks of ``step``.

    One range when the op has fewer than ``PARALLEL_MIN_ELEMENTS`` ``elements``.
    """
    if n == 0:
        return [(0, 0)]
    chunks = -(-n // step)
    workers = max(1, min(WORKERS, chunks))
    if elements is not None and elements < PARALLEL_MIN_ELEMENTS:
        workers = 1
    per = -(-chunks // workers) * step
    return [(lo, min(lo + per, n)) for lo in range(0, n, per)]


def sample_ranges(n, elements):
    """One contiguous range of samples per thread, for ops without sums over samples."""
    return ranges(n, max(1, -(-n // WORKERS)), elements=elements)


def sub_ranges(lo, hi, bytes_per_sample):
    """``[lo, hi)`` cut into chunks of about ``COL_CHUNK_BYTES`` of input each."""
    step = chunk(hi - lo, bytes_per_sample)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def run(fn, sample_ranges):
    """``[fn(lo, hi) for (lo, hi) in sample_ranges]``, the ranges on parallel threads."""
    if len(sample_ranges) == 1 or not _region.acquire(blocking=False):
        return [fn(lo, hi) for lo, hi in sample_ranges]  # one range, or another parallel region is running
    try:
        with single_threaded_blas():
            futures = [_executor().submit(fn, lo, hi) for lo, hi in sample_ranges[1:]]
            try:
                first = fn(*sample_ranges[0])
            finally:
                rest = [future.result() for future in futures]
            return [first, *rest]
    finally:
        _region.release()


def in_order(parts):
    """The sum of the per-chunk arrays in ``parts`` (lists, one per range), added in sample order.

    Adding chunk after chunk from the first, whatever range (thread) computed
    it, makes the sum independent of the number of threads, bit for bit.
    """
    chunks = [part for per_range in parts for part in per_range]
    total = chunks[0].copy()
    for part in chunks[1:]:
        total += part
    return total


def blas_controllers():
    """threadpoolctl controllers of the BLAS libraries loaded now (NumPy's, SciPy's, ...)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # threadpoolctl missing or unable to inspect: leave BLAS alone
            _blas = []
    return _blas


@contextlib.contextmanager
def single_threaded_blas(libraries=None):
    """Hold the BLAS ``libraries`` (default: all loaded) to one thread inside the block.

    The count is process-wide: products that other Python threads run meanwhile
    in those libraries run on one thread too, and a block entered while another
    runs finds one thread, leaves it, and the first block's exit restores the
    count (so the later block may finish with BLAS's threads back). The maths
    is the same either way, but OpenBLAS's products round differently with
    another thread count, so their last bits may change.
    """
    libraries = blas_controllers() if libraries is None else libraries
    saved = [(lib, lib.get_num_threads()) for lib in libraries]
    try:
        for lib, count in saved:
            if count != 1:
                lib.set_num_threads(1)
        yield
    finally:
        for lib, count in saved:
            if count != 1:
                lib.set_num_threads(count)


_axpy = None
axpy_libraries = None  # the BLAS libraries that run SciPy's axpy (None: hold all)


def axpy_for(dtype):
    """SciPy's BLAS ``axpy`` for ``dtype`` (``y += a * x[off:off + n]`` in one pass, in place),
    or ``None`` (no SciPy, or another dtype)."""
    global _axpy, axpy_libraries, _blas
    if _axpy is None:
        try:
            import scipy
            from scipy.linalg import blas
        except ImportError:
            _axpy = {}
        else:
            _axpy = {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}
            _blas = None  # SciPy's BLAS may have just been loaded: list the libraries again
            # SciPy's wheels bundle their own OpenBLAS (in scipy.libs); hold only that one, so
            # NumPy's products elsewhere keep their threads. Else (one shared BLAS) hold all.
            root = os.path.dirname(scipy.__file__)
            own = [lib for lib in blas_controllers() if lib.filepath.startswith((root + os.sep, root + ".libs"))]
            axpy_libraries = own or None
    return _axpy.get(np.dtype(dtype))
