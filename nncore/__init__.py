"""nncore: a small, readable CNN framework on the array API (NumPy and CuPy).

Everything of the course API is importable from here::

    from nncore import CNN, Adam, CostCrossEntropy, LRELU, softmax
"""

from . import activations, costs, datasets, filters, layers, ops, schedulers
from .activations import LRELU, RELU, derivate, identity, sigmoid, softmax, tanh
from .costs import CostCrossEntropy, CostLogReg, CostOLS
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer
from .network import CNN, TrainingDivergedError
from .schedulers import Adagrad, AdagradMomentum, Adam, Constant, Momentum, RMS_prop, Scheduler

__version__ = "0.1.0"

__all__ = [
    "CNN",
    "LRELU",
    "RELU",
    "Adagrad",
    "AdagradMomentum",
    "Adam",
    "Constant",
    "Convolution2DLayer",
    "CostCrossEntropy",
    "CostLogReg",
    "CostOLS",
    "FlattenLayer",
    "FullyConnectedLayer",
    "Momentum",
    "OutputLayer",
    "Pooling2DLayer",
    "RMS_prop",
    "Scheduler",
    "TrainingDivergedError",
    "activations",
    "costs",
    "datasets",
    "derivate",
    "filters",
    "identity",
    "layers",
    "ops",
    "schedulers",
    "sigmoid",
    "softmax",
    "tanh",
]
