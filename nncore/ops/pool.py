"""Max and average pooling over ``(n, c, h, w)`` images, without padding.

Max pooling gathers every window in one operation (:mod:`nncore.ops.gather`)
and reduces over them once; average pooling stacks one strided slice per window
offset, so that its sum has one order everywhere. Overlapping windows (stride <
window) and strides larger than the window need no special case. The backward pass routes the gradient to every window offset at once;
when the windows tile the input (stride = window) that routed array already is
the input gradient, laid out differently, otherwise each offset's share is
added through its strided slice (:func:`backends.geometry.kernel_offsets`).
"""

import functools

import numpy as np
from array_api_compat import device

from backends import backend_of
from backends.geometry import NO_PADDING, kernel_offsets, output_hw

from .._array import namespace
from ._dispatch import overridable
from .gather import gather_columns

POOLINGS = ("max", "average")


def pool_output_shape(input_hw, kernel_hw, stride_hw):
    """``floor((i - k) / s) + 1`` for each spatial axis."""
    return output_hw(input_hw, kernel_hw, stride_hw)


@overridable("pool2d_forward")
def pool2d_forward(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
    """Pool ``x``; return ``(y, argmax)`` where ``argmax`` (max pooling only) is the
    window offset ``i * kw + j`` of the first maximal element of each window.

    A window holding NaN pools to NaN, and its ``argmax`` is its first NaN (as
    NumPy's ``max``/``argmax`` and torch's max pooling). ``argmax`` is an integer
    array: the namespace's index type here, int8 from the NumPy fast path (same
    values). ``need_argmax=False`` (inference) skips the offsets and returns
    ``(y, None)``.
    """
    xp = namespace(x)
    n, c = x.shape[:2]
    out_hw = pool_output_shape(x.shape[2:], kernel_hw, stride_hw)
    if pooling == "average":
        # Offset by offset, so the sum runs in one order on every library (and as the fast paths add).
        windows = xp.stack([x[:, :, rows, cols] for _, _, rows, cols in kernel_offsets(kernel_hw, stride_hw, out_hw)])
        return xp.sum(windows, axis=0) / (kernel_hw[0] * kernel_hw[1]), None
    # Max and argmax do not depend on an order: every window in one gather.
    windows = gather_columns(x, kernel_hw, stride_hw, NO_PADDING, shape=(n, c, kernel_hw[0] * kernel_hw[1], -1))
    argmax = xp.reshape(xp.argmax(windows, axis=2), (n, c, *out_hw)) if need_argmax else None
    return xp.reshape(xp.max(windows, axis=2), (n, c, *out_hw)), argmax


@overridable("pool2d_backward")
def pool2d_backward(dy, input_hw, kernel_hw, stride_hw, pooling="max", argmax=None):
    """Gradient with respect to the pooling input; overlapping windows add up."""
    xp = namespace(dy)
    n, c, oh, ow = dy.shape
    (kh, kw), (h, w) = kernel_hw, input_hw
    routed = _routed(dy, kernel_hw, pooling, argmax)  # (n, c, oh, kh, ow, kw)
    if tuple(stride_hw) == tuple(kernel_hw):
        # The windows tile the input: row oh*kh + i of the input is row i of window oh.
        tiled = xp.reshape(routed, (n, c, oh * kh, ow * kw))
        if (oh * kh, ow * kw) == (h, w):
            return tiled
        dx = xp.zeros((n, c, h, w), dtype=dy.dtype, device=device(dy))
        dx[:, :, : oh * kh, : ow * kw] = tiled  # rows and columns no window met get no gradient
        return dx
    dx = xp.zeros((n, c, h, w), dtype=dy.dtype, device=device(dy))
    for i, j, rows, cols in kernel_offsets(kernel_hw, stride_hw, (oh, ow)):
        dx[:, :, rows, cols] = dx[:, :, rows, cols] + routed[:, :, :, i, :, j]
    return dx


@functools.lru_cache(maxsize=64)
def _window_offsets(backend, kh, kw):
    """``i * kw + j`` at ``[i, 0, j]``: each window position's offset, shaped to broadcast over ``(.., kh, ., kw)``."""
    return backend.asarray(np.arange(kh * kw).reshape(kh, 1, kw))


def _routed(dy, kernel_hw, pooling, argmax):
    """The gradient each window offset ``(i, j)`` receives, as ``(n, c, oh, kh, ow, kw)``."""
    xp = namespace(dy)
    n, c, oh, ow = dy.shape
    kh, kw = kernel_hw
    if pooling == "average":
        share = xp.reshape(dy / (kh * kw), (n, c, oh, 1, ow, 1))
        return xp.broadcast_to(share, (n, c, oh, kh, ow, kw))
    offsets = _window_offsets(backend_of(dy), kh, kw)
    chosen = xp.reshape(argmax, (n, c, oh, 1, ow, 1)) == offsets
    return xp.where(chosen, xp.reshape(dy, (n, c, oh, 1, ow, 1)), 0.0)
