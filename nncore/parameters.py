"""All parameters of a network in one flat buffer, updated a few operations at a time.

Each kernel, weight matrix and bias of a :class:`~nncore.CNN` is a reshaped
slice of one flat 1-D array, and its gradient a slice of one flat gradient.
The parameters are grouped by scheduler (the CNN's own, or a layer's own), each
group a contiguous range with one scheduler whose state covers the whole range,
so one update step costs a handful of array operations however many layers
there are (what ``torch.optim``'s ``foreach`` updates do). On a GPU each array
operation is a kernel launch, which is what this saves.

Safety: a step computes the new scheduler state functionally (new arrays),
then commits the parameters with ONE in-place operation on the flat buffer
(the layers' arrays are views of it, as ``torch.optim`` updates parameters in
place). An exception before the commit (Ctrl-C included) puts the scheduler
state back, so a step is applied whole or not at all; ``CNN.fit`` keeps Ctrl-C
out of the commit itself. :meth:`FlatParameters.snapshot` copies the buffer and
the state; ``fit`` restores the last finite epoch from one after divergence.
"""

import bisect
import math
import numbers
from collections.abc import Mapping

import numpy as np


class FlatParameters:
    """The parameters of ``layers`` as views of one flat buffer on ``backend``.

    Parameters
    ----------
    layers : list of Layer
        Built layers; their current parameter values become the buffer's contents.
    backend : backends.Backend
    dtype : dtype of the backend

    Attributes
    ----------
    flat : array, shape (n_params,)
        The parameters, group by group, layer order within a group.
    entries : list of (layer, name, start, stop, shape)
    groups : list of (scheduler, start, stop)
        Each group's scheduler (a fresh copy of the layers' template) and range.
    """

    def __init__(self, layers, backend, dtype):
        self.backend, self.dtype = backend, dtype
        groups = {}  # id(scheduler) -> (scheduler, [(layer, name)]): one group per scheduler object
        for layer in layers:
            for name in layer.params:
                groups.setdefault(id(layer.scheduler), (layer.scheduler, []))[1].append((layer, name))
        self.entries, self.groups, self.templates, start = [], [], [], 0
        for template, members in groups.values():
            group_start = start
            for layer, name in members:
                shape = tuple(getattr(layer, name).shape)
                stop = start + math.prod(shape)
                self.entries.append((layer, name, start, stop, shape))
                start = stop
            self.groups.append((template.fresh(), group_start, start))
            self.templates.append(template)
        self.size = start
        self._starts = [begin for _, begin, _ in self.groups]
        self._synced = [_settings(template) for template in self.templates]  # the templates' settings last seen
        self._owners = {}  # layer -> its group's template, one identity check per layer and step
        for layer, name, begin, *_ in self.entries:
            self._owners.setdefault(layer, self.templates[self._group_index(begin)])
        self._places = {(id(layer), name): (begin, end, shape) for layer, name, begin, end, shape in self.entries}
        mask = np.zeros(self.size)
        for layer, name, begin, end, _ in self.entries:
            if name in layer.penalised:
                mask[begin:end] = 1.0
        self._penalty_mask = backend.asarray(mask, dtype=dtype)
        self._lam, self._lam_mask = 0.0, None
        self.bind(self._new_buffer([getattr(layer, name) for layer, name, *_ in self.entries]))
        for layer in layers:
            if layer.params:
                layer.schedulers = ParameterSchedulers(self, layer)

    def concat(self, arrays):
        """One flat array from ``arrays`` of any shapes, in one operation (``concat`` with ``axis=None``)."""
        xp = self.backend.xp
        if len(arrays) == 1:
            return arrays[0] if arrays[0].ndim == 1 else xp.reshape(arrays[0], (-1,))
        return xp.concat(arrays, axis=None)

    def __setstate__(self, state):
        vars(self).update(state)
        self._views = []  # the copy's layers hold copies: CNN.__setstate__ binds them to the copied buffer
        # Positions are keyed by the layers' ids, which a copy changes (CNN.__setstate__ then rebinds).
        self._places = {(id(layer), name): (begin, end, shape) for layer, name, begin, end, shape in self.entries}

    def _new_buffer(self, arrays):
        """A flat buffer of its own holding ``arrays`` (never one of them: it is updated in place)."""
        flat = self.concat(arrays)
        return self.backend.xp.asarray(flat, copy=True) if len(arrays) == 1 else flat

    def bind(self, flat):
        """Make ``flat`` the parameters: every layer's arrays become views of it."""
        xp = self.backend.xp
        views = [flat[start:stop] if len(shape) == 1 else xp.reshape(flat[start:stop], shape)
                 for _, _, start, stop, shape in self.entries]
        for (layer, name, *_), view in zip(self.entries, views):
            setattr(layer, name, view)
        # Last, so that a bind cut short (Ctrl-C) is noticed and done again by adopt_assigned.
        self.flat, self._views = flat, views

    def adopt_assigned(self):
        """Take in what the user changed since the last step: nothing is lost, nothing is ignored.

        Parameters assigned since the last bind (``layer.kernel = ...``) become
        the buffer's contents; a scheduler setting changed on a group's template
        (``cnn.scheduler.eta = ...``, as a ``torch.optim`` param group's ``lr``)
        is checked and copied to the group's scheduler. Host work only, unless a
        parameter was assigned.
        """
        for index, template in enumerate(self.templates):
            settings = _settings(template)
            if settings != self._synced[index]:
                changed = {key: _setting(template, key, value) for key, value in settings.items()
                           if self._synced[index].get(key, _MISSING) != value}
                vars(self.groups[index][0]).update(changed)
                self._synced[index] = settings
        for layer, template in self._owners.items():
            if layer.scheduler is not template:
                raise ValueError(f"{layer.label}.scheduler was replaced after the CNN was built; its parameters "
                                 "keep stepping with the scheduler they started with. Give each layer its "
                                 "scheduler before the first fit (or call cnn.reset_weights() to start over)")
        current = [getattr(layer, name) for layer, name, *_ in self.entries]
        if len(self._views) == len(current) and all(a is b for a, b in zip(current, self._views)):
            return
        values = []
        for (layer, name, _, _, shape), value in zip(self.entries, current):
            if not hasattr(value, "shape"):
                value = np.asarray(value)  # a list or a number assigned by hand
            if getattr(getattr(value, "dtype", None), "kind", "f") not in "fiub":
                raise TypeError(f"{layer.label}.{name} was assigned an array of dtype {value.dtype}; parameters "
                                "must be real numbers")
            if tuple(value.shape) != shape:
                raise ValueError(f"{layer.label}.{name} was assigned an array of shape {tuple(value.shape)}; "
                                 f"it must keep its shape {shape}")
            values.append(self.backend.asarray(value, dtype=self.dtype))
        self.bind(self._new_buffer(values))

    def gradient(self):
        """The layers' gradients (after a backward pass) as one flat array, in the buffer's order."""
        return self.concat([layer.grads[name] for layer, name, *_ in self.entries])

    def step(self, gradient, lam=0.0):
        """Add the L2 term ``lam * W`` to the flat ``gradient``, apply each group's scheduler, update in place."""
        self.adopt_assigned()
        if lam:
            if lam != self._lam:
                self._lam, self._lam_mask = lam, lam * self._penalty_mask
            gradient = gradient + self._lam_mask * self.flat
        states = [scheduler.state_dict() for scheduler, *_ in self.groups]
        try:
            if len(self.groups) == 1:
                change = self.groups[0][0].update_change(gradient)
            else:
                change = self.concat([scheduler.update_change(gradient[start:stop])
                                      for scheduler, start, stop in self.groups])
        except BaseException:
            for (scheduler, *_), state in zip(self.groups, states):
                scheduler.load_state_dict(state)  # the step did not happen
            raise
        self.flat -= change  # the commit; every layer's parameters are views of the buffer

    # ---- snapshots ---------------------------------------------------------------------

    def snapshot(self):
        """Copies of the parameters and of the scheduler states, for :meth:`restore`."""
        xp = self.backend.xp
        self.adopt_assigned()

        def keep(value):
            return xp.asarray(value, copy=True) if _is_array(value) else value

        return keep(self.flat), [{key: keep(value) for key, value in scheduler.state_dict().items()}
                                 for scheduler, *_ in self.groups]

    def restore(self, snapshot):
        """Go back to a :meth:`snapshot` (its arrays become the live ones: restore a snapshot once)."""
        flat, states = snapshot
        for (scheduler, *_), state in zip(self.groups, states):
            scheduler.load_state_dict(state)
        self.bind(flat)

    def finite(self):
        """A device boolean: every parameter is finite."""
        xp = self.backend.xp
        return xp.all(xp.isfinite(self.flat))

    def state_finite(self):
        """A device boolean: every scheduler state array (moments, sums) is finite."""
        xp = self.backend.xp
        ok = xp.asarray(True, device=self.backend.device)
        for scheduler, *_ in self.groups:
            for value in scheduler.state_dict().values():
                if _is_array(value):
                    ok = ok & xp.all(xp.isfinite(value))
        return ok

    # ---- per-parameter views of the scheduler state (saving, inspection) -------------------------

    def group_of(self, layer):
        """The scheduler that updates ``layer``'s parameters."""
        return self._group(self._where(layer, layer.params[0])[0])[0]

    def _group(self, start):
        """``(scheduler, group_start, group_stop)`` of the group holding flat index ``start``."""
        return self.groups[self._group_index(start)]

    def _group_index(self, start):
        return bisect.bisect_right(self._starts, start) - 1

    def parameter_state(self, layer, name):
        """The scheduler state of one parameter: its slices of the group's arrays, and ``t``."""
        xp = self.backend.xp
        start, stop, shape = self._where(layer, name)
        scheduler, offset, _ = self._group(start)  # the group's state covers [offset, group stop)
        return {key: xp.reshape(value[start - offset : stop - offset], shape) if _is_array(value) else value
                for key, value in scheduler.state_dict().items()}

    def load_parameter_states(self, states):
        """Set every group's state from ``{(layer, name): state dict}`` (host or device arrays).

        The parameters of one group step together, so their step counts and
        whether they have state yet must agree; ``ValueError`` otherwise.
        """
        members_of = [[] for _ in self.groups]
        for layer, name, begin, *_ in self.entries:
            members_of[self._group_index(begin)].append((layer, name))
        for (scheduler, *_), members in zip(self.groups, members_of):
            merged = {}
            for layer, name in members:
                if set(states[layer, name]) != set(scheduler.state_dict()):
                    raise ValueError(f"{layer.label}.{name} has the scheduler state {sorted(states[layer, name])}, "
                                     f"but its scheduler {scheduler!r} keeps {sorted(scheduler.state_dict())}")
            for key in scheduler.state_dict():
                values = [states[member][key] for member in members]
                arrays = [_is_array(v) for v in values]
                if any(arrays) and not all(arrays) or not any(arrays) and any(v != values[0] for v in values):
                    labels = ", ".join(f"{layer.label}.{name}" for layer, name in members)
                    raise ValueError(f"the scheduler states of {labels} disagree in {key!r}; parameters that "
                                     "share a scheduler step together")
                merged[key] = (self.concat([self.backend.asarray(v, dtype=self.dtype) for v in values])
                               if all(arrays) else values[0])
            scheduler.load_state_dict(merged)

    def _where(self, layer, name):
        try:
            return self._places[id(layer), name]
        except KeyError:
            raise KeyError(f"{layer.label}.{name}") from None

    def to(self, backend, dtype):
        """Move the buffer and the scheduler states to ``backend`` (in place)."""
        self.adopt_assigned()
        self.backend, self.dtype = backend, dtype
        self._penalty_mask = backend.asarray(self._penalty_mask, dtype=dtype)
        self._lam, self._lam_mask = 0.0, None
        for scheduler, *_ in self.groups:
            scheduler.load_state_dict({key: backend.asarray(value) if _is_array(value) else value
                                       for key, value in scheduler.state_dict().items()})
        self.bind(backend.asarray(self.flat, dtype=dtype))


class ParameterSchedulers(Mapping):
    """``layer.schedulers`` inside a CNN: ``{name: scheduler}`` showing each parameter's own state.

    Snapshots built on access from the network's flat state (settings such as
    ``eta``, the step count ``t`` and copies of the moments, shaped like the
    parameter). Changing one changes nothing: the CNN's state lives in
    :class:`FlatParameters`.
    """

    def __init__(self, parameters, layer):
        self._parameters, self._layer = parameters, layer
        self._views = {}

    def __getitem__(self, name):
        if name not in self._layer.params:
            raise KeyError(name)
        scheduler = self._parameters.group_of(self._layer)
        source = tuple(scheduler.state_dict().values())
        cached = self._views.get(name)
        if cached is None or len(cached[0]) != len(source) or any(a is not b for a, b in zip(cached[0], source)):
            xp = self._parameters.backend.xp
            view = scheduler.fresh()
            view.load_state_dict({key: xp.asarray(value, copy=True) if _is_array(value) else value
                                  for key, value in self._parameters.parameter_state(self._layer, name).items()})
            self._views[name] = cached = (source, view)
        return cached[1]

    def reset(self):
        """Forget the state of the scheduler group this layer belongs to (see ``Layer.reset_schedulers``)."""
        self._parameters.group_of(self._layer).reset()

    def __iter__(self):
        return iter(self._layer.params)

    def __len__(self):
        return len(self._layer.params)


_MISSING = object()


def _settings(scheduler):
    """A scheduler's scalar settings (``eta``, ``rho``, ...): what a user may change between steps."""
    return {key: value for key, value in scheduler.get_config().items()
            if value is None or isinstance(value, (numbers.Real, str))}


def _setting(template, key, value):
    """A changed setting as the scheduler's constructor would take it: a finite Python float for numbers."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{type(template).__name__}.{key} was set to {value!r}; it must be finite")
    return value


def _is_array(value):
    return value is not None and not isinstance(value, (int, float))
