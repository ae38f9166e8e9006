"""Shared fixtures for the core test suite.

The oracles themselves (nested loops, finite differences, update rules) are
written out in the test files next to the tests that use them, so each file
can be read on its own; the helpers here are only plumbing.
"""

import gzip

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


@pytest.fixture
def mnist_idx(tmp_path):
    """Factory for a folder of tiny MNIST-format IDX files (random 28x28 images;
    the training files gzipped, the test files not): ``mnist_idx(n_train, n_test)``."""

    def write(n_train=120, n_test=40, seed=0):
        rng = np.random.default_rng(seed)
        folder = tmp_path / "mnist"
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, n, opener, suffix in (("train", n_train, gzip.open, ".gz"), ("t10k", n_test, open, "")):
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n, dtype=np.uint8)
            with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
                f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape))
                f.write(images.tobytes())
            with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
                f.write((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())
        return folder

    return write
