"""Shared fixtures for the core test suite.

The oracles themselves (nested loops, finite differences, update rules) are
written out in the test files next to the tests that use them, so each file
can be read on its own; the helpers here are only plumbing.
"""

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, seeded host generator for each test (reproducible, order independent)."""
    return np.random.default_rng(20240611)


@pytest.fixture
def strict_device1():
    """The array_api_strict backend on its non-default device "device1" (refuses to mix devices)."""
    pytest.importorskip("array_api_strict")
    from backends import get_backend

    return get_backend("array_api_strict", "device1")


def central_difference(f, x, h=1e-6, indices=None):
    """Central finite differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` in float64.

    ``f`` maps a float64 NumPy array shaped like ``x`` to a Python float.
    ``indices`` (flat indices) restricts the entries that are differentiated;
    the others are left as NaN.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.full(x.shape, np.nan)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + h
        up = float(f(x))
        flat[i] = old - h
        down = float(f(x))
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


@pytest.fixture
def numgrad():
    """:func:`central_difference`, as a fixture."""
    return central_difference
