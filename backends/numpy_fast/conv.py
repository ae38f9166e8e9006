"""Fast convolution + activation for NumPy arrays: channels-last im2col, one product per chunk.

Inside :func:`conv2d_act_forward` images are padded into ``(n, h, w, c)`` order
and the columns are ``(n*oh*ow, kh*kw*c)`` rows, so ``cols @ W`` is ONE BLAS
product per chunk of samples instead of one small product per sample, and its
``(n*oh*ow, f)`` result is handed on as an ``(n, f, oh, ow)`` view without a
transposed copy. A column of ones puts the bias inside the product (and gives
``dbias`` for free backward). Columns exist for one chunk at a time and are
built again in the backward pass instead of being kept, so memory grows with
the batch only through the activations. At stride 1 the input gradient is the
correlation of ``dz`` with the flipped kernel (one more im2col and product),
cheaper than col2im's strided sums. One input channel at stride 1 takes the
routes of :mod:`.conv_one_channel`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import geometry
from . import threads
from .activation import activate_into, activation_grad
from .buffers import fresh, is_channels_last, scratch
from .conv_one_channel import direct_forward, wide_forward


class Geometry:
    """Shapes of one convolution, channels-last."""

    __slots__ = ("n", "c", "h", "w", "f", "kh", "kw", "sh", "sw", "oh", "ow", "padding", "k")

    def __init__(self, x_shape, kernel_shape, stride, padding):
        self.n, self.c, self.h, self.w = x_shape
        self.f, _, self.kh, self.kw = kernel_shape
        self.sh, self.sw = stride
        self.padding = padding
        self.oh, self.ow = geometry.output_hw((self.h, self.w), (self.kh, self.kw), stride, padding)
        self.k = self.kh * self.kw * self.c

    def offsets(self):
        """:func:`backends.geometry.kernel_offsets` of this convolution."""
        return geometry.kernel_offsets((self.kh, self.kw), (self.sh, self.sw), (self.oh, self.ow))


class ConvCache:
    """What :func:`conv2d_act_forward` keeps for the backward pass: the padded
    channels-last input and output (no columns)."""

    __slots__ = ("xpad", "out", "geometry")

    def __init__(self, xpad, out, geometry):
        self.xpad, self.out, self.geometry = xpad, out, geometry


def pad_into(out, x, padding):
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


def cols_of(xpad, g, buffer, ones=False):
    """im2col ``(m*oh*ow, kh*kw*c)`` matrix of channels-last ``xpad`` (m samples), stored in ``buffer``.

    For ``c > 1`` the rows are ``(m, oh, ow, kh, kw, c)`` in memory: one strided
    copy whose inner loop runs along the contiguous channels. For ``c == 1`` the
    matrix is the transposed view of a tap-major ``(kh, kw, m, oh, ow)`` array:
    each kernel offset is then one contiguous block (faster to fill), and BLAS
    takes the transposed operand as it is (no copy). ``ones=True`` appends a
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
        for i, j, rows_ij, cols_ij in g.offsets():
            grid[i, j] = xpad[:, rows_ij, cols_ij, 0]
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


def kernel_matrix(kernel, dtype, bias=None):
    """``(kh*kw*c, f)`` matrix of an ``(f, c, kh, kw)`` kernel, matching :func:`cols_of`;
    with ``bias``, one more row holding it."""
    f = kernel.shape[0]
    weights = kernel.transpose(2, 3, 1, 0).reshape(-1, f)
    if bias is not None:
        weights = np.concatenate([weights, bias.reshape(1, f)])
    return np.ascontiguousarray(weights, dtype=dtype)


def conv2d_act_forward(x, kernel, bias, stride, padding, act="identity", slope=0.0, training=False):
    """Fast :func:`nncore.ops.conv2d_act_forward`: channels-last, chunked, in place.

    Per chunk of samples: padding, columns with a ones column, ONE product that
    also adds the bias, the activation in place. Training keeps the padded input
    for the backward pass; inference pads chunk by chunk into a scratch array.
    """
    g = Geometry(x.shape, kernel.shape, stride, padding)
    dtype = np.result_type(x, kernel, bias)
    x = x.astype(dtype, copy=False)
    out = fresh((g.n, g.oh, g.ow, g.f), dtype)
    bias = bias.astype(dtype, copy=False)
    if g.c == 1 and g.f <= 2 and g.sh == g.sw == 1:
        # One map needs no columns at all; for two, the wide route's extra columns cost less
        # than the copies it saves (benchmarks/FAST_PATHS.md).
        if g.f == 1:
            xpad = direct_forward(x, kernel.astype(dtype, copy=False), bias, out, g, act, slope, training)
        else:
            xpad = wide_forward(x, kernel_matrix(kernel, dtype, bias), out, g, act, slope, training)
        return out.transpose(0, 3, 1, 2), (ConvCache(xpad, out, g) if training else None)
    weights = kernel_matrix(kernel, dtype, bias)
    padded_shape = (g.h + sum(padding[0]), g.w + sum(padding[1]), g.c)
    # Without padding, a channels-last input is used as it is; else pad into xpad (kept
    # for training) or into a scratch array, chunk by chunk (inference).
    as_is = all(p == 0 for pair in padding for p in pair) and is_channels_last(x)
    xpad = x.transpose(0, 2, 3, 1) if as_is else fresh((g.n, *padded_shape), dtype) if training else None
    rows = g.oh * g.ow
    step = threads.chunk(g.n, rows * (max(g.k + 1, g.f) + g.f) * dtype.itemsize)

    def work(lo, hi):
        m = min(step, hi - lo)
        buffer = scratch("cols", m * rows * (g.k + 1), dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            if xpad is None:
                source = scratch("xpad", (stop - start, *padded_shape), dtype)
                pad_into(source, x[start:stop], padding)
            else:
                source = xpad[start:stop]
                if not as_is:
                    pad_into(source, x[start:stop], padding)
            z = out[start:stop].reshape(-1, g.f)
            np.matmul(cols_of(source, g, buffer, ones=True), weights, out=z)
            activate_into(z, act, slope, z)

    threads.run(work, threads.ranges(g.n, step, elements=out.size + x.size))
    cache = ConvCache(xpad, out, g) if training else None
    return out.transpose(0, 3, 1, 2), cache


def conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    """Fast :func:`nncore.ops.conv2d_act_backward` for a cache from :func:`conv2d_act_forward`.

    Chunk by chunk: the activation gradient, the columns built again, the
    chunk's share of ``dkernel``/``dbias`` and its samples of ``dx``. The shares
    are added in sample order (:func:`.threads.in_order`). ``NotImplemented``
    for a cache of the generic op's forward pass.
    """
    if not isinstance(cache, ConvCache):
        return NotImplemented
    xpad, out, g = cache.xpad, cache.out, cache.geometry
    dtype = np.result_type(delta, out, kernel)
    weights = kernel_matrix(kernel, dtype)
    rows = g.oh * g.ow
    # Stride 1 with several channels: dx is the correlation of dz with the flipped kernel
    # (one im2col and one product, cheaper than col2im's strided sums); else col2im.
    transposed = need_input_grad and g.sh == g.sw == 1 and g.c > 1
    dcols_width = g.kh * g.kw * g.f if transposed else g.k if need_input_grad else 0
    # One chunk's work arrays (columns, dz, input-gradient columns) stay near COL_CHUNK_BYTES.
    step = threads.chunk(g.n, rows * (g.k + 1 + g.f + dcols_width) * dtype.itemsize)
    if transposed:
        tg = Geometry((g.n, g.f, g.h + g.kh - 1, g.w + g.kw - 1), (g.c, g.f, g.kh, g.kw), (1, 1), geometry.NO_PADDING)
        flipped = kernel_matrix(kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype)  # (kh*kw*f, c)
        dx = np.empty((g.n, g.h, g.w, g.c), dtype)
    elif need_input_grad:
        dxpad = np.empty(xpad.shape, dtype)

    def work(lo, hi):
        m = min(step, hi - lo)
        buffer = scratch("cols", m * rows * (g.k + 1), dtype)
        dz_buffer = scratch("dz", m * rows * g.f, dtype)
        parts = []  # per chunk: dkernel rows, then dbias (the ones column)
        if transposed:
            canvas = scratch("canvas", (m, tg.h, tg.w, g.f), dtype)
            tbuffer = scratch("dcols", m * tg.oh * tg.ow * tg.k, dtype)
        elif need_input_grad:
            dxpad[lo:hi] = 0
            dcol_buffer = scratch("dcols", m * rows * g.k, dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            dz4 = dz_buffer[: (stop - start) * rows * g.f].reshape(stop - start, g.oh, g.ow, g.f)
            dz = activation_grad(delta[start:stop], out[start:stop], act, slope, dz4).reshape(-1, g.f)
            parts.append(cols_of(xpad[start:stop], g, buffer, ones=True).T @ dz)
            if transposed:
                _place(canvas[: stop - start], dz4, g.kh - 1 - padding[0][0], g.kw - 1 - padding[1][0])
                cols = cols_of(canvas[: stop - start], tg, tbuffer)
                np.matmul(cols, flipped, out=dx[start:stop].reshape(-1, g.c))
            elif need_input_grad:
                _col2im_channels_last(dz, weights, dxpad[start:stop], g, dcol_buffer)
        return parts

    grads = threads.in_order(threads.run(work, threads.ranges(g.n, step, elements=out.size + xpad.size)))
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
    src_rows, rows = geometry.spread(src.shape[1], 1, top, canvas.shape[1])
    src_cols, cols = geometry.spread(src.shape[2], 1, left, canvas.shape[2])
    canvas[:, rows, cols, :] = src[:, src_rows, src_cols, :]


def _col2im_channels_last(dz, weights, dxpad, g, buffer):
    """Add the column gradients ``dz @ weights.T`` into channels-last ``dxpad`` (in place).

    The columns use the layout of :func:`cols_of`: tap-major for ``c == 1``.
    """
    m = dxpad.shape[0]
    if g.c == 1:
        dcols = buffer[: g.k * dz.shape[0]].reshape(g.k, dz.shape[0])
        np.matmul(weights, dz.T, out=dcols)
        dcols = dcols.reshape(g.kh, g.kw, m, g.oh, g.ow)
        for i, j, rows, cols in g.offsets():
            target = dxpad[:, rows, cols, 0]
            np.add(target, dcols[i, j], out=target)
        return
    dcols = buffer[: dz.shape[0] * g.k].reshape(dz.shape[0], g.k)
    np.matmul(dz, weights.T, out=dcols)
    dcols = dcols.reshape(m, g.oh, g.ow, g.kh, g.kw, g.c)
    for i, j, rows, cols in g.offsets():
        target = dxpad[:, rows, cols, :]
        np.add(target, dcols[:, :, :, i, j, :], out=target)


def col2im(col, padded_hw, stride_hw):
    """Fast :func:`nncore.ops.col2im`: the same sums, in place (no temporaries)."""
    n, c, kh, kw, oh, ow = col.shape
    x = np.zeros((n, c, *padded_hw), dtype=col.dtype)
    for i, j, rows, cols in geometry.kernel_offsets((kh, kw), stride_hw, (oh, ow)):
        target = x[:, :, rows, cols]
        np.add(target, col[:, :, i, j, :, :], out=target)
    return x
