"""Shared fixtures for the core test suite.

The oracles themselves (nested loops, finite differences, update rules) are
written out in the test files next to the tests that use them, so each file
can be read on its own; the helpers here are only plumbing.

Backends: ``any_backend`` runs a test on NumPy, on array_api_strict's device
"device1" and on CuPy; ``cupy_backend`` on CuPy alone. Every CuPy case is
marked ``gpu`` (``python -m pytest -m gpu`` selects them) and skips, naming
the reason, where CuPy or a working CUDA GPU is missing; nothing imports CuPy
before that check. ``NNCORE_TEST_CUPY_STANDIN=1`` runs the CuPy cases on
array_api_strict "device1" instead of skipping them, so that a machine
without a GPU can still execute the GPU tests' own code.
"""

import functools
import gzip
import signal
import os

import numpy as np
import pytest

STANDIN_VARIABLE = "NNCORE_TEST_CUPY_STANDIN"


@pytest.fixture
def rng():
    """A fresh, seeded host generator for each test (reproducible, order independent)."""
    return np.random.default_rng(20240611)


@pytest.fixture
def strict_device1():
    """The array_api_strict backend on its non-default device "device1" (refuses to mix devices)."""
    return _strict_device1()


def _strict_device1():
    pytest.importorskip("array_api_strict")
    from backends import get_backend

    return get_backend("array_api_strict", "device1")


@functools.cache
def cupy_unavailable_reason():
    """Why the CuPy tests cannot run here, or ``None`` when CuPy computes on a CUDA GPU.

    Imports CuPy only inside the check and runs one small reduction, so a broken
    driver or toolkit is caught here rather than in the middle of a test.
    """
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"CuPy is not installed ({type(exc).__name__}: {exc})"
    from backends import get_backend

    try:
        be = get_backend("cupy")
        total = float(be.xp.sum(be.asarray([1.0, 2.0])))
    except Exception as exc:
        return f"CuPy is installed but cannot compute on a CUDA GPU ({type(exc).__name__}: {exc})"
    if total != 3.0:
        return f"CuPy computed 1 + 2 = {total} on the GPU"
    return None


def _cupy_or_skip():
    """The CuPy backend; without CuPy and a GPU, the stand-in (if asked for) or a skip."""
    reason = cupy_unavailable_reason()
    if reason is None:
        from backends import get_backend

        return get_backend("cupy")
    if os.environ.get(STANDIN_VARIABLE, "").strip() not in ("", "0"):
        return _strict_device1()
    pytest.skip(f"needs CuPy and a CUDA GPU: {reason}")


@pytest.fixture(params=[pytest.param("cupy", marks=pytest.mark.gpu)])
def cupy_backend():
    """The CuPy backend on GPU 0; marks the test ``gpu`` and skips without CuPy or a GPU."""
    return _cupy_or_skip()


@pytest.fixture(params=["numpy", "strict_device1", pytest.param("cupy", marks=pytest.mark.gpu)])
def any_backend(request):
    """Each backend in turn: NumPy, array_api_strict on "device1", CuPy (marked ``gpu``)."""
    if request.param == "numpy":
        from backends import get_backend

        return get_backend("numpy")
    if request.param == "strict_device1":
        return _strict_device1()
    return _cupy_or_skip()


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


def pytest_configure(config):
    """Let Ctrl-C reach the tests that send it, also in a run started as a background job.

    Shells start background jobs (``cmd &``, CI runners, nohup) with SIGINT ignored,
    and Python then keeps it ignored; the tests of Ctrl-C handling (in this process
    and in the subprocesses it starts, which inherit an ignored signal) need it
    delivered as a user's terminal would.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
