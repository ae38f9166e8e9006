"""im2col and its adjoint col2im, after Chainer's ``utils/conv.py``.

The columns have shape ``(n, c, kh, kw, oh, ow)``: one strided slice of the
image per kernel offset ``(i, j)``. Reshaped to ``(n, c*kh*kw, oh*ow)`` they
turn a convolution into one batched matrix product whose result is already in
``(n, f, oh*ow)`` order, so no transposed copy is needed.
"""

from array_api_compat import device

from .._array import namespace
from ._dispatch import overridable


def _window(offset, stride, count):
    """The slice that picks, for kernel offset ``offset``, the input under every output."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


@overridable("im2col")
def im2col(x, kernel_hw, stride_hw, out_hw):
    """Columns ``(n, c, kh, kw, oh, ow)`` of an already padded image ``x``."""
    xp = namespace(x)
    (kh, kw), (sh, sw), (oh, ow) = kernel_hw, stride_hw, out_hw
    n, c = x.shape[:2]
    col = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype, device=device(x))
    for i in range(kh):
        rows = _window(i, sh, oh)
        for j in range(kw):
            col[:, :, i, j, :, :] = x[:, :, rows, _window(j, sw, ow)]
    return col


@overridable("col2im")
def col2im(col, padded_hw, stride_hw):
    """Adjoint of :func:`im2col`: sum columns back into a padded ``(n, c, h, w)`` image."""
    xp = namespace(col)
    n, c, kh, kw, oh, ow = col.shape
    sh, sw = stride_hw
    x = xp.zeros((n, c, *padded_hw), dtype=col.dtype, device=device(col))
    for i in range(kh):
        rows = _window(i, sh, oh)
        for j in range(kw):
            cols = _window(j, sw, ow)
            # Overlapping windows add up; the standard has no scatter-add, slices suffice.
            x[:, :, rows, cols] = x[:, :, rows, cols] + col[:, :, i, j, :, :]
    return x
