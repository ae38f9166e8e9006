"""Learning-rate schedulers (optimisers) with the update rules of ``torch.optim``.

A scheduler turns a gradient into the *change* that is subtracted from a
parameter: ``param -= scheduler.update_change(grad)``. It keeps state (moments,
step count) for ONE array; :meth:`Scheduler.fresh` gives a copy without state
and ``reset()`` forgets it. The rules are elementwise, so a :class:`~nncore.CNN`
runs one scheduler over a flat buffer holding all parameters that share its
settings (as ``torch.optim``'s multi-tensor ``foreach`` updates do): every
parameter still has its own moments, as slices of the flat ones. Scalar factors
(learning rate, bias corrections) are computed on the host, so an update is a
handful of array operations. State is replaced, never updated in place, so a
reference to old state is a snapshot.
"""

import copy
import math
from numbers import Integral, Real

from ._array import namespace


MAX_STEPS = 2**53  # a step count beyond this cannot be represented exactly in a float exponent


def _hyper(name, value, low=0.0, high=math.inf, high_open=False):
    """A hyper-parameter as a finite Python float in ``[low, high]`` (or ``[low, high)``).

    NumPy scalars (``np.logspace(...)[i]`` in a grid search) are strongly typed: a
    ``np.float64`` times a float32 array is float64, which would silently turn
    float32 training into float64. Python floats take the array's dtype.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value and (value < high if high_open else value <= high)):
        bound = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {bound}, got {value!r}")
    return value


class Scheduler:
    """Abstract base: subclasses implement :meth:`update_change`."""

    _state = ()  # names of the attributes that hold per-parameter state

    def __init__(self, eta):
        self.eta = _hyper("eta", eta)

    def update_change(self, gradient):
        raise NotImplementedError(f"{type(self).__name__} must implement update_change")

    def reset(self):
        """Forget all accumulated state (moments, sums, step count)."""
        for name in self._state:
            setattr(self, name, 0 if name == "t" else None)

    def fresh(self):
        """A copy with the same settings and no state."""
        new = copy.copy(self)
        new.reset()
        return new

    def get_config(self):
        """The constructor arguments, e.g. ``{"eta": 1e-3, "rho": 0.9, ...}``."""
        return {k: v for k, v in vars(self).items() if k not in self._state}

    def state_dict(self):
        """The state by name: arrays (or None before the first step) and the step count ``t``."""
        return {name: getattr(self, name) for name in self._state}

    def load_state_dict(self, state):
        """Set the state from :meth:`state_dict`'s dict (the same keys); checks the step count."""
        if set(state) != set(self._state):
            raise ValueError(f"{type(self).__name__}: state must have the keys {sorted(self._state)}, "
                             f"got {sorted(state)}")
        for name, value in state.items():
            if name == "t":
                if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= MAX_STEPS:
                    raise ValueError(f"{type(self).__name__}: the step count t must be an int in "
                                     f"[0, {MAX_STEPS}], got {value!r}")
                value = int(value)
            setattr(self, name, value)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Constant(Scheduler):
    """Plain gradient descent (``torch.optim.SGD``): ``change = eta * g``."""

    def update_change(self, gradient):
        return self.eta * gradient


class Momentum(Scheduler):
    """Gradient descent with momentum (``SGD(momentum=...)``).

    ``change = momentum * change + eta * g``.
    """

    _state = ("change",)

    def __init__(self, eta, momentum):
        super().__init__(eta)
        self.momentum = _hyper("momentum", momentum)
        self.reset()

    def update_change(self, gradient):
        step = self.eta * gradient
        self.change = step if self.change is None else self.momentum * self.change + step
        return self.change


class Adagrad(Scheduler):
    """Adagrad: ``G += g**2``; ``change = eta * g / (sqrt(G) + eps)``."""

    _state = ("G",)

    def __init__(self, eta, eps=1e-8):
        super().__init__(eta)
        self.eps = _hyper("eps", eps)
        self.reset()

    def _scaled(self, gradient):
        xp = namespace(gradient)
        square = gradient * gradient
        self.G = square if self.G is None else self.G + square
        return gradient / (xp.sqrt(self.G) + self.eps)

    def update_change(self, gradient):
        return self.eta * self._scaled(gradient)


class AdagradMomentum(Adagrad):
    """Adagrad with momentum: ``change = momentum * change + eta * g / (sqrt(G) + eps)``."""

    _state = ("G", "change")

    def __init__(self, eta, momentum, eps=1e-8):
        self.momentum = _hyper("momentum", momentum)
        super().__init__(eta, eps)

    def update_change(self, gradient):
        step = self.eta * self._scaled(gradient)
        self.change = step if self.change is None else self.momentum * self.change + step
        return self.change


class RMS_prop(Scheduler):
    """RMSprop (``torch.optim.RMSprop(alpha=rho)``).

    ``v = rho * v + (1 - rho) * g**2``; ``change = eta * g / (sqrt(v) + eps)``.
    """

    _state = ("second",)

    def __init__(self, eta, rho, eps=1e-8):
        super().__init__(eta)
        self.rho = _hyper("rho", rho, high=1.0)
        self.eps = _hyper("eps", eps)
        self.reset()

    def update_change(self, gradient):
        xp = namespace(gradient)
        square = (1 - self.rho) * (gradient * gradient)
        self.second = square if self.second is None else self.rho * self.second + square
        return self.eta * gradient / (xp.sqrt(self.second) + self.eps)


class Adam(Scheduler):
    """Adam with bias correction by the number of steps taken (``torch.optim.Adam``).

    ``m = rho m + (1 - rho) g``, ``v = rho2 v + (1 - rho2) g**2``, and
    ``change = eta * m_hat / (sqrt(v_hat) + eps)`` with
    ``m_hat = m / (1 - rho**t)``, ``v_hat = v / (1 - rho2**t)``.
    """

    _state = ("moment", "second", "t")

    def __init__(self, eta, rho=0.9, rho2=0.999, eps=1e-8):
        super().__init__(eta)
        self.rho = _hyper("rho", rho, high=1.0, high_open=True)
        self.rho2 = _hyper("rho2", rho2, high=1.0, high_open=True)
        self.eps = _hyper("eps", eps)
        self.reset()

    def update_change(self, gradient):
        xp = namespace(gradient)
        self.t += 1
        first = (1 - self.rho) * gradient
        square = (1 - self.rho2) * (gradient * gradient)
        self.moment = first if self.moment is None else self.rho * self.moment + first
        self.second = square if self.second is None else self.rho2 * self.second + square
        # eta / (1 - rho^t) * m / (sqrt(v) / sqrt(1 - rho2^t) + eps), as torch.optim.Adam, with both bias
        # corrections folded into two host floats (Python floats keep float32 state in float32).
        root_correction = math.sqrt(1 - self.rho2**self.t)
        step_size = self.eta * root_correction / (1 - self.rho**self.t)
        return step_size * self.moment / (xp.sqrt(self.second) + self.eps * root_correction)


SCHEDULERS = {c.__name__: c for c in (Constant, Momentum, Adagrad, AdagradMomentum, RMS_prop, Adam)}
