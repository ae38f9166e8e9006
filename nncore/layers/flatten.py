"""FlattenLayer: images to feature vectors and back."""

import math

from .base import Layer
from .registry import register_layer


@register_layer("flatten")
class FlattenLayer(Layer):
    """Reshape ``(n, c, h, w)`` to ``(n, c*h*w)`` in C order; backward reshapes back.

    Shape
    -----
    Input ``(n, *s)``; output ``(n, prod(s))``.
    """

    def __init__(self, act_func=None, seed=None):
        # act_func is accepted (and ignored) for compatibility with the course code.
        super().__init__(seed)

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, a, training=False):
        return self.xp.reshape(a, (a.shape[0], -1))

    def backward(self, delta, need_input_grad=True):
        return self.xp.reshape(delta, (delta.shape[0], *self.input_shape))

    def describe(self):
        return ""
