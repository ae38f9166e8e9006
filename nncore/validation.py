"""Checks at the boundary: user data in, clear ValueError/TypeError out."""

import warnings
from numbers import Integral, Real

import numpy as np

from backends import backend_of, to_numpy


def check_positive_int(name, value, minimum=1):
    """``int(value)`` if ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_non_negative_number(name, value):
    """``float(value)`` if ``value`` is a finite real number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return value


def registered_name(registry, value, what, registry_name):
    """The key of ``value`` in ``registry`` (nncore stores functions by name); a clear ValueError otherwise.

    The message reads on after the thing that uses ``value``, e.g. "layer 0 (...) uses the activation ...".
    """
    for name, entry in registry.items():
        if entry is value:
            return name
    label = getattr(value, "__name__", repr(value))
    raise ValueError(f"uses the {what} {label!r}, which is not in {registry_name}; nncore saves functions by name "
                     f"only (no pickle), so register it first ({registry_name}[{label.lower()!r}] = {label}) and do "
                     "the same before loading")


def as_host_or_device_array(x, what):
    """``x`` itself if it is an array of a supported library, else ``numpy.asarray(x)`` with a clear error."""
    if hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, np.generic):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{what} must be a numeric array, could not convert it: {exc}") from None


def as_model_array(backend, x, dtype, what):
    """Move ``x`` to ``backend`` as ``dtype`` after checking that it is numeric and finite."""
    x = as_host_or_device_array(x, what)
    source = backend_of(x)
    if source.name == "numpy" and not isinstance(x, np.ndarray):
        x = to_numpy(x)  # pandas, torch (CPU), memory views, ...
    xp = source.xp
    try:
        numeric = xp.isdtype(x.dtype, ("bool", "integral", "real floating"))
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        kind = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}.get(
            getattr(x.dtype, "kind", ""), "non-numeric values")
        try:
            if xp.isdtype(x.dtype, "complex floating"):
                kind = "complex numbers"
        except (TypeError, ValueError):
            pass
        raise TypeError(f"{what} must be a real numeric array, got dtype {x.dtype} ({kind}); "
                        "convert it to floats first")
    with warnings.catch_warnings():
        # A float64 value beyond the float32 range becomes inf in the cast; it is reported just below.
        warnings.simplefilter("ignore", RuntimeWarning)
        out = backend.asarray(x, dtype=dtype)
    bxp = backend.xp
    finite = bxp.isfinite(out)
    if not bool(bxp.all(finite)):
        bad = bxp.reshape(bxp.astype(~finite, bxp.int8), (-1,))
        count = int(bxp.sum(bxp.astype(bad, bxp.int64)))
        first = tuple(int(i) for i in np.unravel_index(int(bxp.argmax(bad)), tuple(out.shape)))
        value = float(out[first])
        hint = ""
        if np.isinf(value):
            hint = f"; values beyond +-{float(bxp.finfo(out.dtype).max):.4g} overflow the model's dtype"
        raise ValueError(f"{what} contains {count} NaN or infinite value(s) (the first, {value}, at index "
                         f"{first}{hint}); clean the data before training")
    return out
