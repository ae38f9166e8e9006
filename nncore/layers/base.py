"""The layer protocol shared by every layer.

A layer is built once for a per-sample input shape, then maps activations
forward and gradients backward::

    out_shape = layer.build(in_shape, backend, dtype, rng)
    a = layer.forward(a_prev, training=True)
    delta_prev = layer.backward(delta, lam)   # fills layer.grads
    layer.step()                              # scheduler update of the parameters

``delta`` is ``dL/da`` for the layer's output ``a``; ``backward`` returns
``dL/da_prev``. Parametric layers list their parameter attribute names in
``params`` (weights first, then biases) and the first one is L2-penalised.
"""

import math

import numpy as np

from backends import get_backend

from ..schedulers import Scheduler


class Layer:
    """Base class. Subclasses implement ``output_shape``, ``forward`` and ``backward``."""

    params = ()
    penalised = ()  # the params that the L2 penalty applies to (weights, not biases)

    def __init__(self, seed=None, scheduler=None):
        if scheduler is not None and not isinstance(scheduler, Scheduler):
            raise TypeError(f"{type(self).__name__}: scheduler must be a Scheduler, got {type(scheduler).__name__}")
        self.seed = seed
        self.scheduler = scheduler
        self.position = None  # index in a CNN, for error messages
        self.input_shape = None
        self.backend = None
        self.grads = {}
        self.schedulers = {}

    @property
    def label(self):
        where = f"layer {self.position} " if self.position is not None else ""
        return f"{where}({type(self).__name__})"

    @property
    def xp(self):
        """The array namespace of the layer's backend (a property: modules do not pickle)."""
        return self.backend.xp

    @property
    def built(self):
        return self.input_shape is not None

    def output_shape(self, input_shape):
        """Per-sample output shape for a per-sample ``input_shape``; validates it."""
        return input_shape

    def build(self, input_shape, backend=None, dtype="float32", rng=None):
        """Check ``input_shape`` (without the batch axis), create parameters, return the output shape.

        ``rng`` is a host ``numpy.random.Generator``; by default one seeded with ``seed``.
        """
        input_shape = tuple(int(s) for s in input_shape)
        out = self.output_shape(input_shape)
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.input_shape = input_shape
        if self.params:
            rng = np.random.default_rng(self.seed) if rng is None else rng
            for name, value in self.init_params(input_shape, rng).items():
                setattr(self, name, self.backend.asarray(value, dtype=self.dtype))
            self.reset_schedulers()
        return out

    def init_params(self, input_shape, rng):
        """Initial parameter values as host NumPy arrays, by name."""
        return {}

    def reset_schedulers(self):
        """Give every parameter a fresh copy of the scheduler (no moments, step 0)."""
        if self.params and self.scheduler is None:
            raise ValueError(f"{self.label} has parameters but no scheduler; pass scheduler=...")
        self.schedulers = {name: self.scheduler.fresh() for name in self.params}

    def forward(self, a, training=False):
        raise NotImplementedError

    def backward(self, delta, lam=0.0):
        raise NotImplementedError

    def add_penalty(self, lam):
        """Add the L2 term ``lam * W`` to the gradients of the penalised parameters."""
        if lam:
            for name in self.penalised:
                self.grads[name] = self.grads[name] + lam * getattr(self, name)

    def step(self):
        """Subtract each parameter's scheduler change; the gradients must be fresh.

        Parameters are replaced, never updated in place, so a reference to the
        old array is a snapshot (``CNN.fit`` relies on this to undo a partial
        step after Ctrl-C and to restore the last finite weights).
        """
        for name in self.params:
            change = self.schedulers[name].update_change(self.grads[name])
            setattr(self, name, getattr(self, name) - change)

    def param_shapes(self, input_shape=None):
        """``{name: shape}`` of the parameters for per-sample ``input_shape``.

        Without ``input_shape`` the built layer's own parameters are measured.
        """
        if not self.params:
            return {}
        if input_shape is None or (self.built and tuple(input_shape) == self.input_shape):
            if not self.built:
                raise ValueError(f"{self.label} is not built; give an input shape")
            return {name: tuple(getattr(self, name).shape) for name in self.params}
        values = self.init_params(tuple(input_shape), np.random.default_rng(0))
        return {name: np.shape(values[name]) for name in self.params}

    def n_params(self, input_shape=None):
        """Number of trainable scalars (of the built layer, or for ``input_shape``)."""
        if input_shape is None and not self.built:
            return 0
        return sum(math.prod(shape) for shape in self.param_shapes(input_shape).values())

    def to(self, backend):
        """Move parameters and scheduler state to another backend (in place)."""
        backend = get_backend(backend)
        if self.built:
            dtype = backend.dtype(self.dtype)
            for name in self.params:
                setattr(self, name, backend.asarray(getattr(self, name), dtype=dtype))
            for scheduler in self.schedulers.values():
                for key in scheduler._state:
                    value = getattr(scheduler, key, None)
                    if value is not None and not isinstance(value, (int, float)):
                        setattr(scheduler, key, backend.asarray(value))
            self.dtype = dtype
            self.grads = {}
            self._cache = None  # activations of the old backend
        self.backend = backend
        return self


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
