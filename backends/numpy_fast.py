"""NumPy-only fast paths for the generic ops in :mod:`nncore.ops`.

:func:`backends.fast_path` returns these functions, and only for real
``numpy.ndarray`` arguments, so array_api_strict and CuPy always run the
generic, standard-only code. Each function takes the same arguments as the
generic op it replaces and gives the same numbers (elementwise results are
identical; sums and matrix products may differ by float rounding, because
BLAS blocks them differently). ``tests/test_fast_paths.py`` checks both.

What makes them faster than the generic code on a 2-core CPU:

* **channels-last convolution.** Inside :func:`conv2d_act_forward` the image is
  padded into ``(n, h, w, c)`` order, the columns are ``(n*oh*ow, kh*kw*c)``
  rows made by one strided copy (``sliding_window_view``) and the convolution
  is ONE large BLAS product ``cols @ W`` (instead of ``n`` small ones), whose
  ``(n*oh*ow, f)`` result is handed on as a ``(n, f, oh, ow)`` view (no
  transposed copy). Backward uses two more large products and an in-place
  channels-last col2im. Pooling and elementwise ops keep that memory order.
* **bounded memory.** Columns are built for a chunk of samples at a time
  (about ``COL_CHUNK_BYTES``) and built again in the backward pass instead of
  being stored, so memory grows with the batch only through the activations.
* **in place.** Bias, RELU/LRELU, pooling maxima and col2im sums are written
  with ``out=``/``where=`` into preallocated arrays: no temporaries.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Target size of one chunk of im2col columns (bytes). A few MB keeps a chunk in
#: the L3 cache while the matrix products stay large enough for two BLAS threads.
COL_CHUNK_BYTES = 4 << 20


# ---- helpers ---------------------------------------------------------------------------


def _channels_last(x):
    """The ``(n, h, w, c)`` view of an ``(n, c, h, w)`` array (a copy only if needed)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _is_channels_last(x):
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def _empty_like_layout(shape_nchw, dtype, like):
    """An empty ``(n, c, h, w)`` array, stored channels-last when ``like`` is."""
    if like is not None and _is_channels_last(like) and not like.flags.c_contiguous:
        n, c, h, w = shape_nchw
        return np.empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return np.empty(shape_nchw, dtype)


def _window(offset, stride, count):
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _pad_channels_last(x, padding):
    """Zero-padded ``(n, h + pads, w + pads, c)`` copy of ``(n, c, h, w)`` ``x``."""
    (top, bottom), (left, right) = padding
    n, c, h, w = x.shape
    if top == bottom == left == right == 0:
        return _channels_last(x)
    out = np.empty((n, h + top + bottom, w + left + right, c), x.dtype)
    # Zero only the border, then copy the image once.
    out[:, :top] = 0
    out[:, top + h :] = 0
    out[:, top : top + h, :left] = 0
    out[:, top : top + h, left + w :] = 0
    out[:, top : top + h, left : left + w, :] = x.transpose(0, 2, 3, 1)
    return out


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


def _cols(xpad, g, buffer):
    """im2col rows ``(m*oh*ow, kh*kw*c)`` of channels-last ``xpad`` (m samples), into ``buffer``."""
    m = xpad.shape[0]
    view = sliding_window_view(xpad, (g.kh, g.kw), axis=(1, 2))  # (m, ., ., c, kh, kw)
    view = view[:, : g.sh * (g.oh - 1) + 1 : g.sh, : g.sw * (g.ow - 1) + 1 : g.sw]
    cols = buffer[: m * g.oh * g.ow * g.k].reshape(m, g.oh, g.ow, g.kh, g.kw, g.c)
    np.copyto(cols, view.transpose(0, 1, 2, 4, 5, 3))
    return cols.reshape(m * g.oh * g.ow, g.k)


def _kernel_matrix(kernel, dtype):
    """``(kh*kw*c, f)`` matrix of an ``(f, c, kh, kw)`` kernel, matching :func:`_cols`."""
    f = kernel.shape[0]
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), dtype=dtype).reshape(-1, f)


# ---- convolution + activation (the layer's op) -----------------------------------------


def conv2d_act_forward(x, kernel, bias, stride, padding, act="identity", slope=0.0, training=False):
    """Fast :func:`nncore.ops.conv2d_act_forward`: channels-last, chunked, in place."""
    g = _Geometry(x.shape, kernel.shape, stride, padding)
    dtype = np.result_type(x, kernel, bias)
    xpad = _pad_channels_last(x.astype(dtype, copy=False), padding)
    weights = _kernel_matrix(kernel, dtype)
    bias = bias.astype(dtype, copy=False)
    out = np.empty((g.n, g.oh, g.ow, g.f), dtype)
    rows = g.oh * g.ow
    step = _chunk(g.n, rows * g.k * dtype.itemsize)
    buffer = np.empty(step * rows * g.k, dtype)
    for start in range(0, g.n, step):
        stop = min(start + step, g.n)
        z = out[start:stop].reshape(-1, g.f)
        np.matmul(_cols(xpad[start:stop], g, buffer), weights, out=z)
        z += bias
        _activate_inplace(z, act, slope)
    cache = ConvCache(xpad, out, g) if training else None
    return out.transpose(0, 3, 1, 2), cache


class ConvCache:
    """What :func:`conv2d_act_forward` keeps for the backward pass: the padded
    channels-last input and output (no columns). ``nncore.ops.conv2d_act_backward``
    calls :meth:`backward` for such a cache."""

    __slots__ = ("xpad", "out", "geometry")

    def __init__(self, xpad, out, geometry):
        self.xpad, self.out, self.geometry = xpad, out, geometry

    def backward(self, delta, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
        return conv2d_act_backward(delta, self, kernel, stride, padding, act, slope, need_input_grad)


def _activate_inplace(z, act, slope):
    if act == "relu":
        # fmax, like where(z > 0, z, 0), maps NaN to 0.
        np.fmax(z, 0, out=z)
    elif act == "lrelu":
        # max(z, slope*z) == where(z > 0, z, slope*z) for 0 < slope < 1 (NaN stays NaN in both).
        np.maximum(z, z * z.dtype.type(slope), out=z)


def _activation_grad(delta, out, act, slope, dtype):
    """``dL/dz`` as a contiguous ``(n, oh, ow, f)`` array from ``delta`` (``(n, f, oh, ow)``)."""
    d = delta.transpose(0, 2, 3, 1)
    dz = np.empty(out.shape, dtype)
    if act == "relu":
        np.multiply(d, out > 0, out=dz)
    elif act == "lrelu":
        np.multiply(d, dtype.type(slope), out=dz)
        np.copyto(dz, d, where=out > 0)
    else:
        np.copyto(dz, d)
    return dz


def conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    """Fast :func:`nncore.ops.conv2d_act_backward` for a cache from :func:`conv2d_act_forward`."""
    xpad, out, g = cache.xpad, cache.out, cache.geometry
    dtype = np.result_type(delta, out, kernel)
    dz = _activation_grad(delta, out, act, slope, dtype).reshape(-1, g.f)  # (n*oh*ow, f)
    dbias = dz.sum(axis=0)
    weights = _kernel_matrix(kernel, dtype)
    rows = g.oh * g.ow
    step = _chunk(g.n, rows * g.k * dtype.itemsize)
    buffer = np.empty(step * rows * g.k, dtype)
    dweights = np.zeros((g.k, g.f), dtype)
    part = np.empty((g.k, g.f), dtype) if step < g.n else None
    dxpad = np.zeros(xpad.shape, dtype) if need_input_grad else None
    dcol_buffer = np.empty(step * rows * g.k, dtype) if need_input_grad else None
    for start in range(0, g.n, step):
        stop = min(start + step, g.n)
        dz_chunk = dz[start * rows : stop * rows]
        cols = _cols(xpad[start:stop], g, buffer)
        if part is None:
            np.matmul(cols.T, dz_chunk, out=dweights)
        else:
            np.matmul(cols.T, dz_chunk, out=part)
            dweights += part
        if need_input_grad:
            dcols = dcol_buffer[: (stop - start) * rows * g.k].reshape(-1, g.k)
            np.matmul(dz_chunk, weights.T, out=dcols)
            _col2im_channels_last(dcols, dxpad[start:stop], g)
    dkernel = np.ascontiguousarray(dweights.reshape(g.kh, g.kw, g.c, g.f).transpose(3, 2, 0, 1))
    dx = None
    if need_input_grad:
        (top, _), (left, _) = padding
        dx = dxpad[:, top : top + g.h, left : left + g.w, :].transpose(0, 3, 1, 2)
    return dx, dkernel.astype(dtype, copy=False), dbias


def _col2im_channels_last(dcols, dxpad, g):
    """Add the ``(m*oh*ow, kh*kw*c)`` column gradients into channels-last ``dxpad`` (in place)."""
    m = dxpad.shape[0]
    dcols = dcols.reshape(m, g.oh, g.ow, g.kh, g.kw, g.c)
    for i in range(g.kh):
        rows = _window(i, g.sh, g.oh)
        for j in range(g.kw):
            target = dxpad[:, rows, _window(j, g.sw, g.ow), :]
            np.add(target, dcols[:, :, :, i, j, :], out=target)


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


def pool2d_forward(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
    """Fast :func:`nncore.ops.pool2d_forward`: running maximum and offsets updated in place."""
    taps, out_hw = _pool_windows(x.shape, kernel_hw, stride_hw)
    shape = (*x.shape[:2], *out_hw)
    best = _empty_like_layout(shape, x.dtype, x)
    _, first = taps[0]
    np.copyto(best, x[first])
    if pooling == "average":
        for _, under in taps[1:]:
            np.add(best, x[under], out=best)
        np.divide(best, kernel_hw[0] * kernel_hw[1], out=best)
        return best, None
    if not need_argmax:
        # max(best, w) == where(w > best, w, best) except for NaN; keep the generic NaN rule.
        better = np.empty(shape, bool)
        for _, under in taps[1:]:
            np.greater(x[under], best, out=better)
            np.copyto(best, x[under], where=better)
        return best, None
    argmax = np.zeros(best.shape, np.int32) if best.flags.c_contiguous else np.zeros_like(best, dtype=np.int32)
    better = np.empty_like(argmax, dtype=bool)
    for offset, under in taps[1:]:
        window = x[under]
        np.greater(window, best, out=better)  # strictly greater: the first maximum wins ties
        np.copyto(best, window, where=better)
        np.copyto(argmax, offset, where=better)
    return best, argmax


def pool2d_backward(dy, input_hw, kernel_hw, stride_hw, pooling="max", argmax=None):
    """Fast :func:`nncore.ops.pool2d_backward`: masked writes into one zeroed gradient."""
    n, c = dy.shape[:2]
    shape = (n, c, *input_hw)
    like = argmax if argmax is not None else dy
    dx = _empty_like_layout(shape, dy.dtype, like)
    dx[...] = 0
    taps, _ = _pool_windows(shape, kernel_hw, stride_hw)
    disjoint = stride_hw[0] >= kernel_hw[0] and stride_hw[1] >= kernel_hw[1]
    if pooling == "average":
        share = dy / (kernel_hw[0] * kernel_hw[1])
        for _, under in taps:
            target = dx[under]
            if disjoint:
                np.copyto(target, share)
            else:
                np.add(target, share, out=target)
        return dx
    mask = np.empty(argmax.shape, bool)
    routed = None if disjoint else np.empty(dy.shape, dy.dtype)
    for offset, under in taps:
        np.equal(argmax, offset, out=mask)
        target = dx[under]
        if disjoint:
            # Windows do not overlap: each input element gets at most one gradient.
            np.copyto(target, dy, where=mask)
        else:
            routed[...] = 0
            np.copyto(routed, dy, where=mask)
            np.add(target, routed, out=target)
    return dx


FAST_PATHS = {
    "col2im": col2im,
    "conv2d_act_forward": conv2d_act_forward,
    "pool2d_forward": pool2d_forward,
    "pool2d_backward": pool2d_backward,
}
