"""Fast paths: library-specific replacements for the generic ops, one table per array type.

The ops in :mod:`nncore.ops` are written once against the array API. A library
may register faster versions of some of them for its own array type::

    register_fast_paths(numpy.ndarray, {"conv2d_act_forward": fn, ...})

and :func:`fast_path` hands them out for arrays of exactly that type. NumPy's
table (``backends.numpy_fast``) is registered here as a loader, imported on the
first lookup; a CuPy table would be registered the same way (e.g. when the CuPy
backend is created), so nothing imports CuPy where it is absent. A fast
function takes the generic op's arguments and gives its numbers; it may return
``NotImplemented`` for inputs it does not handle (then the generic op runs).

``NNCORE_FAST_PATHS=0`` or :func:`use_fast_paths` ``(False)`` turns every table off.
"""

from __future__ import annotations

import os

import numpy as np

_tables = {}  # array type -> {op name: function}, or a function that loads that table
_enabled = os.environ.get("NNCORE_FAST_PATHS", "1").strip().lower() not in ("0", "false", "no", "off")


def register_fast_paths(array_type, table):
    """Register ``table`` (``{op name: function}``, or a function returning it) for ``array_type``.

    A dict adds to the type's table (its entries win); a function replaces the
    table and is called once, at the first lookup for an array of that type, so
    registering costs no import.
    """
    if not isinstance(array_type, type):
        raise TypeError(f"array_type must be a type, got {array_type!r}")
    if not (callable(table) or isinstance(table, dict)):
        raise TypeError(f"table must be a dict of functions or a function returning one, got {type(table).__name__}")
    current = _tables.get(array_type)
    if current is None or callable(table):
        _tables[array_type] = table if callable(table) else dict(table)
    else:
        _loaded(array_type).update(table)


def _loaded(array_type):
    table = _tables.get(array_type)
    if callable(table):
        table = _tables[array_type] = dict(table())
    return table


def fast_path(name, *arrays):
    """The fast version of op ``name`` for ``arrays``, or ``None`` (run the generic op).

    Returns a function only when fast paths are enabled and every array is of
    exactly one registered type (not a subclass: ``numpy.ma`` arrays, for
    example, take the generic op).
    """
    if not _enabled or not arrays:
        return None
    kind = type(arrays[0])
    if kind not in _tables or any(type(a) is not kind for a in arrays[1:]):
        return None
    return _loaded(kind).get(name)


class use_fast_paths:
    """Switch fast paths on or off (``with use_fast_paths(False): ...``, or call it)."""

    def __init__(self, enabled=True):
        global _enabled
        self.previous, _enabled = _enabled, bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _enabled
        _enabled = self.previous


def fast_paths_enabled() -> bool:
    """Whether :func:`fast_path` may return replacements."""
    return _enabled


def _numpy_table():
    from .numpy_fast import FAST_PATHS

    return FAST_PATHS


register_fast_paths(np.ndarray, _numpy_table)
