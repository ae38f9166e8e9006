"""im2col and its adjoint col2im, after Chainer's ``utils/conv.py``.

The columns have shape ``(n, c, kh, kw, oh, ow)``: one strided slice of the
image per kernel offset ``(i, j)`` (:func:`backends.geometry.kernel_offsets`).
A convolution is then one matrix product of the columns with the kernel over
the axes ``(c, kh, kw)``.
"""

from array_api_compat import device

from backends.geometry import kernel_offsets

from .._array import namespace
from ._dispatch import overridable


def im2col(x, kernel_hw, stride_hw, out_hw):
    """Columns ``(n, c, kh, kw, oh, ow)`` of an already padded image ``x``."""
    xp = namespace(x)
    n, c = x.shape[:2]
    taps = [x[:, :, rows, cols] for _, _, rows, cols in kernel_offsets(kernel_hw, stride_hw, out_hw)]
    return xp.reshape(xp.stack(taps, axis=2), (n, c, *kernel_hw, *out_hw))


@overridable("col2im")
def col2im(col, padded_hw, stride_hw):
    """Adjoint of :func:`im2col`: sum columns back into a padded ``(n, c, h, w)`` image."""
    xp = namespace(col)
    n, c, kh, kw, oh, ow = col.shape
    x = xp.zeros((n, c, *padded_hw), dtype=col.dtype, device=device(col))
    for i, j, rows, cols in kernel_offsets((kh, kw), stride_hw, (oh, ow)):
        # Overlapping windows add up; the standard has no scatter-add, slices suffice.
        x[:, :, rows, cols] = x[:, :, rows, cols] + col[:, :, i, j, :, :]
    return x
