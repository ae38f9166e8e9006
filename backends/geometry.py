"""Where a sliding window meets its input: pure integer arithmetic and slices.

One place for the geometry that convolution and pooling share, used by the
generic ops (``nncore.ops``) and by the fast paths (``backends.numpy_fast``)
alike. Sizes are ``(height, width)`` pairs; ``padding`` is
``((top, bottom), (left, right))``. Nothing here touches an array.
"""

from __future__ import annotations

NO_PADDING = ((0, 0), (0, 0))


def output_hw(input_hw, kernel_hw, stride_hw, padding=NO_PADDING):
    """Output ``(oh, ow)`` of a sliding window: ``floor((i + pads - k) / s) + 1`` per axis."""
    return tuple(
        (i + before + after - k) // s + 1 for i, k, s, (before, after) in zip(input_hw, kernel_hw, stride_hw, padding)
    )


def window(offset, stride, count):
    """The slice of one input axis that kernel offset ``offset`` meets, one element per output."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def kernel_offsets(kernel_hw, stride_hw, out_hw):
    """Every kernel offset as ``(i, j, rows, cols)``, row-major (``i * kw + j`` is its index).

    ``x[..., rows, cols]`` is the ``(oh, ow)`` grid of input values that kernel
    element ``(i, j)`` multiplies (or that window position ``(i, j)`` pools).
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel_hw, stride_hw, out_hw
    return [(i, j, window(i, sh, oh), window(j, sw, ow)) for i in range(kh) for j in range(kw)]


def spread(count, stride, start, size):
    """Slices ``(source, target)`` that put ``count`` values ``stride`` apart from ``start`` into ``size`` places.

    Value ``y`` goes to place ``start + y * stride``; values that would land
    outside ``[0, size)`` are dropped, so ``target[target_slice] =
    values[source_slice]`` is always in bounds (both slices may be empty).
    Used to lay an output gradient out on the input grid for the transposed
    convolution.
    """
    first = max(0, -(start // stride))  # the first y with start + y * stride >= 0
    last = min(count, -(-(size - start) // stride))  # one past the last y with start + y * stride < size
    if last <= first:
        return slice(0, 0), slice(0, 0)
    return slice(first, last), slice(start + first * stride, start + (last - 1) * stride + 1, stride)
