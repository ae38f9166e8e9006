"""backends: names, devices, errors, the environment variable and host/device transfers."""

import sys
import types

import array_api_strict
import numpy as np
import pytest

import backends
from backends import Backend, available, get_backend, to_numpy
from nncore import CNN

DEVICE1 = array_api_strict.Device("device1")
CPU = array_api_strict.Device("CPU_DEVICE")


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail as on a machine without CuPy (even if it is installed)."""
    monkeypatch.setitem(sys.modules, "cupy", None)


def fake_cupy(monkeypatch, get_device_count):
    """Install a fake ``cupy`` whose CUDA runtime reports through ``get_device_count``."""
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def no_driver():
    raise OSError("cudaErrorNoDevice: no CUDA-capable device is detected")


def test_numpy_backend():
    be = get_backend("numpy")
    assert be.name == "numpy" and be.device is None
    assert be.xp.__name__.startswith("array_api_compat.numpy")
    x = be.asarray([1.0, 2.0])
    assert isinstance(x, np.ndarray)
    be.synchronize()  # a no-op off the GPU
    assert get_backend("numpy", "cpu") == be


def test_a_backend_is_returned_unchanged():
    be = get_backend("array_api_strict", "device1")
    assert get_backend(be) is be
    cnn = CNN(backend=be)
    assert cnn.backend is be


def test_strict_backend_devices():
    default = get_backend("array_api_strict")
    assert default.name == "array_api_strict" and default.xp is array_api_strict
    assert default.device == CPU
    be = get_backend("array_api_strict", "device1")
    assert be.device == DEVICE1
    assert get_backend("array_api_strict", DEVICE1).device == DEVICE1
    assert be.asarray(np.zeros(3)).device == DEVICE1
    assert be != default and be == get_backend("array_api_strict", "device1")


def test_device1_refuses_to_mix_with_the_default_device():
    # The premise of the device1 tests: a stray host array makes the computation fail.
    on_device1 = get_backend("array_api_strict", "device1").asarray([1.0, 2.0])
    with pytest.raises(ValueError):
        on_device1 + array_api_strict.asarray([1.0, 2.0])


@pytest.mark.parametrize("name", ["tensorflow", "torch", "", "cupyy"])
def test_unknown_name_is_a_value_error_naming_the_valid_ones(name):
    with pytest.raises(ValueError) as info:
        get_backend(name)
    for valid in ("numpy", "cupy", "array_api_strict", "auto"):
        assert valid in str(info.value)


@pytest.mark.parametrize("name,device", [("numpy", 1), ("numpy", "gpu"), ("array_api_strict", "device9")])
def test_unknown_device_is_a_value_error(name, device):
    with pytest.raises(ValueError):
        get_backend(name, device)


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError):
        get_backend(3)


def test_cupy_missing_says_how_to_install_it(no_cupy):
    with pytest.raises(ImportError) as info:
        get_backend("cupy")
    message = str(info.value)
    # "nncore" on the package index is another project: never tell users to install it.
    assert "nncore[cupy]" not in message
    assert "pip install cupy-cuda12x" in message and "cupy-cuda13x" in message
    assert 'pip install ".[cupy]"' in message


def test_cupy_without_gpu_is_a_runtime_error(monkeypatch):
    fake_cupy(monkeypatch, no_driver)
    with pytest.raises(RuntimeError) as info:
        get_backend("cupy")
    assert "GPU" in str(info.value)


def test_cupy_with_zero_devices_is_a_runtime_error(monkeypatch):
    fake_cupy(monkeypatch, lambda: 0)
    with pytest.raises(RuntimeError):
        get_backend("cupy")


def test_auto_falls_back_to_numpy_without_cupy(no_cupy):
    assert get_backend("auto").name == "numpy"


def test_auto_falls_back_to_numpy_without_gpu(monkeypatch):
    fake_cupy(monkeypatch, no_driver)
    assert get_backend("auto").name == "numpy"


def test_available_without_cupy(no_cupy):
    names = available()
    assert names[0] == "numpy"
    assert "array_api_strict" in names
    assert "cupy" not in names and "auto" not in names


def test_available_with_cupy_but_no_gpu(monkeypatch):
    fake_cupy(monkeypatch, no_driver)
    assert "cupy" not in available()


def test_environment_variable_picks_the_default(monkeypatch):
    monkeypatch.delenv("NNCORE_BACKEND", raising=False)
    assert get_backend().name == "numpy"
    assert get_backend(None).name == "numpy"
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    assert get_backend().name == "array_api_strict"
    monkeypatch.setenv("NNCORE_BACKEND", "  ")
    assert get_backend().name == "numpy"
    monkeypatch.setenv("NNCORE_BACKEND", "nonsense")
    with pytest.raises(ValueError):
        get_backend()
    # An explicit name wins over the environment.
    assert get_backend("numpy").name == "numpy"


def test_environment_variable_cupy_without_cupy(monkeypatch, no_cupy):
    monkeypatch.setenv("NNCORE_BACKEND", "cupy")
    with pytest.raises(ImportError):
        get_backend()


def test_asarray_moves_between_namespaces_and_devices():
    host = np.arange(6.0).reshape(2, 3)
    strict1 = get_backend("array_api_strict", "device1")
    strict0 = get_backend("array_api_strict")
    numpy_be = get_backend("numpy")

    on1 = strict1.asarray(host)
    assert on1.device == DEVICE1
    on0 = strict0.asarray(on1)  # device1 -> default device
    assert on0.device == CPU
    back1 = strict1.asarray(on0)  # default device -> device1
    assert back1.device == DEVICE1
    again = numpy_be.asarray(back1)  # strict -> numpy
    assert isinstance(again, np.ndarray)
    np.testing.assert_array_equal(again, host)
    assert strict1.asarray(on1) is on1 or strict1.asarray(on1).device == DEVICE1

    from_list = strict1.asarray([[1, 2], [3, 4]], dtype="float32")
    assert from_list.dtype == array_api_strict.float32 and from_list.device == DEVICE1
    assert numpy_be.asarray(host, dtype="float32").dtype == np.float32
    assert numpy_be.asarray(host, dtype=np.float64).dtype == np.float64
    assert strict1.asarray(host, dtype=array_api_strict.float32).dtype == array_api_strict.float32


@pytest.mark.parametrize("dtype", ["int32", "float16", "complex64", "bool"])
def test_asarray_refuses_non_float_dtypes(dtype):
    with pytest.raises(ValueError):
        get_backend("numpy").asarray([1, 2], dtype=dtype)


def test_to_numpy():
    host = np.linspace(0, 1, 5)
    assert backends.to_numpy(host) is host
    strict1 = get_backend("array_api_strict", "device1")
    out = to_numpy(strict1.asarray(host))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, host)
    np.testing.assert_array_equal(strict1.to_numpy(strict1.asarray(host)), host)
    np.testing.assert_array_equal(to_numpy([1.0, 2.0]), [1.0, 2.0])


def test_backend_of():
    assert backends.backend_of(np.zeros(2)).name == "numpy"
    assert backends.backend_of([1, 2]).name == "numpy"
    strict1 = get_backend("array_api_strict", "device1")
    assert backends.backend_of(strict1.asarray([1.0])) == strict1


def test_backend_is_hashable_and_comparable():
    a = get_backend("array_api_strict", "device1")
    b = get_backend("array_api_strict", "device1")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, get_backend("numpy")}) == 2
    assert isinstance(a, Backend)


@pytest.mark.parametrize("value", ["nonsense", "cuda", "numpy2"])
def test_unknown_environment_backend_names_the_variable_its_value_and_the_valid_names(value, monkeypatch):
    monkeypatch.setenv("NNCORE_BACKEND", value)
    with pytest.raises(ValueError) as info:
        get_backend(None)
    message = str(info.value)
    assert "NNCORE_BACKEND" in message and repr(value) in message
    for valid in ("numpy", "cupy", "array_api_strict", "auto"):
        assert repr(valid) in message


def test_environment_backend_name_is_read_like_an_argument(monkeypatch):
    monkeypatch.setenv("NNCORE_BACKEND", " Array-API-Strict ")
    assert get_backend(None).name == "array_api_strict"
