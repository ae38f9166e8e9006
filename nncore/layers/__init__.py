"""Stateful layers; each calls the pure functions of :mod:`nncore.ops`."""

from .base import Layer
from .conv import Convolution2DLayer
from .dense import FullyConnectedLayer, OutputLayer
from .flatten import FlattenLayer
from .pooling import Pooling2DLayer

__all__ = ["Convolution2DLayer", "FlattenLayer", "FullyConnectedLayer", "Layer", "OutputLayer", "Pooling2DLayer"]
