"""Convolution2DLayer: a bank of 2-D filters followed by an activation."""

import numpy as np

from .. import activations, ops
from .base import Layer, check_int, function_name, glorot_or_he
from .registry import register_layer

# Activations the convolution op applies itself, with their negative slope.
_FUSED = {
    activations.identity: ("identity", 0.0),
    activations.RELU: ("relu", 0.0),
    activations.LRELU: ("lrelu", activations.LRELU_SLOPE),
}


@register_layer("conv", aliases=("conv2d",))
class Convolution2DLayer(Layer):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) plus activation.

    Parameters
    ----------
    input_channels, feature_maps : int
        Channels in and out.
    kernel_height, kernel_width : int
        Kernel size.
    v_stride, h_stride : int
        Vertical and horizontal stride.
    pad : "same", "valid", int or (int, int)
        ``"same"`` gives output ``ceil(i / s)`` with TensorFlow's rule (the odd
        padding row/column at the bottom/right); an int or pair pads
        symmetrically with zeros.
    act_func : callable or str
        Activation applied to the convolution output.
    seed : int, optional
        Seeds the initial kernel when the layer is used on its own.
    optimized : bool
        ``True``: im2col and one matrix product; ``False``: the readable direct
        sum over kernel offsets (same numbers, slower).
    scheduler : Scheduler, optional
        Update rule; the CNN passes its own.
    reset_weights_independently : bool
        Accepted for the course code; a layer used on its own builds itself
        (and draws its kernel from ``seed``) for the shape of its first input.

    Shape
    -----
    Input ``(n, input_channels, h, w)``; output ``(n, feature_maps, oh, ow)``.
    Parameters ``kernel (feature_maps, input_channels, kernel_height, kernel_width)``
    and ``bias (feature_maps,)``.
    """

    params = ("kernel", "bias")
    penalised = ("kernel",)

    def __init__(
        self,
        input_channels,
        feature_maps,
        kernel_height,
        kernel_width,
        v_stride=1,
        h_stride=1,
        pad="same",
        act_func=activations.LRELU,
        seed=None,
        optimized=True,
        scheduler=None,
        reset_weights_independently=True,
    ):
        super().__init__(seed, scheduler)
        name = type(self).__name__
        check_int(
            name,
            input_channels=input_channels,
            feature_maps=feature_maps,
            kernel_height=kernel_height,
            kernel_width=kernel_width,
            v_stride=v_stride,
            h_stride=h_stride,
        )
        if isinstance(pad, list):
            pad = tuple(pad)  # a pair read back from JSON
        ops.resolve_padding(pad, (1, 1), (1, 1), (1, 1))  # reject bad specs now
        self.input_channels = input_channels
        self.feature_maps = feature_maps
        self.kernel_hw = (kernel_height, kernel_width)
        self.stride = (v_stride, h_stride)
        self.pad = pad
        self.act_func = activations.resolve(act_func)
        self.optimized = bool(optimized)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{self.label} expects images (n, channels, height, width), got samples of shape {input_shape}"
            )
        channels, *hw = input_shape
        if channels != self.input_channels:
            raise ValueError(f"{self.label} expects {self.input_channels} input channels, got {channels}")
        padding = ops.resolve_padding(self.pad, hw, self.kernel_hw, self.stride)
        padded = [i + sum(p) for i, p in zip(hw, padding)]
        if any(k > p for k, p in zip(self.kernel_hw, padded)):
            raise ValueError(
                f"{self.label}: kernel {self.kernel_hw[0]}x{self.kernel_hw[1]} is larger than its "
                f"padded input {padded[0]}x{padded[1]} (input {hw[0]}x{hw[1]}, pad={self.pad!r})"
            )
        return (self.feature_maps, *ops.conv_output_shape(hw, self.kernel_hw, self.stride, padding))

    @property
    def padding(self):
        """``((top, bottom), (left, right))`` zero padding for the built input size."""
        return ops.resolve_padding(self.pad, self.input_shape[1:], self.kernel_hw, self.stride)

    def param_shapes(self, input_shape):
        return {"kernel": (self.feature_maps, self.input_channels, *self.kernel_hw), "bias": (self.feature_maps,)}

    def init_params(self, input_shape, rng):
        kh, kw = self.kernel_hw
        fan_in, fan_out = self.input_channels * kh * kw, self.feature_maps * kh * kw
        kernel = glorot_or_he(self.act_func, fan_in, fan_out, self.param_shapes(input_shape)["kernel"], rng)
        return {"kernel": kernel, "bias": np.zeros(self.feature_maps)}

    def _fused(self):
        """``(act, slope)`` when the convolution op can apply the activation itself, else ``(None, 0)``."""
        return _FUSED.get(self.act_func, (None, 0.0))

    def forward(self, a, training=False):
        if not self.optimized:
            z = ops.conv2d_direct_forward(a, self.kernel, self.bias, self.stride, self.padding)
            out = self.act_func(z)
            if training:
                self._cache = (a, z, out)
            return out
        act, slope = self._fused()
        if act is not None:
            # RELU/LRELU/identity: applied inside the op (in place on NumPy); z is not kept.
            out, cache = ops.conv2d_act_forward(a, self.kernel, self.bias, self.stride, self.padding, act, slope,
                                                training)
            z = None
        else:
            z, cache = ops.conv2d_act_forward(a, self.kernel, self.bias, self.stride, self.padding, "identity", 0.0,
                                              training)
            out = self.act_func(z)
        if training:
            self._cache = (cache, z, out)
        return out

    def backward(self, delta, need_input_grad=True):
        cache, z, out = self._cache
        self._cache = None
        if not self.optimized:
            dz = activations.backprop(self.act_func, z, out, delta)
            dx, dkernel, dbias = ops.conv2d_direct_backward(dz, cache, self.kernel, self.stride, self.padding)
        else:
            act, slope = self._fused()
            if act is None:
                delta, act = activations.backprop(self.act_func, z, out, delta), "identity"
            dx, dkernel, dbias = ops.conv2d_act_backward(
                delta, cache, self.kernel, self.stride, self.padding, act, slope, need_input_grad
            )
        self.grads = {"kernel": dkernel, "bias": dbias}
        return dx

    def get_config(self):
        (kh, kw), (sv, sh) = self.kernel_hw, self.stride
        pad = list(self.pad) if isinstance(self.pad, tuple) else self.pad
        return {"input_channels": self.input_channels, "feature_maps": self.feature_maps, "kernel_height": kh,
                "kernel_width": kw, "v_stride": sv, "h_stride": sh, "pad": pad,
                "act_func": function_name(self.act_func), "optimized": self.optimized}

    def describe(self):
        kh, kw = self.kernel_hw
        return f"{self.feature_maps}@{kh}x{kw} s{self.stride} pad={self.pad!r} {self.act_func.__name__}"
