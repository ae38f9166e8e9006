"""CPU fast paths for the generic ops in :mod:`nncore.ops`, for NumPy arrays.

:func:`backends.fast_path` returns these functions, and only for real
``numpy.ndarray`` arguments, so array_api_strict and CuPy always run the
generic, standard-only code. Each function takes the same arguments as the
generic op it replaces and gives the same numbers: elementwise results are
identical (NaN/inf included, through exact fallbacks where needed); sums and
matrix products may differ by float rounding, because BLAS blocks them
differently. ``tests/test_fast_paths.py`` checks both against ``op.generic``.

Where the time goes and what is done about it (profiles in benchmarks/README.md):

* **One large BLAS product per chunk, channels-last.** Inside
  :func:`conv2d_act_forward` images are padded into ``(n, h, w, c)`` order and
  the columns are ``(n*oh*ow, kh*kw*c)`` rows (one ``sliding_window_view``
  copy; for ``c == 1`` a tap-major or "wide" layout that copies long
  contiguous runs). ``cols @ W`` is then ONE product for the chunk instead of
  ``n`` small ones, and its ``(n*oh*ow, f)`` result is handed on as an
  ``(n, f, oh, ow)`` view, no transposed copy. A column of ones puts the bias
  inside the product (and gives ``dbias`` for free backward). The input
  gradient at stride 1 is the correlation of ``dz`` with the flipped kernel
  (one more im2col + product), about 2x faster than col2im's strided sums.
* **No columns for one map.** A convolution of one input channel into one map
  (workload A) is bound by building its columns, not by its product; it is
  computed as shifted sums on the flat padded images instead, one BLAS
  ``axpy`` pass per kernel offset (:func:`_direct_forward`).
* **Bounded memory.** Columns exist for one chunk of samples at a time (about
  ``COL_CHUNK_BYTES``) and are built again in the backward pass instead of
  being stored: memory grows with the batch only through the activations.
* **No slow NumPy calls.** ``np.where`` and masked ``copyto`` are not
  vectorised (~5 ns per element); pooling and activation gradients use
  ``maximum``, ``greater`` and products with boolean masks instead, in place
  (``out=``), with pooling offsets as ``int8``. Arrays that meet in one ufunc
  share a memory order (mixed orders are several times slower).
* **Few page faults.** Work arrays come from per-thread scratch buffers
  (:func:`_scratch`); fresh large arrays are mmapped by glibc and fault on
  first touch, which is expensive in a VM.
* **Threads: opt-in.** ``NNCORE_NUM_THREADS=N`` splits the samples of each op
  between N threads (BLAS held to one thread each). On the 2-core reference
  machine one thread whose products use both cores through BLAS was faster,
  so the default is 1. One more reason, measured there: OpenBLAS's idle
  workers spin for a while after each call, and a thread of nncore's own
  that starts meanwhile runs up to 2x slower (a 2-thread direct convolution
  was 1.4x faster alone, 1.2x slower between the dense layers' products).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

#: Target size of the work arrays of one chunk of samples (columns, products; bytes).
#: 4 MiB keeps a chunk in the 32 MiB L3 cache while leaving few enough chunks that
#: Python's per-call overhead stays small (1, 2, 4 and 8 MiB measured; 4 was best).
COL_CHUNK_BYTES = 4 << 20

#: Below this many elements an op runs on the calling thread alone.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _default_workers():
    env = os.environ.get("NNCORE_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else 1


#: Threads that share one op (the caller plus WORKERS - 1 pool threads). Default 1:
#: on the 2-core reference machine, splitting the samples between two threads (with
#: BLAS held to one thread each) was slower than one thread whose matrix products use
#: both cores through BLAS (benchmarks/RESULTS.md). ``NNCORE_NUM_THREADS=N`` opts in.
WORKERS = _default_workers()


# ---- threads: NumPy's elementwise loops are single-threaded, so split the samples --------
#
# Inside a parallel region every thread works on its own contiguous range of
# samples (the same ranges every time, so sums are deterministic), and BLAS is
# held to one thread so that the threads do not oversubscribe the cores.

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


def _blas_controllers():
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
def _single_threaded_blas(libraries=None):
    """Hold the BLAS ``libraries`` (default: all loaded) to one thread inside the block.

    The count is process-wide: products that other Python threads run meanwhile
    in those libraries run on one thread too, and a block entered while another
    runs finds one thread, leaves it, and the first block's exit restores the
    count (so the later block may finish with BLAS's threads back). Numbers are
    the same either way; only the speed changes.
    """
    libraries = _blas_controllers() if libraries is None else libraries
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
_axpy_libraries = None


def _axpy_for(dtype):
    """SciPy's BLAS ``axpy`` for ``dtype`` (``y += a * x[off:off + n]`` in one pass, in place),
    or ``None`` (no SciPy, or another dtype)."""
    global _axpy, _axpy_libraries, _blas
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
            own = [lib for lib in _blas_controllers() if lib.filepath.startswith((root + os.sep, root + ".libs"))]
            _axpy_libraries = own or None
    return _axpy.get(np.dtype(dtype))


_local = threading.local()


def _scratch(slot, shape, dtype):
    """A work array that lives only inside one op call, reused by the calling thread.

    Fresh large arrays are mmapped by the C allocator and cost a page fault per
    4 KiB page on first touch (expensive in a VM); the scratch arrays are
    allocated once per thread and slot and grow when needed (a few MiB in all).
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


def _scratch_like(slot, like, dtype):
    """:func:`_scratch` with the shape of ``(n, c, h, w)`` ``like``, stored channels-last if ``like`` is."""
    n, c, h, w = like.shape
    if like.strides[1] < like.strides[3]:
        return _scratch(slot, (n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return _scratch(slot, like.shape, dtype)


# ---- recycled result arrays -----------------------------------------------------------
#
# Results must be fresh arrays, but allocating them anew every batch makes glibc
# return memory to the kernel and take it back (its heap top is trimmed as the
# activations of a step are freed), and every 4 KiB page then faults on first
# touch: about 25 % of a training step of workload B in a VM. So the forward
# outputs (activations, padded inputs kept for the backward pass, pooling
# offsets) are recycled: an array handed out earlier whose only remaining
# reference is this pool's (``sys.getrefcount``; a view or slice keeps a
# reference to its base, so a result still in use anywhere is never taken) is
# handed out again. Activations are all alive at the peak of a training step
# anyway, so this adds little to peak memory; gradients (short-lived, consumed
# one after the other) stay fresh arrays, which glibc can reuse for each other.

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


def _fresh(shape, dtype, recycle=True):
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


def _ranges(n, step, min_elements=None, elements=None):
    """Contiguous ``(lo, hi)`` sample ranges, one per thread, made of whole chunks of ``step``."""
    if n == 0:
        return [(0, 0)]
    chunks = -(-n // step)
    workers = max(1, min(WORKERS, chunks))
    if elements is not None and elements < (min_elements or PARALLEL_MIN_ELEMENTS):
        workers = 1
    per = -(-chunks // workers) * step
    return [(lo, min(lo + per, n)) for lo in range(0, n, per)]


def _run(fn, ranges):
    """``[fn(lo, hi) for (lo, hi) in ranges]``, the ranges on parallel threads."""
    if len(ranges) == 1 or not _region.acquire(blocking=False):
        return [fn(lo, hi) for lo, hi in ranges]  # one range, or another parallel region is running
    try:
        with _single_threaded_blas():
            futures = [_executor().submit(fn, lo, hi) for lo, hi in ranges[1:]]
            try:
                first = fn(*ranges[0])
            finally:
                rest = [future.result() for future in futures]
            return [first, *rest]
    finally:
        _region.release()


# ---- helpers ---------------------------------------------------------------------------


def _is_channels_last(x):
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def _channels_last_order(x):
    """Whether the channels of ``(n, c, h, w)`` ``x`` are its fastest-varying axis in memory."""
    return x.strides[1] < x.strides[3]


def _dense_in_order_of(x, like):
    """Whether ``x`` is contiguous in the memory order (channels-last or not) of ``like``."""
    if _channels_last_order(like):
        return x.transpose(0, 2, 3, 1).flags.c_contiguous
    return x.flags.c_contiguous


def _empty_like_layout(shape_nchw, dtype, like, recycle=False):
    """An empty ``(n, c, h, w)`` array, stored channels-last when ``like`` is."""
    if like is not None and _is_channels_last(like) and not like.flags.c_contiguous:
        n, c, h, w = shape_nchw
        return _fresh((n, h, w, c), dtype, recycle).transpose(0, 3, 1, 2)
    return _fresh(shape_nchw, dtype, recycle)


def _window(offset, stride, count):
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _pad_into(out, x, padding):
    """Write ``(m, c, h, w)`` ``x`` zero-padded into channels-last ``out`` ``(m, h + pads, w + pads, c)``."""
    (top, bottom), (left, right) = padding
    h, w = x.shape[2:]
    if top:
        out[:, :top] = 0
    if bottom:
        out[:, top + h :] = 0
    if left:
        out[:, top : top + h, :left] = 0
    if right:
        out[:, top : top + h, left + w :] = 0
    out[:, top : top + h, left : left + w, :] = x.transpose(0, 2, 3, 1)


def _chunk(n, bytes_per_sample):
    """Samples per chunk so that one chunk of columns is about ``COL_CHUNK_BYTES``."""
    return max(1, min(n, COL_CHUNK_BYTES // max(bytes_per_sample, 1)))


class _Geometry:
    """Shapes of one convolution, channels-last."""

    __slots__ = ("n", "c", "h", "w", "f", "kh", "kw", "sh", "sw", "oh", "ow", "padding", "k")

    def __init__(self, x_shape, kernel_shape, stride, padding):
        self.n, self.c, self.h, self.w = x_shape
        self.f, _, self.kh, self.kw = kernel_shape
        self.sh, self.sw = stride
        self.padding = padding
        (top, bottom), (left, right) = padding
        self.oh = (self.h + top + bottom - self.kh) // self.sh + 1
        self.ow = (self.w + left + right - self.kw) // self.sw + 1
        self.k = self.kh * self.kw * self.c


def _cols(xpad, g, buffer, ones=False):
    """im2col ``(m*oh*ow, kh*kw*c)`` matrix of channels-last ``xpad`` (m samples), stored in ``buffer``.

    For ``c > 1`` the rows are ``(m, oh, ow, kh, kw, c)`` in memory: one strided
    copy whose inner loop runs along the contiguous channels. For ``c == 1`` the
    matrix is the transposed view of a tap-major ``(kh, kw, m, oh, ow)`` array:
    each kernel offset is then one contiguous block (4x faster to fill), and
    BLAS takes the transposed operand as it is (no copy). ``ones=True`` appends a
    column of ones, so that ``cols @ [[W], [bias]]`` adds the bias inside the
    product and ``cols.T @ dz`` yields ``dbias`` as its last row.
    """
    m = xpad.shape[0]
    rows = m * g.oh * g.ow
    k = g.k + ones
    if g.c == 1:
        taps = buffer[: k * rows].reshape(k, rows)
        if ones:
            taps[g.k] = 1
        grid = taps[: g.k].reshape(g.kh, g.kw, m, g.oh, g.ow)
        for i in range(g.kh):
            rows_i = _window(i, g.sh, g.oh)
            for j in range(g.kw):
                grid[i, j] = xpad[:, rows_i, _window(j, g.sw, g.ow), 0]
        return taps.T
    cols = buffer[: rows * k].reshape(rows, k)
    if ones:
        cols[:, g.k] = 1
    grid = _split_last(cols[:, : g.k], (m, g.oh, g.ow), (g.kh, g.kw, g.c))
    view = sliding_window_view(xpad, (g.kh, g.kw), axis=(1, 2))  # (m, ., ., c, kh, kw)
    view = view[:, : g.sh * (g.oh - 1) + 1 : g.sh, : g.sw * (g.ow - 1) + 1 : g.sw]
    np.copyto(grid, view.transpose(0, 1, 2, 4, 5, 3))
    return cols


def _split_last(a, lead, tail):
    """View the 2-D ``a`` (rows, K), whose last axis is contiguous, as ``(*lead, *tail)`` (never a copy)."""
    view = a.view()
    view.shape = (*lead, *tail)  # raises instead of copying
    return view


def _kernel_matrix(kernel, dtype, bias=None):
    """``(kh*kw*c, f)`` matrix of an ``(f, c, kh, kw)`` kernel, matching :func:`_cols`;
    with ``bias``, one more row holding it."""
    f = kernel.shape[0]
    weights = kernel.transpose(2, 3, 1, 0).reshape(-1, f)
    if bias is not None:
        weights = np.concatenate([weights, bias.reshape(1, f)])
    return np.ascontiguousarray(weights, dtype=dtype)


# ---- convolution + activation (the layer's op) -----------------------------------------


def conv2d_act_forward(x, kernel, bias, stride, padding, act="identity", slope=0.0, training=False):
    """Fast :func:`nncore.ops.conv2d_act_forward`: channels-last, chunked, in place.

    Per chunk of samples: padding, columns with a ones column, ONE product that
    also adds the bias, the activation in place. Training keeps the padded input
    for the backward pass; inference pads chunk by chunk into a scratch array.
    One input channel at stride 1: one output map by shifted sums
    (:func:`_direct_forward`), two by the "wide" route (:func:`_wide_forward`).
    """
    g = _Geometry(x.shape, kernel.shape, stride, padding)
    dtype = np.result_type(x, kernel, bias)
    x = x.astype(dtype, copy=False)
    out = _fresh((g.n, g.oh, g.ow, g.f), dtype)
    bias = bias.astype(dtype, copy=False)
    if g.c == 1 and g.f <= 2 and g.sh == g.sw == 1:
        # Few output maps: the wide route's extra columns cost less than the copies it saves
        # (measured: 1.3x faster than im2col for f=1, even at f=2, slower from f=4 on);
        # one map needs no columns at all.
        if g.f == 1:
            xpad = _direct_forward(x, kernel.astype(dtype, copy=False), bias, out, g, act, slope, training)
        else:
            xpad = _wide_forward(x, _kernel_matrix(kernel, dtype, bias), out, g, act, slope, training)
        return out.transpose(0, 3, 1, 2), (ConvCache(xpad, out, g) if training else None)
    weights = _kernel_matrix(kernel, dtype, bias)
    padded_shape = (g.h + sum(padding[0]), g.w + sum(padding[1]), g.c)
    # Without padding, a channels-last input is used as it is; else pad into xpad (kept
    # for training) or into a scratch array, chunk by chunk (inference).
    as_is = all(p == 0 for pair in padding for p in pair) and _is_channels_last(x)
    xpad = x.transpose(0, 2, 3, 1) if as_is else _fresh((g.n, *padded_shape), dtype) if training else None
    rows = g.oh * g.ow
    step = _chunk(g.n, rows * (max(g.k + 1, g.f) + g.f) * dtype.itemsize)

    def work(lo, hi):
        m = min(step, hi - lo)
        buffer = _scratch("cols", m * rows * (g.k + 1), dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            if xpad is None:
                source = _scratch("xpad", (stop - start, *padded_shape), dtype)
                _pad_into(source, x[start:stop], padding)
            else:
                source = xpad[start:stop]
                if not as_is:
                    _pad_into(source, x[start:stop], padding)
            z = out[start:stop].reshape(-1, g.f)
            np.matmul(_cols(source, g, buffer, ones=True), weights, out=z)
            _activate_into(z, act, slope, z)

    _run(work, _ranges(g.n, step, elements=out.size + x.size))
    cache = ConvCache(xpad, out, g) if training else None
    return out.transpose(0, 3, 1, 2), cache


class _FlatImages:
    """Padded one-channel images stored flat, for the stride-1 routes of one input channel.

    Each padded ``(hp, wp)`` image is a row of ``length = hp*wp + kw - 1`` values
    (the ``kw - 1`` trailing zeros keep the last window inside the row). In this
    layout the input under kernel offset ``(i, j)`` for ALL outputs of an image is
    ONE contiguous slice starting at ``i*wp + j`` of length ``span = oh*wp``: "wide"
    output rows of ``wp`` values, of which the first ``ow`` are real.
    """

    def __init__(self, g, dtype, training):
        (top, bottom), (left, right) = g.padding
        self.g, self.hp, self.wp = g, g.h + top + bottom, g.w + left + right
        self.length, self.span = self.hp * self.wp + g.kw - 1, g.oh * self.wp
        # Training keeps every padded image for the backward pass; inference pads into scratch.
        self.storage = _fresh((g.n, self.length), dtype) if training else None

    def fill(self, x, start, stop):
        """The ``(stop - start, length)`` flat padded images of samples ``start:stop`` of ``x``."""
        size = stop - start
        if self.storage is not None:
            flat = self.storage[start:stop]
        else:
            flat = _scratch("flat", (size, self.length), x.dtype)
        (top, _), (left, _) = self.g.padding
        # Zeroing it all and copying the inside is faster than zeroing the border's short runs.
        flat.fill(0)
        images = flat[:, : self.hp * self.wp].reshape(size, self.hp, self.wp)
        images[:, top : top + self.g.h, left : left + self.g.w] = x[start:stop, 0]
        return flat

    def real(self, wide, size, per_image):
        """The ``(size, oh, ow)`` real outputs of ``wide`` values, ``per_image`` apart."""
        item = wide.itemsize
        return as_strided(wide, (size, self.g.oh, self.g.ow), (per_image * item, self.wp * item, item))

    def padded(self):
        """The kept padded input as a ``(n, hp, wp, 1)`` view (the backward pass's ``xpad``), or ``None``."""
        if self.storage is None:
            return None
        return self.storage[:, : self.hp * self.wp].reshape(self.g.n, self.hp, self.wp, 1)


def _direct_forward(x, kernel, bias, out, g, act, slope, training):
    """Forward pass for one input channel, one output map and stride 1, as shifted sums.

    With one output map a product with the columns does two flops per value it
    reads, so the im2col routes are bound by building the columns. Here the
    columns are never built: on the flat padded images of a chunk, laid end to
    end (:class:`_FlatImages`), the input under kernel offset ``(i, j)`` is one
    contiguous slice, and the wide output is ``sum_ij w_ij * slice_ij`` (the values
    between images are computed and dropped). Each term after the first is one
    BLAS ``axpy`` pass (SciPy's; NumPy needs a product and a sum), then the real
    outputs are kept and get the bias and the activation.
    SciPy's BLAS is held to one thread meanwhile (:func:`_single_threaded_blas`:
    a threaded axpy was 2-3x slower inside a network, its idle workers spinning
    against NumPy's). SciPy's axpy keeps the GIL, so ``NNCORE_NUM_THREADS`` > 1
    parallelises only the padding, copies and activation of this route.
    Returns the padded input for the backward pass when training, else ``None``.
    """
    flat = _FlatImages(g, out.dtype, training)
    taps = [(i * flat.wp + j, kernel[0, 0, i, j]) for i in range(g.kh) for j in range(g.kw)]
    axpy = _axpy_for(out.dtype)
    step = _chunk(g.n, 2 * flat.length * out.dtype.itemsize)  # the images and the sum

    def work(lo, hi):
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            size = stop - start
            images = flat.fill(x, start, stop).reshape(-1)
            count = (size - 1) * flat.length + flat.span  # to the last real output of the chunk
            total = _scratch("sum", count, out.dtype)
            offset, weight = taps[0]
            np.multiply(images[offset : offset + count], weight, out=total)
            for offset, weight in taps[1:]:
                if axpy is not None and weight != 0:  # BLAS skips a zero weight: 0 * inf would vanish
                    total = axpy(images, total, n=count, a=weight, offx=offset)  # in place here
                else:
                    total += images[offset : offset + count] * weight
            # Keep the real outputs, then add the bias last (as the generic op: the same
            # inf/NaN when a sum overflows) and activate, in contiguous loops (ufuncs over
            # strided rows of ow values are slow).
            z = out[start:stop, :, :, 0]
            np.copyto(z, flat.real(total, size, flat.length))
            np.add(z, bias[0], out=z)
            _activate_into(z, act, slope, z)

    with _single_threaded_blas(_axpy_libraries if axpy is not None else []):
        _run(work, _ranges(g.n, step, elements=out.size + x.size))
    return flat.padded()


def _wide_forward(x, weights, out, g, act, slope, training):
    """Forward pass for one input channel, two output maps and stride 1, on "wide" rows.

    The columns are the ``kh*kw`` slices of the flat padded images
    (:class:`_FlatImages`): long copies instead of ``kh*kw*oh`` short ones. The
    product then computes ``wp`` instead of ``ow`` values per output row; only
    the ``ow`` real ones are copied into ``out``.
    Returns the padded input as a ``(n, hp, wp, 1)`` view (for the backward pass)
    when training, else ``None``.
    """
    flat = _FlatImages(g, out.dtype, training)
    wp, span = flat.wp, flat.span
    dtype = out.dtype
    step = _chunk(g.n, span * (g.k + 1 + 2 * g.f) * dtype.itemsize)

    def work(lo, hi):
        m = min(step, hi - lo)
        taps = _scratch("cols", (g.k + 1) * m * span, dtype)
        wide = _scratch("wide", m * span * g.f, dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            size = stop - start
            images = flat.fill(x, start, stop)
            cols = taps[: (g.k + 1) * size * span].reshape(g.k + 1, size, span)
            cols[g.k] = 1
            for i in range(g.kh):
                for j in range(g.kw):
                    offset = i * wp + j
                    cols[i * g.kw + j] = images[:, offset : offset + span]
            z = wide[: size * span * g.f].reshape(size * span, g.f)
            np.matmul(cols.reshape(g.k + 1, size * span).T, weights, out=z)
            # The activation runs on the contiguous wide rows (long loops; the extra columns
            # are discarded), then one copy keeps the ow real columns of each row.
            _activate_into(z, act, slope, z)
            np.copyto(out[start:stop], z.reshape(size, g.oh, wp, g.f)[:, :, : g.ow, :])

    _run(work, _ranges(g.n, step, elements=out.size + x.size))
    return flat.padded()


class ConvCache:
    """What :func:`conv2d_act_forward` keeps for the backward pass: the padded
    channels-last input and output (no columns). ``nncore.ops.conv2d_act_backward``
    calls :meth:`backward` for such a cache."""

    __slots__ = ("xpad", "out", "geometry")

    def __init__(self, xpad, out, geometry):
        self.xpad, self.out, self.geometry = xpad, out, geometry

    def backward(self, delta, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
        return conv2d_act_backward(delta, self, kernel, stride, padding, act, slope, need_input_grad)


def _activate_into(z, act, slope, out):
    """``out = act(z)`` (``out`` may be ``z``: in place)."""
    if act == "relu":
        # fmax, like where(z > 0, z, 0), maps NaN to 0.
        np.fmax(z, 0, out=out)
    elif act == "lrelu":
        # max(z, slope*z) == where(z > 0, z, slope*z) for 0 < slope < 1 (NaN stays NaN in both).
        scaled = _scratch("scaled", z.shape, z.dtype)
        np.multiply(z, z.dtype.type(slope), out=scaled)
        np.maximum(z, scaled, out=out)
    elif out is not z:
        np.copyto(out, z)


def _activation_grad(delta, out, act, slope, dz):
    """``dL/dz`` into the ``(m, oh, ow, f)`` array ``dz`` from ``delta`` (``(m, f, oh, ow)``).

    The same numbers as the generic ``delta * derivative`` for finite ``delta``.
    """
    d = delta.transpose(0, 2, 3, 1)
    if act == "relu":
        np.multiply(d, out > 0, out=dz)  # d * (z > 0): the generic d * leaky_relu_derivative(out, 0)
    elif act == "lrelu":
        # where(out > 0, d, d*slope) without where() (slow): d*mask + (d*slope)*(not mask);
        # adding the zero and multiplying by one are exact, so the numbers are the generic ones.
        mask = out > 0
        np.multiply(d, mask, out=dz)
        rest = d * dz.dtype.type(slope)
        rest *= ~mask
        dz += rest
    else:
        np.copyto(dz, d)
    return dz


def conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    """Fast :func:`nncore.ops.conv2d_act_backward` for a cache from :func:`conv2d_act_forward`.

    Each thread takes a range of samples and, chunk by chunk: the activation
    gradient, the columns built again, its share of ``dkernel``/``dbias`` and
    its samples of ``dx``; the shares are added in a fixed order.
    """
    xpad, out, g = cache.xpad, cache.out, cache.geometry
    dtype = np.result_type(delta, out, kernel)
    weights = _kernel_matrix(kernel, dtype)
    rows = g.oh * g.ow
    # Stride 1 with several channels: dx is the correlation of dz with the flipped kernel
    # (one im2col and one product, 2x faster than col2im's strided sums); else col2im.
    transposed = need_input_grad and g.sh == g.sw == 1 and g.c > 1
    dcols_width = g.kh * g.kw * g.f if transposed else g.k if need_input_grad else 0
    # One chunk's work arrays (columns, dz, input-gradient columns) stay near COL_CHUNK_BYTES.
    step = _chunk(g.n, rows * (g.k + 1 + g.f + dcols_width) * dtype.itemsize)
    if transposed:
        tg = _Geometry((g.n, g.f, g.h + g.kh - 1, g.w + g.kw - 1), (g.c, g.f, g.kh, g.kw), (1, 1), ((0, 0), (0, 0)))
        flipped = _kernel_matrix(kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype)  # (kh*kw*f, c)
        dx = np.empty((g.n, g.h, g.w, g.c), dtype)
    elif need_input_grad:
        dxpad = np.empty(xpad.shape, dtype)

    def work(lo, hi):
        m = min(step, hi - lo)
        buffer = _scratch("cols", m * rows * (g.k + 1), dtype)
        dz_buffer = _scratch("dz", m * rows * g.f, dtype)
        grads = np.zeros((g.k + 1, g.f), dtype)  # dkernel rows, then dbias (the ones column)
        part = np.empty((g.k + 1, g.f), dtype)
        if transposed:
            canvas = _scratch("canvas", (m, tg.h, tg.w, g.f), dtype)
            tbuffer = _scratch("dcols", m * tg.oh * tg.ow * tg.k, dtype)
        elif need_input_grad:
            dxpad[lo:hi] = 0
            dcol_buffer = _scratch("dcols", m * rows * g.k, dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            dz4 = dz_buffer[: (stop - start) * rows * g.f].reshape(stop - start, g.oh, g.ow, g.f)
            dz = _activation_grad(delta[start:stop], out[start:stop], act, slope, dz4).reshape(-1, g.f)
            np.matmul(_cols(xpad[start:stop], g, buffer, ones=True).T, dz, out=part)
            grads += part
            if transposed:
                _place(canvas[: stop - start], dz4, g.kh - 1 - padding[0][0], g.kw - 1 - padding[1][0])
                cols = _cols(canvas[: stop - start], tg, tbuffer)
                np.matmul(cols, flipped, out=dx[start:stop].reshape(-1, g.c))
            elif need_input_grad:
                _col2im_channels_last(dz, weights, dxpad[start:stop], g, dcol_buffer)
        return grads

    parts = _run(work, _ranges(g.n, step, elements=out.size + xpad.size))
    grads = parts[0]
    for more in parts[1:]:
        grads += more
    dkernel = np.ascontiguousarray(grads[: g.k].reshape(g.kh, g.kw, g.c, g.f).transpose(3, 2, 0, 1))
    dbias = grads[g.k].copy()
    if not need_input_grad:
        return None, dkernel, dbias
    if not transposed:
        (top, _), (left, _) = padding
        dx = dxpad[:, top : top + g.h, left : left + g.w, :]
    return dx.transpose(0, 3, 1, 2), dkernel, dbias


def _place(canvas, src, top, left):
    """Zero ``canvas`` (m, H, W, f) and copy ``src`` (m, h, w, f) into it at ``(top, left)``, cropping."""
    canvas[...] = 0
    r0, c0 = max(0, -top), max(0, -left)
    r1 = min(src.shape[1], canvas.shape[1] - top)
    c1 = min(src.shape[2], canvas.shape[2] - left)
    if r1 > r0 and c1 > c0:
        canvas[:, r0 + top : r1 + top, c0 + left : c1 + left, :] = src[:, r0:r1, c0:c1, :]


def _col2im_channels_last(dz, weights, dxpad, g, buffer):
    """Add the column gradients ``dz @ weights.T`` into channels-last ``dxpad`` (in place).

    The columns use the layout of :func:`_cols`: tap-major for ``c == 1``.
    """
    m = dxpad.shape[0]
    if g.c == 1:
        dcols = buffer[: g.k * dz.shape[0]].reshape(g.k, dz.shape[0])
        np.matmul(weights, dz.T, out=dcols)
        dcols = dcols.reshape(g.kh, g.kw, m, g.oh, g.ow)
        target_of = lambda rows, cols: dxpad[:, rows, cols, 0]  # noqa: E731
        tap_of = lambda i, j: dcols[i, j]  # noqa: E731
    else:
        dcols = buffer[: dz.shape[0] * g.k].reshape(dz.shape[0], g.k)
        np.matmul(dz, weights.T, out=dcols)
        dcols = dcols.reshape(m, g.oh, g.ow, g.kh, g.kw, g.c)
        target_of = lambda rows, cols: dxpad[:, rows, cols, :]  # noqa: E731
        tap_of = lambda i, j: dcols[:, :, :, i, j, :]  # noqa: E731
    for i in range(g.kh):
        rows = _window(i, g.sh, g.oh)
        for j in range(g.kw):
            target = target_of(rows, _window(j, g.sw, g.ow))
            np.add(target, tap_of(i, j), out=target)


# ---- the public ops, same layouts as the generic ones -----------------------------------


def col2im(col, padded_hw, stride_hw):
    """Fast :func:`nncore.ops.col2im`: the same sums, in place (no temporaries)."""
    n, c, kh, kw, oh, ow = col.shape
    sh, sw = stride_hw
    x = np.zeros((n, c, *padded_hw), dtype=col.dtype)
    for i in range(kh):
        rows = _window(i, sh, oh)
        for j in range(kw):
            target = x[:, :, rows, _window(j, sw, ow)]
            np.add(target, col[:, :, i, j, :, :], out=target)
    return x


def _pool_windows(x_shape, kernel_hw, stride_hw):
    """``[(offset, index)]`` of every window offset, and the output ``(oh, ow)``."""
    (kh, kw), (sh, sw) = kernel_hw, stride_hw
    oh, ow = ((i - k) // s + 1 for i, k, s in zip(x_shape[2:], kernel_hw, stride_hw))
    taps = [
        (i * kw + j, (slice(None), slice(None), _window(i, sh, oh), _window(j, sw, ow)))
        for i in range(kh)
        for j in range(kw)
    ]
    return taps, (oh, ow)


def _sub_ranges(lo, hi, bytes_per_sample):
    """Chunks of about ``COL_CHUNK_BYTES`` of input: the running maximum of a chunk stays
    in cache across the window offsets (1.6x faster pooling at batch 1024)."""
    step = max(1, COL_CHUNK_BYTES // max(bytes_per_sample, 1))
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def _sample_ranges(n, elements):
    """One contiguous range of samples per thread (one range when the op is small)."""
    return _ranges(n, max(1, -(-n // WORKERS)), elements=elements)


def pool2d_forward(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
    """Fast :func:`nncore.ops.pool2d_forward`: running maximum and offsets updated in place.

    ``np.where`` and masked copies are slow (not vectorised); ``maximum``,
    ``greater`` and arithmetic on masks are. ``argmax`` uses that the offsets
    grow: ``where(better, k, argmax) == maximum(argmax, better * k)``. The
    samples are split between threads.
    """
    taps, out_hw = _pool_windows(x.shape, kernel_hw, stride_hw)
    shape = (*x.shape[:2], *out_hw)
    best = _empty_like_layout(shape, x.dtype, x, recycle=True)
    average = pooling == "average"
    need_argmax = need_argmax and not average
    # Offsets as small ints (the generic op gives int32; the values are the same).
    index = np.int8 if len(taps) <= 127 else np.int32
    argmax = _empty_like_layout(shape, index, x, recycle=True) if need_argmax else None

    def work(lo, hi):
        for a, b in _sub_ranges(lo, hi, x[:1].nbytes):
            body(a, b)

    def body(lo, hi):
        xs, bs = x[lo:hi], best[lo:hi]
        np.copyto(bs, xs[taps[0][1]])
        if average:
            for _, under in taps[1:]:
                np.add(bs, xs[under], out=bs)
            np.divide(bs, kernel_hw[0] * kernel_hw[1], out=bs)
            return
        if need_argmax:
            am = argmax[lo:hi]
            am[...] = 0
            better = _scratch_like("better", bs, bool)
            offsets = _scratch_like("offsets", bs, index)
        for offset, under in taps[1:]:
            window = xs[under]
            if need_argmax:
                np.greater(window, bs, out=better)  # strictly greater: the first maximum wins ties
                np.multiply(better, index(offset), out=offsets)
                np.maximum(am, offsets, out=am)
            np.maximum(bs, window, out=bs)

    _run(work, _sample_ranges(x.shape[0], x.size))
    if not average and np.isnan(best).any():
        # maximum() propagates NaN, the generic rule (w > best) skips it: redo such input exactly.
        return _pool2d_max_exact(x, taps, shape, need_argmax)
    return best, argmax


def _pool2d_max_exact(x, taps, shape, need_argmax):
    """The generic rule step by step (slow masked copies), for inputs with NaN."""
    best = _empty_like_layout(shape, x.dtype, x)
    np.copyto(best, x[taps[0][1]])
    argmax = np.zeros_like(best, dtype=np.int32)
    better = np.empty_like(best, dtype=bool)
    for offset, under in taps[1:]:
        window = x[under]
        np.greater(window, best, out=better)
        np.copyto(best, window, where=better)
        np.copyto(argmax, offset, where=better)
    return best, (argmax if need_argmax else None)


def pool2d_backward(dy, input_hw, kernel_hw, stride_hw, pooling="max", argmax=None):
    """Fast :func:`nncore.ops.pool2d_backward`: gradients routed by multiplying with masks."""
    n, c = dy.shape[:2]
    shape = (n, c, *input_hw)
    dx = _empty_like_layout(shape, dy.dtype, argmax if argmax is not None else dy)
    taps, out_hw = _pool_windows(shape, kernel_hw, stride_hw)
    disjoint = stride_hw[0] >= kernel_hw[0] and stride_hw[1] >= kernel_hw[1]
    covered = all(s == k and k * o == i for s, k, o, i in zip(stride_hw, kernel_hw, out_hw, input_hw))
    average = pooling == "average"
    if not average and not np.isfinite(dy).all():
        # dy * 0 would be NaN where the generic where() gives 0: route such gradients exactly.
        return _pool2d_max_backward_exact(dy, dx, taps, argmax)
    if argmax is not None and not _dense_in_order_of(dy, argmax):
        # Mixed memory orders (or a cropped view) make every loop below slow: align dy once.
        aligned = _scratch_like("aligned", argmax, dy.dtype)
        np.copyto(aligned, dy)
        dy = aligned
    share = dy / (kernel_hw[0] * kernel_hw[1]) if average else None

    def work(lo, hi):
        for a, b in _sub_ranges(lo, hi, dx[:1].nbytes):
            body(a, b)

    def body(lo, hi):
        dxs, dys = dx[lo:hi], dy[lo:hi]
        if not (disjoint and covered):
            dxs[...] = 0
        if average:
            for _, under in taps:
                target = dxs[under]
                if disjoint:
                    np.copyto(target, share[lo:hi])
                else:
                    np.add(target, share[lo:hi], out=target)
            return
        ams = argmax[lo:hi]
        mask = _scratch_like("mask", ams, bool)
        routed = None if disjoint else _scratch_like("routed", dys, dys.dtype)
        for offset, under in taps:
            np.equal(ams, offset, out=mask)
            target = dxs[under]
            if disjoint:
                # Windows do not overlap: each input element gets at most one gradient.
                np.multiply(dys, mask, out=target)
            else:
                np.multiply(dys, mask, out=routed)
                np.add(target, routed, out=target)

    _run(work, _sample_ranges(n, dx.size))
    return dx


def _pool2d_max_backward_exact(dy, dx, taps, argmax):
    dx[...] = 0
    routed = np.empty(dy.shape, dy.dtype)
    for offset, under in taps:
        routed[...] = 0
        np.copyto(routed, dy, where=argmax == offset)
        target = dx[under]
        np.add(target, routed, out=target)
    return dx


FAST_PATHS = {
    "col2im": col2im,
    "conv2d_act_forward": conv2d_act_forward,
    "pool2d_forward": pool2d_forward,
    "pool2d_backward": pool2d_backward,
}
