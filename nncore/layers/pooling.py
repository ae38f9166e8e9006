"""Pooling2DLayer: max or average pooling over sliding windows."""

from .. import ops
from .base import Layer, check_int
from .registry import register_layer


@register_layer("pool", aliases=("pooling", "maxpool"))
class Pooling2DLayer(Layer):
    """Max or average pooling without padding (as ``torch.nn.MaxPool2d``/``AvgPool2d``).

    Parameters
    ----------
    kernel_height, kernel_width : int
        Window size.
    v_stride, h_stride : int
        Window step; smaller than the window gives overlapping windows.
    pooling : {"max", "average"}
        Max pooling sends each gradient to the first maximal element of its window.

    Shape
    -----
    Input ``(n, c, h, w)``; output ``(n, c, floor((h - kh) / v_stride) + 1, floor((w - kw) / h_stride) + 1)``.
    """

    def __init__(self, kernel_height, kernel_width, v_stride=1, h_stride=1, pooling="max", seed=None):
        super().__init__(seed)
        check_int(
            type(self).__name__,
            kernel_height=kernel_height,
            kernel_width=kernel_width,
            v_stride=v_stride,
            h_stride=h_stride,
        )
        if pooling not in ops.pool.POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {ops.pool.POOLINGS}")
        self.kernel_hw = (kernel_height, kernel_width)
        self.stride = (v_stride, h_stride)
        self.pooling = pooling

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.label} expects images (n, c, h, w), got samples of shape {input_shape}")
        channels, *hw = input_shape
        if any(k > i for k, i in zip(self.kernel_hw, hw)):
            raise ValueError(
                f"{self.label}: pooling window {self.kernel_hw[0]}x{self.kernel_hw[1]} is larger "
                f"than its input {hw[0]}x{hw[1]}"
            )
        return (channels, *ops.pool_output_shape(hw, self.kernel_hw, self.stride))

    def forward(self, a, training=False):
        out, argmax = ops.pool2d_forward(a, self.kernel_hw, self.stride, self.pooling, need_argmax=training)
        if training:
            self._cache = (a.shape[2:], argmax)
        return out

    def backward(self, delta, need_input_grad=True):
        input_hw, argmax = self._cache
        self._cache = None
        return ops.pool2d_backward(delta, input_hw, self.kernel_hw, self.stride, self.pooling, argmax)

    def get_config(self):
        (kh, kw), (sv, sh) = self.kernel_hw, self.stride
        return {"kernel_height": kh, "kernel_width": kw, "v_stride": sv, "h_stride": sh, "pooling": self.pooling}

    def describe(self):
        return f"{self.pooling} {self.kernel_hw[0]}x{self.kernel_hw[1]} s{self.stride}"
