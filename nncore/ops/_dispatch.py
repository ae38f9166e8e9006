"""How an op picks a backend-specific fast path: one mechanism for every op, forward and backward.

Each public op is written once, against the array API (the *generic* version).
:func:`overridable` wraps it so that the call goes to
``backends.fast_path(name, *arrays)`` when the array library of its arrays has
registered a faster version (``backends.register_fast_paths``; today NumPy's).
A fast version may decline with ``NotImplemented`` (e.g. a backward pass handed
a cache that the generic forward made); the generic version then runs. It stays
reachable as ``op.generic`` (tests compare the two), and
``backends.use_fast_paths(False)`` turns every override off.
"""

import functools

from backends import fast_path


def overridable(name, arrays=1):
    """Decorator: let ``backends`` replace the op, chosen by the type of its arrays.

    ``arrays`` is how many leading positional arguments are the arrays that
    decide, or the tuple of their positions.
    """
    positions = tuple(range(arrays)) if isinstance(arrays, int) else tuple(arrays)

    def wrap(generic):
        @functools.wraps(generic)
        def op(*args, **kwargs):
            fast = fast_path(name, *(args[i] for i in positions if i < len(args)))
            if fast is not None:
                result = fast(*args, **kwargs)
                if result is not NotImplemented:
                    return result
            return generic(*args, **kwargs)

        op.generic = generic
        op.fast_path_name = name
        return op

    return wrap
