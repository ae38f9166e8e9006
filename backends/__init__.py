"""Array backends for nncore: which library computes, on which device.

>>> from backends import get_backend
>>> be = get_backend("numpy")
>>> be.xp.asarray([1.0, 2.0]).dtype
dtype('float64')
"""

from .core import (
    NAMES,
    Backend,
    available,
    backend_of,
    dtype_name,
    get_backend,
    to_numpy,
)
from .fast_paths import fast_path, fast_paths_enabled, register_fast_paths, use_fast_paths

__all__ = [
    "NAMES",
    "Backend",
    "available",
    "backend_of",
    "dtype_name",
    "fast_path",
    "fast_paths_enabled",
    "get_backend",
    "register_fast_paths",
    "to_numpy",
    "use_fast_paths",
]
