"""Fully connected layers: hidden (FullyConnectedLayer) and output (OutputLayer)."""

from .. import activations, costs
import numpy as np

from .base import Layer, check_int, function_name, glorot_or_he
from .registry import register_layer


@register_layer("dense", aliases=("fc", "fully_connected"))
class FullyConnectedLayer(Layer):
    """Affine map plus activation, ``a = act(a_prev @ weights + bias)`` (as ``torch.nn.Linear``).

    Parameters
    ----------
    nodes : int
        Number of outputs.
    act_func : callable or str
        Activation.
    scheduler : Scheduler, optional
        Update rule; the CNN passes its own when this is ``None``.
    seed : int, optional
        Seeds the initial weights when the layer is used on its own.

    Shape
    -----
    Input ``(n, features)``; output ``(n, nodes)``. Parameters
    ``weights (features, nodes)`` and ``bias (nodes,)``.
    """

    params = ("weights", "bias")
    penalised = ("weights",)

    def __init__(self, nodes, act_func=activations.LRELU, scheduler=None, seed=None):
        super().__init__(seed, scheduler)
        check_int(type(self).__name__, nodes=nodes)
        self.nodes = nodes
        self.act_func = activations.resolve(act_func)

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"{self.label} needs flat (n, features) input but gets samples of shape {input_shape}; "
                "add a FlattenLayer after the convolution and pooling layers"
            )
        return (self.nodes,)

    def param_shapes(self, input_shape):
        return {"weights": (input_shape[0], self.nodes), "bias": (self.nodes,)}

    def init_params(self, input_shape, rng):
        fan_in = input_shape[0]
        weights = glorot_or_he(self.act_func, fan_in, self.nodes, (fan_in, self.nodes), rng)
        return {"weights": weights, "bias": np.zeros(self.nodes)}

    def forward(self, a, training=False):
        z = self.xp.matmul(a, self.weights) + self.bias
        if not training:
            return self.act_func(z)
        out, saved = self._activate(z)
        self._cache = (a, saved)
        return out

    def _activate(self, z):
        """``(a, saved)``: the activation and what its backward pass needs (:func:`activations.forward`)."""
        return activations.forward(self.act_func, z)

    def backward(self, delta, need_input_grad=True):
        return self._backward_z(activations.backprop_saved(self.act_func, self._cache[1], delta), need_input_grad)

    def _backward_z(self, dz, need_input_grad):
        """Gradients from ``dz = dL/dz``; returns ``dL/da_prev``."""
        xp = self.xp
        a = self._cache[0]
        self._cache = None
        # tensordot contracts the batch (or node) axis directly: no transposed copies.
        self.grads = {"weights": xp.tensordot(a, dz, axes=([0], [0])), "bias": xp.sum(dz, axis=0)}
        return xp.tensordot(dz, self.weights, axes=([1], [1])) if need_input_grad else None

    def get_config(self):
        return {"nodes": self.nodes, "act_func": function_name(self.act_func)}

    def describe(self):
        return self.act_func.__name__


@register_layer("output")
class OutputLayer(FullyConnectedLayer):
    """The last layer: an affine map, the output function, and the cost.

    ``output_func`` sets the task as in the course code: ``identity`` is
    regression, ``sigmoid`` (or ``tanh``) binary classification, anything else
    (``softmax``) multi-class classification.

    Shape
    -----
    Input ``(n, features)``; output and target ``(n, nodes)``.
    """

    def __init__(self, nodes, output_func=activations.sigmoid, cost_func=costs.CostCrossEntropy,
                 scheduler=None, seed=None):
        super().__init__(nodes, output_func, scheduler, seed)
        if not callable(cost_func):
            raise TypeError(f"{type(self).__name__}: cost_func must be a cost factory, got {cost_func!r}")
        self.cost_func = cost_func
        self.pred_format = pred_format(self.act_func)

    def get_config(self):
        return {"nodes": self.nodes, "output_func": function_name(self.act_func)}

    def _activate(self, z):
        out = self.act_func(z)
        return out, (z, out)  # the cost's closed forms need both

    def backward_target(self, target, need_input_grad=True):
        """Backpropagate the cost for ``target``; returns ``dL/da_prev``."""
        z, out = self._cache[1]
        return self._backward_z(costs.output_delta(self.cost_func, self.act_func, target, z, out), need_input_grad)


def pred_format(output_func):
    """``"Regression"``, ``"Binary"`` or ``"Multi-class"`` from the output function (course rule)."""
    if output_func is activations.identity:
        return "Regression"
    if output_func in (activations.sigmoid, activations.tanh):
        return "Binary"
    return "Multi-class"
