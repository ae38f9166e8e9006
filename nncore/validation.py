"""Checks at the boundary: user data in, clear ValueError/TypeError out."""

from numbers import Integral

import numpy as np

from backends import backend_of


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def as_model_array(backend, x, dtype, what):
    """Move ``x`` to ``backend`` as ``dtype`` after checking that it is numeric and finite."""
    source = backend_of(x)
    if source.name == "numpy" and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what} must be a numeric array, could not convert it: {exc}") from None
    xp = source.xp
    if not xp.isdtype(x.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{what} must be a numeric array, got dtype {x.dtype}")
    out = backend.asarray(x, dtype=dtype)
    if not bool(backend.xp.all(backend.xp.isfinite(out))):
        bad = int(backend.xp.sum(backend.xp.astype(~backend.xp.isfinite(out), backend.xp.int64)))
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s); clean the data before training")
    return out
