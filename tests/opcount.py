"""Count array operations on ``array_api_strict``: the cost model of a GPU step.

On CuPy every namespace function and every array operator launches at least one
kernel (about 15 us each with Python), so the number of operations per training
step bounds its speed at small batches. ``count_operations()`` counts, while it
is active, every call of a public ``array_api_strict`` function and every
arithmetic, comparison, indexing or transposing operator of its arrays; calls
made inside another counted call (the library calling itself) are not counted
again.

    with count_operations() as counter:
        cnn.fit(X, t, epochs=1, batch_size=len(X), verbose=False)
    counter.count, counter.by_name.most_common(10)
"""

import collections
import contextlib
import functools
import inspect

OPERATORS = (
    "__abs__", "__add__", "__and__", "__eq__", "__floordiv__", "__ge__", "__getitem__", "__gt__",
    "__invert__", "__le__", "__lshift__", "__lt__", "__matmul__", "__mod__", "__mul__", "__ne__", "__neg__",
    "__or__", "__pos__", "__pow__", "__rshift__", "__setitem__", "__sub__", "__truediv__", "__xor__",
    "__radd__", "__rand__", "__rfloordiv__", "__rlshift__", "__rmatmul__", "__rmod__", "__rmul__", "__ror__",
    "__rpow__", "__rrshift__", "__rsub__", "__rtruediv__", "__rxor__", "__iadd__", "__iand__",
    "__ifloordiv__", "__ilshift__", "__imatmul__", "__imod__", "__imul__", "__ior__", "__ipow__",
    "__irshift__", "__isub__", "__itruediv__", "__ixor__", "to_device",
)
PROPERTIES = ("mT", "T")
# Host-side queries that launch no kernel.
NOT_OPERATIONS = ("__array_namespace_info__", "can_cast", "finfo", "iinfo", "isdtype", "result_type")


class OperationCounter:
    """``count`` (total) and ``by_name`` (a Counter) of the operations seen."""

    def __init__(self):
        self.count = 0
        self.by_name = collections.Counter()
        self._depth = 0

    def wrap(self, name, func):
        @functools.wraps(func)
        def counted(*args, **kwargs):
            if self._depth == 0:
                self.count += 1
                self.by_name[name] += 1
            self._depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def reset(self):
        self.count = 0
        self.by_name.clear()


@contextlib.contextmanager
def count_operations():
    """Context manager: an :class:`OperationCounter` fed by every array_api_strict operation."""
    import array_api_strict as xp

    counter = OperationCounter()
    array = type(xp.asarray(0.0))
    saved = []
    for name in xp.__all__:
        func = getattr(xp, name)
        if inspect.isfunction(func) and name not in NOT_OPERATIONS and not name.endswith("_flags"):
            saved.append((xp, name, func))
            setattr(xp, name, counter.wrap(name, func))
    for name in OPERATORS:
        func = array.__dict__.get(name)
        if func is not None:
            saved.append((array, name, func))
            setattr(array, name, counter.wrap(name, func))
    for name in PROPERTIES:
        prop = array.__dict__.get(name)
        if isinstance(prop, property):
            saved.append((array, name, prop))
            setattr(array, name, property(counter.wrap(name, prop.fget)))
    try:
        yield counter
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
