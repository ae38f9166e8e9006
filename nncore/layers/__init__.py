"""Stateful layers; each calls the pure functions of :mod:`nncore.ops`.

Every layer keeps the contract of :class:`Layer` and registers itself by name
(:func:`register_layer`), which is all that ``CNN.add``, saving and loading and
the estimators need to know about it.
"""

from .base import Layer
from .conv import Convolution2DLayer
from .dense import FullyConnectedLayer, OutputLayer
from .flatten import FlattenLayer
from .pooling import Pooling2DLayer
from .registry import LAYERS, layer_class, register_layer

__all__ = ["LAYERS", "Convolution2DLayer", "FlattenLayer", "FullyConnectedLayer", "Layer", "OutputLayer",
           "Pooling2DLayer", "layer_class", "register_layer"]
