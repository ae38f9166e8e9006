"""Where the fast paths' arrays come from: per-thread scratch, recycled results, memory orders.

Fresh large arrays are mmapped by the C allocator and fault on first touch, one
4 KiB page at a time, which is expensive in a VM. So work arrays that live only
inside one op call are per-thread scratch buffers (:func:`scratch`), and the
forward outputs that must be fresh arrays are recycled once nobody references
them any more (:func:`fresh`).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

_local = threading.local()


def scratch(slot, shape, dtype):
    """A work array that lives only inside one op call, reused by the calling thread.

    Allocated once per thread and ``slot`` and grown when needed (a few MiB in all).
    """
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffer = buffers.get((slot, dtype))
    if buffer is None or buffer.size < size:
        buffer = buffers[(slot, dtype)] = np.empty(max(size, 1), dtype)
    return buffer[:size].reshape(shape)


def scratch_like(slot, like, dtype):
    """:func:`scratch` with the shape of ``(n, c, h, w)`` ``like``, stored channels-last if ``like`` is."""
    n, c, h, w = like.shape
    if channels_last_order(like):
        return scratch(slot, (n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return scratch(slot, like.shape, dtype)


# ---- recycled result arrays -----------------------------------------------------------
#
# Results must be fresh arrays, but allocating them anew every batch makes glibc
# return memory to the kernel and take it back (its heap top is trimmed as the
# activations of a step are freed), and every page then faults again. So the
# forward outputs (activations, padded inputs kept for the backward pass, pooling
# offsets) are recycled: an array handed out earlier whose only remaining
# reference is this pool's (``sys.getrefcount``; a view or slice keeps a reference
# to its base, so a result still in use anywhere is never taken) is handed out
# again. Activations are all alive at the peak of a training step anyway, so this
# adds little to peak memory; gradients (short-lived, consumed one after the
# other) stay fresh arrays, which glibc can reuse for each other.

RECYCLE_MAX_BYTES = 512 << 20  # the pool forgets everything beyond this (arrays in use live on)
RECYCLE = True
_recycled = {}
_recycled_bytes = 0
_recycle_lock = threading.Lock()


def _refcounts(kept):
    """``sys.getrefcount`` of each array of ``kept``, all measured the same way."""
    counts = []
    for array in kept:
        counts.append(sys.getrefcount(array))
    return counts


# What an array referenced by nothing but its list reads here (calibrated, not assumed:
# interpreters differ in which references they borrow). Recycling needs CPython.
_UNREFERENCED = _refcounts([np.empty(0)])[0] if sys.implementation.name == "cpython" else None


def fresh(shape, dtype, recycle=True):
    """An uninitialised array nobody else references: recycled if possible, else new."""
    global _recycled_bytes
    if not (RECYCLE and recycle) or _UNREFERENCED is None:
        return np.empty(shape, dtype)
    dtype = np.dtype(dtype)
    key = (tuple(shape), dtype)
    with _recycle_lock:
        kept = _recycled.setdefault(key, [])
        for index, count in enumerate(_refcounts(kept)):
            if count == _UNREFERENCED:
                return kept[index]
        array = np.empty(shape, dtype)
        if len(kept) < 4:
            if _recycled_bytes + array.nbytes > RECYCLE_MAX_BYTES:
                _recycled.clear()
                _recycled_bytes = 0
                kept = _recycled.setdefault(key, [])
            kept.append(array)
            _recycled_bytes += array.nbytes
        return array


def release_memory():
    """Forget the recycled arrays (their memory is freed once nobody uses them)."""
    global _recycled_bytes
    with _recycle_lock:
        _recycled.clear()
        _recycled_bytes = 0


# ---- memory orders ------------------------------------------------------------------
# Arrays that meet in one ufunc should share a memory order: mixed orders are several
# times slower. The fast convolution hands its results on channels-last.


def is_channels_last(x):
    """Whether ``(n, c, h, w)`` ``x`` is a dense ``(n, h, w, c)`` array seen through a transpose."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def channels_last_order(x):
    """Whether the channels of ``(n, c, h, w)`` ``x`` are its fastest-varying axis in memory."""
    return x.strides[1] < x.strides[3]


def dense_in_order_of(x, like):
    """Whether ``x`` is contiguous in the memory order (channels-last or not) of ``like``."""
    if channels_last_order(like):
        return x.transpose(0, 2, 3, 1).flags.c_contiguous
    return x.flags.c_contiguous


def empty_like_layout(shape_nchw, dtype, like, recycle=False):
    """An empty ``(n, c, h, w)`` array, stored channels-last when ``like`` is."""
    if like is not None and is_channels_last(like) and not like.flags.c_contiguous:
        n, c, h, w = shape_nchw
        return fresh((n, h, w, c), dtype, recycle).transpose(0, 3, 1, 2)
    return fresh(shape_nchw, dtype, recycle)
