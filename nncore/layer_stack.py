"""The course's ``add_*`` methods and the rules of layer order, shared by :class:`~nncore.CNN`.

``add_Convolution2DLayer`` and friends build nncore's layers with the course's
arguments; ``add(name, **config)`` builds any registered layer by name and
``add_layer(layer)`` appends a layer object. The order rules (images before
the FlattenLayer, dense layers after it, the OutputLayer last) give errors that
name the layer and say what to do.
"""

from . import activations
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, Layer, OutputLayer, Pooling2DLayer
from .layers import layer_class


class LayerStack:
    """Mixin for a network holding ``self.layers``, ``self.scheduler``, ``self.cost_func`` and ``self.seed``."""

    def add_Convolution2DLayer(self, input_channels=1, feature_maps=1, kernel_height=3, kernel_width=3,
                               v_stride=1, h_stride=1, pad="same", act_func=activations.LRELU, optimized=True):
        """Append a :class:`~nncore.layers.Convolution2DLayer`."""
        previous = self._last_image_layer("add_Convolution2DLayer")
        layer = self._new_layer(Convolution2DLayer, input_channels, feature_maps, kernel_height, kernel_width,
                                v_stride, h_stride, pad, act_func, self.seed, optimized, self.scheduler)
        if isinstance(previous, Convolution2DLayer) and previous.feature_maps != input_channels:
            raise ValueError(
                f"add_Convolution2DLayer: layer {len(self.layers)} (Convolution2DLayer) has "
                f"input_channels={input_channels} but the previous convolution, layer {previous.position}, "
                f"outputs {previous.feature_maps} feature maps"
            )
        self.add_layer(layer)

    def add_PoolingLayer(self, kernel_height=2, kernel_width=2, v_stride=1, h_stride=1, pooling="max"):
        """Append a :class:`~nncore.layers.Pooling2DLayer`."""
        self._last_image_layer("add_PoolingLayer")
        self.add_layer(self._new_layer(Pooling2DLayer, kernel_height, kernel_width, v_stride, h_stride, pooling,
                                       self.seed))

    def add_FlattenLayer(self, act_func=None):
        """Append a :class:`~nncore.layers.FlattenLayer` (between image and dense layers)."""
        self.add_layer(FlattenLayer(seed=self.seed))

    def add_FullyConnectedLayer(self, nodes, act_func=activations.LRELU, scheduler=None):
        """Append a :class:`~nncore.layers.FullyConnectedLayer`; ``scheduler`` defaults to the CNN's."""
        self._check_dense_input("add_FullyConnectedLayer")
        self.add_layer(self._new_layer(FullyConnectedLayer, nodes, act_func, scheduler or self.scheduler,
                                       self.seed))

    def add_OutputLayer(self, nodes, output_func=activations.sigmoid, scheduler=None):
        """Append the :class:`~nncore.layers.OutputLayer`; it must come last."""
        self._check_dense_input("add_OutputLayer")
        self.add_layer(self._new_layer(OutputLayer, nodes, output_func, self.cost_func, scheduler or self.scheduler,
                                       self.seed))

    def add(self, name, **config):
        """Append a registered layer by name: ``cnn.add("conv", input_channels=1, feature_maps=8)``.

        The name is looked up in :data:`nncore.layers.LAYERS` (see
        :func:`~nncore.layers.register_layer`); ``config`` goes to the layer's
        ``from_config``. The CNN's seed, scheduler and cost are passed on where
        the layer takes them.
        """
        cls = layer_class(name)
        method = f"add({name!r})"
        try:
            layer = cls.from_config(config)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{method}: layer {len(self.layers)} ({cls.__name__}): {exc}") from None
        self.add_layer(layer)
        return layer

    def add_layer(self, layer):
        """Append any :class:`~nncore.layers.Layer` (an nncore layer or your own registered one).

        A layer with parameters and no scheduler of its own gets the CNN's; an
        OutputLayer gets the CNN's cost function.
        """
        if not isinstance(layer, Layer):
            raise TypeError(f"add_layer: expected a Layer such as Convolution2DLayer(...), got {type(layer).__name__}")
        self._check_not_finished(f"add_{type(layer).__name__}" if type(layer).__name__ in COURSE_NAMES
                                 else "add_layer")
        if layer.params and layer.scheduler is None:
            layer.scheduler = self.scheduler
        if isinstance(layer, OutputLayer):
            layer.cost_func = self.cost_func
            self.pred_format = layer.pred_format
        if layer.seed is None:
            layer.seed = self.seed
        layer.position = len(self.layers)
        self.layers.append(layer)
        self.input_shape, self.parameters = None, None  # the architecture changed: build again before use
        return layer

    def _new_layer(self, cls, *args):
        """``cls(*args)``, with any argument error re-raised naming the layer it would have been."""
        try:
            return cls(*args)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            prefix = f"{cls.__name__}: "
            if message.startswith(prefix):
                message = message[len(prefix):]
            raise type(exc)(f"add_{COURSE_NAMES[cls.__name__]}: layer {len(self.layers)} ({cls.__name__}): "
                            f"{message}") from None

    def _check_not_finished(self, method):
        if self.layers and isinstance(self.layers[-1], OutputLayer):
            raise ValueError(f"{method}: the CNN already ends with an OutputLayer (layer {len(self.layers) - 1}); "
                             "add every other layer before it")

    def _last_image_layer(self, method):
        self._check_not_finished(method)
        flat = [layer for layer in self.layers if isinstance(layer, (FlattenLayer, FullyConnectedLayer))]
        if flat:
            raise ValueError(f"{method}: layer {flat[0].position} ({type(flat[0]).__name__}) already made the data "
                             "flat (n, features); convolution and pooling layers must come before the FlattenLayer")
        images = [layer for layer in self.layers if isinstance(layer, Convolution2DLayer)]
        return images[-1] if images else None

    def _check_dense_input(self, method):
        self._check_not_finished(method)
        if self.layers and isinstance(self.layers[-1], (Convolution2DLayer, Pooling2DLayer)):
            last = self.layers[-1]
            raise ValueError(f"{method}: layer {last.position} ({type(last).__name__}) outputs images "
                             "(n, c, h, w); call add_FlattenLayer() before adding dense layers")

    def _check_complete(self, method):
        if not self.layers:
            raise ValueError(f"{method}: the CNN has no layers; add layers and end with add_OutputLayer(nodes, "
                             "output_func)")
        if not isinstance(self.layers[-1], OutputLayer):
            last = self.layers[-1]
            raise ValueError(f"{method}: the CNN has no OutputLayer: its {len(self.layers)} layer(s) end with "
                             f"{last.label}; end it with add_OutputLayer(nodes, output_func)")


COURSE_NAMES = {"Convolution2DLayer": "Convolution2DLayer", "Pooling2DLayer": "PoolingLayer",
                 "FlattenLayer": "FlattenLayer", "FullyConnectedLayer": "FullyConnectedLayer",
                 "OutputLayer": "OutputLayer"}
