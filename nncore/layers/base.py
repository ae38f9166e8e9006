"""The contract every layer keeps.

A layer is built once for a per-sample input shape, then maps activations
forward and gradients backward::

    out_shape = layer.build(in_shape, backend, dtype, rng)   # (c, h, w) or (features,), no batch axis
    a = layer.forward(a_prev, training=True)                  # (n, *in_shape) -> (n, *out_shape)
    delta_prev = layer.backward(delta)                        # dL/da -> dL/da_prev; fills layer.grads
    layer.step()                                              # its own scheduler update (a layer alone)

``get_config()`` returns the constructor arguments (functions by name) and
``from_config(config)`` rebuilds the layer from them; with the registry
(:func:`~nncore.layers.register_layer`) that is all saving and loading need.
Parametric layers list their parameter names in ``params`` (weights first) and
the L2-penalised ones in ``penalised``; they implement ``param_shapes`` and
``init_params``. Inside a :class:`~nncore.CNN` the network updates the
parameters (all of them in one flat buffer); ``step`` serves a layer used on
its own, as in the course notes.
"""

import math

import numpy as np

from backends import backend_of, get_backend

from ..schedulers import Adam, Scheduler
from ..validation import registered_name


class Layer:
    """Base class of all layers.

    Subclasses implement :meth:`output_shape`, :meth:`forward`, :meth:`backward`
    and :meth:`get_config`; parametric ones also :meth:`param_shapes` and
    :meth:`init_params`.
    """

    layer_name = None  # set by register_layer
    params = ()  # parameter attribute names, weights first
    penalised = ()  # the params that the L2 penalty applies to (weights, not biases)

    def __init__(self, seed=None, scheduler=None):
        if scheduler is not None and not isinstance(scheduler, Scheduler):
            raise TypeError(f"{type(self).__name__}: scheduler must be a Scheduler, got {type(scheduler).__name__}")
        self.seed = seed
        self.scheduler = scheduler
        self.position = None  # index in a CNN, for error messages
        self.input_shape = None
        self.backend = None
        self.dtype = None
        self.grads = {}  # dL/dparam after backward, by name
        self.schedulers = {}  # one scheduler per parameter, for step()
        self._cache = None  # what forward(training=True) keeps for backward

    # ---- the contract -------------------------------------------------------------------

    def output_shape(self, input_shape):
        """Per-sample output shape for per-sample ``input_shape``; raises a clear error if it does not fit."""
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        """``{name: shape}`` of the parameters for per-sample ``input_shape`` (nothing is allocated)."""
        return {}

    def init_params(self, input_shape, rng):
        """Initial parameter values as host NumPy arrays, by name, drawn from ``rng``."""
        return {}

    def forward(self, a, training=False):
        """Activations ``(n, *input_shape) -> (n, *output_shape)``; ``training`` keeps what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, delta, need_input_grad=True):
        """``dL/da`` ``(n, *output_shape)`` -> ``dL/da_prev`` ``(n, *input_shape)`` (None when not needed).

        Fills :attr:`grads` with the gradient of every parameter.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def describe(self):
        """A short text for :meth:`CNN.summary` (kernel size, activation, ...)."""
        return ""

    def get_config(self):
        """The constructor arguments as JSON-able values (activations by name), for :meth:`from_config`."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A new, unbuilt layer from :meth:`get_config`'s dict."""
        return cls(**config)

    # ---- building and parameters ----------------------------------------------------------

    @property
    def label(self):
        where = f"layer {self.position} " if self.position is not None else ""
        return f"{where}({type(self).__name__})"

    @property
    def xp(self):
        """The array namespace of the layer's backend."""
        return self.backend.xp

    @property
    def built(self):
        return self.input_shape is not None

    def build(self, input_shape, backend=None, dtype="float32", rng=None, *, init=True):
        """Check ``input_shape`` (without the batch axis), create the parameters, return the output shape.

        ``rng`` is a host ``numpy.random.Generator`` (default: one seeded with
        ``seed``). ``init=False`` creates no parameters: the caller sets them
        (loading a model file).
        """
        input_shape = tuple(int(s) for s in input_shape)
        out = self.output_shape(input_shape)
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.input_shape = input_shape
        self.grads, self._cache = {}, None
        if self.params and init:
            rng = np.random.default_rng(self.seed) if rng is None else rng
            for name, value in self.init_params(input_shape, rng).items():
                setattr(self, name, self.backend.asarray(value, dtype=self.dtype))
            self.reset_schedulers()
        return out

    def n_params(self, input_shape=None):
        """Number of trainable scalars (of the built layer, or for ``input_shape``)."""
        if input_shape is None:
            if not self.built:
                return 0
            input_shape = self.input_shape
        return sum(math.prod(shape) for shape in self.param_shapes(tuple(input_shape)).values())

    def reset_schedulers(self, scheduler=None):
        """Forget the scheduler state (moments, step count) of the layer's parameters.

        A layer on its own gets a fresh copy of ``scheduler`` (default: its own,
        else Adam) per parameter. Inside a CNN the parameters that share a
        scheduler step together, so every layer sharing this layer's scheduler
        starts over.
        """
        if hasattr(self.schedulers, "reset"):  # the CNN's view of its flat scheduler state
            if scheduler is not None:
                raise TypeError(f"{self.label} belongs to a CNN: reset_schedulers() resets its scheduler group "
                                "and takes no other scheduler (give layers their schedulers before fit)")
            self.schedulers.reset()
            return
        scheduler = scheduler or self.scheduler or Adam(eta=1e-4, rho=0.9, rho2=0.999)
        self.schedulers = {name: scheduler.fresh() for name in self.params}

    def add_penalty(self, lam):
        """Add the L2 term ``lam * W`` to the gradients of the penalised parameters."""
        if lam:
            for name in self.penalised:
                self.grads[name] = self.grads[name] + lam * getattr(self, name)

    def step(self):
        """Subtract each parameter's scheduler change (the layer used on its own); gradients must be fresh.

        Parameters are replaced, never updated in place, so a reference to an
        old array stays a snapshot.
        """
        if hasattr(self.schedulers, "reset"):
            raise RuntimeError(f"{self.label} belongs to a CNN, whose fit updates its parameters; step() and "
                               "_backpropagate() are for a layer used on its own")
        if not self.schedulers:
            self.reset_schedulers()
        for name in self.params:
            change = self.schedulers[name].update_change(self.grads[name])
            setattr(self, name, getattr(self, name) - change)

    def to(self, backend):
        """Move parameters and scheduler state to another backend (in place); returns ``self``."""
        backend = get_backend(backend)
        if self.built:
            dtype = backend.dtype(self.dtype)
            in_network = hasattr(self.schedulers, "reset")  # the CNN has moved its flat buffer already
            for name in () if in_network else self.params:
                setattr(self, name, backend.asarray(getattr(self, name), dtype=dtype))
            for scheduler in () if in_network else self.schedulers.values():
                scheduler.load_state_dict({key: value if isinstance(value, int) or value is None
                                           else backend.asarray(value)
                                           for key, value in scheduler.state_dict().items()})
            self.dtype = dtype
            self.grads, self._cache = {}, None  # arrays of the old backend
        self.backend = backend
        return self

    # ---- the course's names, for a layer used on its own ------------------------------------

    def _feedforward(self, X):
        """Forward pass of a layer used on its own (course API): builds itself for ``X`` on first use.

        ``X`` keeps its library (NumPy in, NumPy out); integer images are
        computed in float64 as the course's NumPy code does.
        """
        if not self.built:
            source = backend_of(X)
            dtype = X.dtype if source.xp.isdtype(X.dtype, "real floating") else "float64"
            self.build(tuple(X.shape[1:]), source, dtype)
        X = self.backend.asarray(X, dtype=self.dtype)
        if tuple(X.shape[1:]) != self.input_shape:
            self.output_shape(tuple(X.shape[1:]))  # the layer's own error for a bad shape
            raise ValueError(f"{self.label} was built for samples of shape {self.input_shape}, "
                             f"got {tuple(X.shape[1:])}")
        return self.forward(X, training=True)

    def _backpropagate(self, delta, lam=0.0):
        """Backward pass and update of a layer used on its own (course API); returns ``dL/da_prev``."""
        delta_prev = self.backward(self.backend.asarray(delta, dtype=self.dtype))
        self.add_penalty(lam)
        self.step()
        return delta_prev

    def _reset_weights(self, previous_nodes=None):
        """Draw fresh initial weights from the layer's seed (course API)."""
        if self.built:
            self.build(self.input_shape, self.backend, self.dtype)

    _reset_weights_independently = _reset_weights


def glorot_or_he(act_func, fan_in, fan_out, shape, rng):
    """He-normal weights for the ReLU family, Glorot-uniform otherwise."""
    from ..activations import LRELU, RELU

    if act_func in (RELU, LRELU):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def check_int(layer_name, **values):
    """Raise a clear error unless every value is a positive int."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{layer_name}: {key} must be a positive int, got {value!r}")
        if value < 1:
            raise ValueError(f"{layer_name}: {key} must be at least 1, got {value}")


def function_name(func):
    """The registered name of an activation (for get_config); ValueError for an unregistered one."""
    from ..activations import ACTIVATIONS

    return registered_name(ACTIVATIONS, func, "activation", "nncore.activations.ACTIVATIONS")
