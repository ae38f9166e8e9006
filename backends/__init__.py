"""Array backends for nncore: which library computes, on which device.

>>> from backends import get_backend
>>> be = get_backend("numpy")
>>> be.xp.asarray([1.0, 2.0]).dtype
dtype('float64')
"""

from .core import NAMES, Backend, available, backend_of, get_backend, to_numpy

__all__ = ["NAMES", "Backend", "available", "backend_of", "get_backend", "to_numpy"]
