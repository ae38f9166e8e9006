"""Backend selection and host/device transfer: the one place that knows array libraries.

Everything in :mod:`nncore` computes on ``backend.xp``, an array-API namespace, and
moves data only through :meth:`Backend.asarray` and :meth:`Backend.to_numpy`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NAMES = ("numpy", "cupy", "array_api_strict", "auto")
FLOAT_DTYPES = ("float32", "float64")

# Not `pip install "nncore[cupy]"`: the name nncore on the package index is another project.
_CUPY_INSTALL_HINT = (
    "CuPy is not installed. Install the CuPy wheel for your CUDA version "
    "(`pip install cupy-cuda12x` for CUDA 12, `pip install cupy-cuda13x` for CUDA 13, ...), "
    'or `pip install ".[cupy]"` from a clone of this repository. '
    "On Colab, CuPy is preinstalled on GPU runtimes."
)


@dataclass(frozen=True, eq=False)
class Backend:
    """An array library plus the device that arrays live on.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"`` or ``"array_api_strict"``.
    xp : module
        The array-API namespace (array-api-compat's wrapper for NumPy and CuPy).
    device : object
        Where arrays are created; ``None`` for NumPy.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any = None

    def asarray(self, x, dtype=None):
        """Return ``x`` as an array of this backend, on its device.

        ``x`` may be an array of any supported library (NumPy, CuPy,
        array_api_strict on any device) or anything array-like. ``dtype`` is a
        name such as ``"float32"`` or a dtype of ``xp``.
        """
        xp = self.xp
        dtype = self.dtype(dtype) if dtype is not None else None
        if not self.owns(x):
            x = to_numpy(x)
        return xp.asarray(x, dtype=dtype, device=self.device)

    def owns(self, x) -> bool:
        """True if ``x`` is an array of this library already on this device."""
        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        if self.name == "cupy":
            import array_api_compat

            return array_api_compat.is_cupy_array(x) and x.device == self.device
        return type(x).__module__.startswith("array_api_strict") and getattr(x, "device", None) == self.device

    def to_numpy(self, x) -> np.ndarray:
        """Copy ``x`` to the host as a NumPy array."""
        return to_numpy(x)

    def dtype(self, dtype):
        """The namespace's floating dtype for ``dtype`` (a name, or a dtype of any library)."""
        name = dtype_name(dtype)
        if name not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
        return getattr(self.xp, name)

    def synchronize(self) -> None:
        """Block until queued device work is done (a no-op off the GPU)."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def __eq__(self, other):
        return isinstance(other, Backend) and (self.name, str(self.device)) == (other.name, str(other.device))

    def __hash__(self):
        return hash((self.name, str(self.device)))

    def __reduce__(self):
        # Modules cannot be pickled or deep-copied; a backend is rebuilt from its name and device.
        device = self.device.id if self.name == "cupy" else None if self.device is None else _device_name(self.device)
        return get_backend, (self.name, device)


def dtype_name(dtype) -> str:
    """The name (``"float32"``, ``"int64"``, ...) of a dtype of any library, or of a dtype name."""
    try:
        return np.dtype(dtype).name
    except TypeError:  # array_api_strict's dtypes print as "array_api_strict.float32"
        return str(dtype).rsplit(".", 1)[-1]


def get_backend(name=None, device=None) -> Backend:
    """Return the :class:`Backend` called ``name``.

    Parameters
    ----------
    name : str, Backend or None
        ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"auto"`` (CuPy when a
        CUDA device works, else NumPy). ``None`` reads ``NNCORE_BACKEND``, else NumPy.
        A :class:`Backend` is returned unchanged.
    device : int, str or None
        A GPU number for CuPy; a device name such as ``"device1"`` for
        array_api_strict.

    Raises
    ------
    ValueError
        Unknown name or device; ``NNCORE_BACKEND`` set to an unknown name.
    ImportError
        ``"cupy"`` asked for but CuPy is not installed.
    RuntimeError
        CuPy is installed but no CUDA device can be used.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        name = os.environ.get("NNCORE_BACKEND", "").strip()
        if not name:
            return _numpy(device)
        if _key(name) not in NAMES:
            raise ValueError(
                f"environment variable NNCORE_BACKEND={name!r} is not a backend; "
                f"valid names are {', '.join(map(repr, NAMES))}"
            )
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name or a Backend, got {type(name).__name__}")
    key = _key(name)
    if key == "auto":
        return _cupy(device) if _cupy_works() else _numpy(device)
    if key == "numpy":
        return _numpy(device)
    if key == "cupy":
        return _cupy(device)
    if key == "array_api_strict":
        return _strict(device)
    raise ValueError(f"unknown backend {name!r}; valid names are {', '.join(map(repr, NAMES))}")


def _key(name):
    """The canonical spelling of a backend name (``"Array-API-Strict"`` -> ``"array_api_strict"``)."""
    return name.strip().lower().replace("-", "_")


def available() -> list[str]:
    """The backend names usable on this machine (``"auto"`` not included)."""
    names = ["numpy"]
    if _cupy_works():
        names.append("cupy")
    if importlib.util.find_spec("array_api_strict") is not None:
        names.append("array_api_strict")
    return names


def to_numpy(x) -> np.ndarray:
    """Copy an array of any supported library (or an array-like) to a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("array_api_strict"):
        import array_api_strict

        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    if module.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def backend_of(x) -> Backend:
    """The backend an array belongs to (NumPy for lists and other array-likes)."""
    module = type(x).__module__
    if module.startswith("cupy"):
        return _cupy(x.device.id)
    if module.startswith("array_api_strict"):
        return _strict(x.device)
    return _numpy(None)


def _numpy(device) -> Backend:
    if device not in (None, "cpu"):
        raise ValueError(f"the numpy backend has only the device 'cpu', got {device!r}")
    from array_api_compat import numpy as xp

    return Backend("numpy", xp, None)


def _strict(device) -> Backend:
    import array_api_strict

    devices = array_api_strict.__array_namespace_info__().devices()
    if device is None:
        device = array_api_strict.__array_namespace_info__().default_device()
    chosen = [d for d in devices if d == device or str(device) in (repr(d), _device_name(d))]
    if not chosen:
        names = ", ".join(repr(_device_name(d)) for d in devices)
        raise ValueError(f"array_api_strict has no device {device!r}; its devices are {names}")
    return Backend("array_api_strict", array_api_strict, chosen[0])


def _device_name(device) -> str:
    # array_api_strict.Device keeps its name in a private slot; its repr is stable.
    return repr(device).split("'")[1] if "'" in repr(device) else str(device)


def _cupy(device) -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(_CUPY_INSTALL_HINT) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver is present
        raise RuntimeError(f"CuPy is installed but no usable CUDA GPU was found ({exc}); use backend='numpy'") from exc
    if count == 0:
        raise RuntimeError("CuPy is installed but no CUDA GPU is visible; use backend='numpy'")
    index = 0 if device is None else int(device)
    if not 0 <= index < count:
        raise ValueError(f"cupy device {index} does not exist; this machine has {count} GPU(s)")
    from array_api_compat import cupy as xp

    return Backend("cupy", xp, cupy.cuda.Device(index))


def _cupy_works() -> bool:
    try:
        _cupy(None)
    except (ImportError, RuntimeError):
        return False
    return True
