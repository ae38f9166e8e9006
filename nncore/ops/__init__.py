"""Pure array functions: padding, im2col/col2im, convolution and pooling.

Everything here is stateless and written against the array API standard; the
namespace is taken from the arguments. Images are ``(n, c, h, w)``; kernels
``(f, c, kh, kw)``; strides and paddings are ``(vertical, horizontal)`` pairs.

Some ops (``col2im``, ``pool2d_*``, ``conv2d_act_*``) run a faster version
when the array library of their arguments registered one
(``backends.register_fast_paths``; today NumPy's, ``backends/numpy_fast/``),
with the same numbers (up to float rounding in matrix products); ``op.generic``
is always the standard-only version and ``backends.use_fast_paths(False)``
switches the replacements off. Kernel-offset geometry comes from
``backends.geometry``, shared with the fast paths.
"""

from .conv import (
    FUSED_ACTIVATIONS,
    conv2d_act_backward,
    conv2d_act_forward,
    conv2d_backward,
    conv2d_direct_backward,
    conv2d_direct_forward,
    conv2d_forward,
)
from .im2col import col2im, im2col
from .padding import conv_output_shape, pad2d, resolve_padding, unpad2d
from .pool import pool2d_backward, pool2d_forward, pool_output_shape

__all__ = [
    "FUSED_ACTIVATIONS",
    "col2im",
    "conv2d_act_backward",
    "conv2d_act_forward",
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
