"""Padding rules and zero padding of ``(n, c, h, w)`` images."""

import math
from numbers import Integral

from array_api_compat import device

from backends.geometry import output_hw

from .._array import namespace


def resolve_padding(pad, input_hw, kernel_hw, stride_hw):
    """Zero padding ``((top, bottom), (left, right))`` for a padding spec.

    ``pad`` is ``"same"`` (output ``ceil(i / s)``; total ``max((o - 1) s + k - i, 0)``,
    the odd row/column at the bottom/right, as TensorFlow/Keras do), ``"valid"``
    (none), an int ``p`` or a pair ``(ph, pw)`` (symmetric, as in torch).
    """
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0), (0, 0)
        if pad == "same":
            return tuple(_same(i, k, s) for i, k, s in zip(input_hw, kernel_hw, stride_hw))
        raise ValueError(f"unknown pad {pad!r}; use 'same', 'valid', an int or a (height, width) pair")
    pair = (pad, pad) if isinstance(pad, Integral) else tuple(pad) if isinstance(pad, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(p, Integral) and not isinstance(p, bool) for p in pair):
        raise TypeError(f"pad must be 'same', 'valid', an int or a pair of ints, got {pad!r}")
    if min(pair) < 0:
        raise ValueError(f"pad must not be negative, got {pad!r}")
    return tuple((int(p), int(p)) for p in pair)


def _same(size, kernel, stride):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_shape(input_hw, kernel_hw, stride_hw, padding):
    """Output ``(oh, ow)`` of a sliding window: ``floor((i + pads - k) / s) + 1``."""
    return output_hw(input_hw, kernel_hw, stride_hw, padding)


def pad2d(x, padding):
    """Zero-pad the last two axes of ``x`` by ``((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    xp = namespace(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=device(x))
    out[:, :, top : top + h, left : left + w] = x
    return out


def unpad2d(x, padding):
    """Inverse of :func:`pad2d` for gradients: crop the padded border away."""
    (top, bottom), (left, right) = padding
    h, w = x.shape[-2:]
    return x[:, :, top : h - bottom, left : w - right]
