"""How nncore gets an array namespace: one rule.

Code that is handed arrays takes the namespace from them, ``namespace(x)``
(ops, activations, costs, schedulers). Code that creates arrays on a device
(zeros, index arrays, transfers) needs the device too, so it asks its
:class:`backends.Backend` (``backend.xp``, ``backend.asarray``); a layer's
``self.xp`` is its backend's namespace, the same object as ``namespace(a)`` for
the arrays it is given.
"""

from array_api_compat import array_namespace


def namespace(*arrays):
    """The array-API namespace of ``arrays`` (array-api-compat's wrapper for NumPy/CuPy)."""
    return array_namespace(*arrays)
