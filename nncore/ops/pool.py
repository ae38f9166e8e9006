"""Max and average pooling over ``(n, c, h, w)`` images, without padding.

Like im2col, both directions loop over the window offsets and take one strided
slice each, so overlapping windows (stride < window) and strides larger than
the window need no special case.
"""

from array_api_compat import device

from .._array import namespace
from ._dispatch import overridable
from .conv import _taps

POOLINGS = ("max", "average")


def pool_output_shape(input_hw, kernel_hw, stride_hw):
    """``floor((i - k) / s) + 1`` for each spatial axis."""
    return tuple((i - k) // s + 1 for i, k, s in zip(input_hw, kernel_hw, stride_hw))


@overridable("pool2d_forward")
def pool2d_forward(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
    """Pool ``x``; return ``(y, argmax)`` where ``argmax`` (max pooling only) is the
    window offset ``i * kw + j`` of the first maximal element of each window.

    ``argmax`` is an integer array: int32 here, int8 from the NumPy fast path
    (same values). ``need_argmax=False`` (inference) skips the offsets and
    returns ``(y, None)``.
    """
    xp = namespace(x)
    out_hw = pool_output_shape(x.shape[2:], kernel_hw, stride_hw)
    taps = _taps(kernel_hw, stride_hw, out_hw)
    if pooling == "average":
        y = sum(x[under] for _, _, under in taps)
        return y / (kernel_hw[0] * kernel_hw[1]), None
    _, _, under = next(taps)
    best = x[under]
    argmax = xp.zeros(best.shape, dtype=xp.int32, device=device(x))
    for offset, (_, _, under) in enumerate(taps, start=1):
        window = x[under]
        # Strictly greater keeps the first maximum on ties, as torch does.
        better = window > best
        best = xp.where(better, window, best)
        argmax = xp.where(better, offset, argmax)
    return best, (argmax if need_argmax else None)


@overridable("pool2d_backward")
def pool2d_backward(dy, input_hw, kernel_hw, stride_hw, pooling="max", argmax=None):
    """Gradient with respect to the pooling input; overlapping windows add up."""
    xp = namespace(dy)
    n, c = dy.shape[:2]
    dx = xp.zeros((n, c, *input_hw), dtype=dy.dtype, device=device(dy))
    zero = xp.zeros_like(dy)
    share = dy / (kernel_hw[0] * kernel_hw[1]) if pooling == "average" else None
    for offset, (_, _, under) in enumerate(_taps(kernel_hw, stride_hw, dy.shape[2:])):
        routed = share if share is not None else xp.where(argmax == offset, dy, zero)
        dx[under] = dx[under] + routed
    return dx
