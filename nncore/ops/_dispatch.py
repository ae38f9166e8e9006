"""How an op picks a backend-specific fast path.

Each public op is written once, against the array API (the *generic* version).
:func:`overridable` wraps it so that, for arrays of a library that ``backends``
has a faster implementation for (today: real NumPy arrays), the call goes to
``backends.fast_path(name, *arrays)`` instead. The generic version stays
reachable as ``op.generic`` (tests compare the two), and
``backends.use_fast_paths(False)`` turns every override off.
"""

import functools

from backends import fast_path


def overridable(name, n_arrays=1):
    """Decorator: let ``backends`` replace the op for the first ``n_arrays`` positional arrays."""

    def wrap(generic):
        @functools.wraps(generic)
        def op(*args, **kwargs):
            fast = fast_path(name, *args[:n_arrays])
            return (fast or generic)(*args, **kwargs)

        op.generic = generic
        op.fast_path_name = name
        return op

    return wrap
