"""Pure array functions: padding, im2col/col2im, convolution and pooling.

Everything here is stateless and written against the array API standard; the
namespace is taken from the arguments. Images are ``(n, c, h, w)``; kernels
``(f, c, kh, kw)``; strides and paddings are ``(vertical, horizontal)`` pairs.
"""

from .conv import conv2d_backward, conv2d_direct_backward, conv2d_direct_forward, conv2d_forward
from .im2col import col2im, im2col
from .padding import conv_output_shape, pad2d, resolve_padding, unpad2d
from .pool import pool2d_backward, pool2d_forward, pool_output_shape

__all__ = [
    "col2im",
    "conv2d_backward",
    "conv2d_direct_backward",
    "conv2d_direct_forward",
    "conv2d_forward",
    "conv_output_shape",
    "im2col",
    "pad2d",
    "pool2d_backward",
    "pool2d_forward",
    "pool_output_shape",
    "resolve_padding",
    "unpad2d",
]
