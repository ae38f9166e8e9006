"""Fast max and average pooling for NumPy arrays.

``np.where`` and masked ``copyto`` are not vectorised (benchmarks/FAST_PATHS.md);
``maximum``, ``greater`` and products with boolean masks are. So the running
maximum and its offsets are updated in place with those, offsets as ``int8``,
chunk by chunk so that the running maximum stays in cache across the window
offsets. Inputs with NaN (and gradients with NaN or inf) take exact, slower
routes that follow the generic op's rule.
"""

from __future__ import annotations

import numpy as np

from .. import geometry
from . import threads
from .buffers import dense_in_order_of, empty_like_layout, scratch_like


def _windows(x_shape, kernel_hw, stride_hw):
    """``[(offset, index)]`` of every window offset, and the output ``(oh, ow)``."""
    out_hw = geometry.output_hw(x_shape[2:], kernel_hw, stride_hw)
    kw = kernel_hw[1]
    taps = [(i * kw + j, (slice(None), slice(None), rows, cols))
            for i, j, rows, cols in geometry.kernel_offsets(kernel_hw, stride_hw, out_hw)]
    return taps, out_hw


def pool2d_forward(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
    """Fast :func:`nncore.ops.pool2d_forward`: running maximum and offsets updated in place.

    ``argmax`` uses that the offsets grow: ``where(better, k, argmax) ==
    maximum(argmax, better * k)``. The samples are split between threads.
    """
    taps, out_hw = _windows(x.shape, kernel_hw, stride_hw)
    shape = (*x.shape[:2], *out_hw)
    best = empty_like_layout(shape, x.dtype, x, recycle=True)
    average = pooling == "average"
    need_argmax = need_argmax and not average
    # Offsets as small ints (the generic op gives the default index type; the values are the same).
    index = np.int8 if len(taps) <= 127 else np.int32
    argmax = empty_like_layout(shape, index, x, recycle=True) if need_argmax else None

    def work(lo, hi):
        for a, b in threads.sub_ranges(lo, hi, x[:1].nbytes):
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
            better = scratch_like("better", bs, bool)
            offsets = scratch_like("offsets", bs, index)
        for offset, under in taps[1:]:
            window = xs[under]
            if need_argmax:
                np.greater(window, bs, out=better)  # strictly greater: the first maximum wins ties
                np.multiply(better, index(offset), out=offsets)
                np.maximum(am, offsets, out=am)
            np.maximum(bs, window, out=bs)

    threads.run(work, threads.sample_ranges(x.shape[0], x.size))
    if not average and need_argmax and np.isnan(best).any():
        # maximum() gives NaN where a window holds one, as the generic op does, but the running
        # offsets skip NaN (nothing is greater than it): find the first NaN of such windows.
        return best, _offsets_with_nan(x, taps, argmax)
    return best, argmax


def _offsets_with_nan(x, taps, argmax):
    """``argmax``, in place, with the offset of the first NaN of every window that holds one (slow)."""
    found = np.zeros(argmax.shape, bool)
    for offset, under in taps:
        first = np.isnan(x[under]) & ~found
        argmax[first] = offset
        found |= first
    return argmax


def pool2d_backward(dy, input_hw, kernel_hw, stride_hw, pooling="max", argmax=None):
    """Fast :func:`nncore.ops.pool2d_backward`: gradients routed by multiplying with masks."""
    n, c = dy.shape[:2]
    shape = (n, c, *input_hw)
    dx = empty_like_layout(shape, dy.dtype, argmax if argmax is not None else dy)
    taps, out_hw = _windows(shape, kernel_hw, stride_hw)
    disjoint = stride_hw[0] >= kernel_hw[0] and stride_hw[1] >= kernel_hw[1]
    covered = all(s == k and k * o == i for s, k, o, i in zip(stride_hw, kernel_hw, out_hw, input_hw))
    average = pooling == "average"
    if not average and not np.isfinite(dy).all():
        # dy * 0 would be NaN where the generic where() gives 0: route such gradients exactly.
        return _max_backward_exact(dy, dx, taps, argmax)
    if argmax is not None and not dense_in_order_of(dy, argmax):
        # Mixed memory orders (or a cropped view) make every loop below slow: align dy once.
        aligned = scratch_like("aligned", argmax, dy.dtype)
        np.copyto(aligned, dy)
        dy = aligned
    share = dy / (kernel_hw[0] * kernel_hw[1]) if average else None

    def work(lo, hi):
        for a, b in threads.sub_ranges(lo, hi, dx[:1].nbytes):
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
        mask = scratch_like("mask", ams, bool)
        routed = None if disjoint else scratch_like("routed", dys, dys.dtype)
        for offset, under in taps:
            np.equal(ams, offset, out=mask)
            target = dxs[under]
            if disjoint:
                # Windows do not overlap: each input element gets at most one gradient.
                np.multiply(dys, mask, out=target)
            else:
                np.multiply(dys, mask, out=routed)
                np.add(target, routed, out=target)

    threads.run(work, threads.sample_ranges(n, dx.size))
    return dx


def _max_backward_exact(dy, dx, taps, argmax):
    dx[...] = 0
    routed = np.empty(dy.shape, dy.dtype)
    for offset, under in taps:
        routed[...] = 0
        np.copyto(routed, dy, where=argmax == offset)
        target = dx[under]
        np.add(target, routed, out=target)
    return dx
