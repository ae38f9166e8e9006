"""nncore.datasets: one-hot encoding, the bundled digits and IDX parsing (no network)."""

import gzip
import os
import struct
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets

from nncore import datasets
from nncore.datasets import load_digits, load_mnist, onehot

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array, magic=None):
    """The IDX encoding, written out from the format description."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 + array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path, data, gz=False):
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_mnist(folder, n_train=5, n_test=3, rows=28, cols=28, gz=False, names=NAMES, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, rows, cols)),
        "train_labels": rng.integers(0, 10, size=n_train),
        "test_images": rng.integers(0, 256, size=(n_test, rows, cols)),
        "test_labels": rng.integers(0, 10, size=n_test),
    }
    for role, array in arrays.items():
        write(folder / names[role], idx_bytes(array), gz=gz)
    return arrays


# --- onehot --------------------------------------------------------------------


def test_onehot_basic():
    t = onehot([2, 0, 1, 2])
    np.testing.assert_array_equal(t, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert t.dtype == np.float64


def test_onehot_n_classes_dtype_and_integral_floats():
    t = onehot(np.array([1.0, 3.0]), n_classes=5, dtype="float32")
    assert t.shape == (2, 5) and t.dtype == np.float32
    np.testing.assert_array_equal(t.argmax(axis=1), [1, 3])
    assert onehot(np.array([], dtype=int), n_classes=4).shape == (0, 4)


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        ([0, -3, 1], {}, "-3"),
        ([0, 1.5, 1], {}, "1.5"),
        ([0, float("nan")], {}, "nan"),
        ([0, 7, 2], {"n_classes": 5}, r"7.*n_classes=5"),
        ([[0, 1], [1, 0]], {}, r"1-D.*\(2, 2\)"),
        (["cat", "dog"], {}, "cat"),
        ([], {}, "n_classes"),
        ([0, 1], {"n_classes": 0}, "n_classes must be a positive integer"),
        ([0, 1], {"n_classes": 2.0}, "n_classes must be a positive integer"),
        ([0, 1], {"dtype": "int64"}, "dtype"),
    ],
)
def test_onehot_errors(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        onehot(labels, **kwargs)


# --- load_digits -------------------------------------------------------------------


def test_load_digits():
    X, t = load_digits()
    assert X.shape == (1797, 1, 8, 8) and t.shape == (1797, 10)
    assert X.dtype == np.float32 and t.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(t.sum(axis=1), 1.0)
    reference = sklearn.datasets.load_digits()
    np.testing.assert_array_equal(t.argmax(axis=1), reference.target)
    np.testing.assert_allclose(X[:, 0] * 16, reference.images)


def test_load_digits_float64_and_bad_dtype():
    X, t = load_digits(dtype="float64")
    assert X.dtype == np.float64 and t.dtype == np.float64
    with pytest.raises(ValueError, match="float32"):
        load_digits(dtype="uint8")


# --- load_mnist from IDX files ---------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_load_mnist_round_trip(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    X_train, t_train, X_test, t_test = load_mnist(tmp_path)
    assert X_train.shape == (5, 1, 28, 28) and X_test.shape == (3, 1, 28, 28)
    assert X_train.dtype == np.float32 and t_train.dtype == np.float32
    np.testing.assert_allclose(X_train[:, 0] * 255, arrays["train_images"], rtol=1e-6)
    np.testing.assert_allclose(X_test[:, 0] * 255, arrays["test_images"], rtol=1e-6)
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    np.testing.assert_array_equal(t_train.argmax(axis=1), arrays["train_labels"])
    np.testing.assert_array_equal(t_test.argmax(axis=1), arrays["test_labels"])
    assert t_train.shape == (5, 10) and t_test.shape == (3, 10)


def test_load_mnist_kaggle_names_mixed_compression_other_sizes_float64(tmp_path):
    dotted = {role: name.replace("-idx", ".idx") for role, name in NAMES.items()}
    arrays = make_mnist(tmp_path, n_train=4, n_test=2, rows=5, cols=7, names=dotted)
    # Gzip one file only: each file is looked up on its own.
    raw = (tmp_path / dotted["test_labels"]).read_bytes()
    (tmp_path / dotted["test_labels"]).unlink()
    write(tmp_path / dotted["test_labels"], raw, gz=True)
    X_train, t_train, X_test, t_test = load_mnist(str(tmp_path), dtype="float64")
    assert X_train.shape == (4, 1, 5, 7) and X_train.dtype == np.float64
    np.testing.assert_array_equal(t_test.argmax(axis=1), arrays["test_labels"])


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_path_is_a_file(tmp_path):
    file = write(tmp_path / "mnist.npz", b"x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist(file)


def test_missing_files_are_named(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / NAMES["test_images"]).unlink()
    (tmp_path / NAMES["train_labels"]).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message and ".gz" in message


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_wrong_magic(tmp_path, gz):
    make_mnist(tmp_path)
    labels = np.zeros((5, 28, 28))  # an image file where the labels belong
    (tmp_path / NAMES["train_labels"]).unlink()
    write(tmp_path / NAMES["train_labels"], idx_bytes(labels), gz=gz)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*0x00000803.*0x00000801"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (2, r"2 bytes, not even the 4-byte magic"),
        (10, r"10 bytes, shorter than its 16-byte header"),
        (16 + 100, rf"116 bytes, expected {16 + 5 * 28 * 28} for shape \(5, 28, 28\)"),
    ],
)
def test_truncated_images(tmp_path, cut, match):
    arrays = make_mnist(tmp_path)
    write(tmp_path / NAMES["train_images"], idx_bytes(arrays["train_images"])[:cut])
    with pytest.raises(ValueError, match=f"train-images-idx3-ubyte is truncated: {match}"):
        load_mnist(tmp_path)


def test_trailing_bytes(tmp_path):
    arrays = make_mnist(tmp_path)
    write(tmp_path / NAMES["test_labels"], idx_bytes(arrays["test_labels"]) + b"\x00\x01")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is too long: 13 bytes, expected 11"):
        load_mnist(tmp_path)


def test_truncated_gzip_stream(tmp_path):
    arrays = make_mnist(tmp_path)
    (tmp_path / NAMES["train_images"]).unlink()
    packed = gzip.compress(idx_bytes(arrays["train_images"]))
    (tmp_path / (NAMES["train_images"] + ".gz")).write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="cannot read train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_not_gzip_at_all(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / NAMES["test_images"]).unlink()
    (tmp_path / (NAMES["test_images"] + ".gz")).write_bytes(b"definitely not gzip")
    with pytest.raises(ValueError, match="cannot read t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / NAMES["train_labels"], idx_bytes(np.arange(4)))
    message = r"train-images-idx3-ubyte has 5 images but train-labels-idx1-ubyte has 4 labels"
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / NAMES["test_labels"], idx_bytes([1, 12, 3]))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte holds label 12"):
        load_mnist(tmp_path)


def test_bad_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        load_mnist(tmp_path, dtype="int8")


# --- hostile IDX files: refused before they cost memory --------------------------


def gzip_bomb(path, header, megabytes=200):
    """``header`` followed by ``megabytes`` MB of zeros, gzipped (~1 KB per MB): a small file that inflates."""
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb") as f:
        f.write(header)
        for _ in range(megabytes):
            f.write(zeros)
    return path


LOAD_UNDER_MEMORY_LIMIT = """
import resource, sys
from nncore.datasets import load_mnist
with open("/proc/self/status") as status:
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
limit = size_kb * 1024 + 64 * 2**20  # what the process holds now plus 64 MB: far less than the bomb inflates to
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    load_mnist(sys.argv[1])
except ValueError as exc:
    print("ValueError:", exc)
except MemoryError:
    print("MemoryError")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_gzip_bomb_is_refused_cheaply(tmp_path):
    """A 200 KB gzip file inflating to 200 MB is refused after reading the size its header declares."""
    make_mnist(tmp_path)
    (tmp_path / NAMES["train_images"]).unlink()
    bomb = gzip_bomb(tmp_path / (NAMES["train_images"] + ".gz"), struct.pack(">4I", 0x803, 5, 28, 28))
    assert bomb.stat().st_size < 1_000_000
    root = Path(datasets.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "OPENBLAS_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LOAD_UNDER_MEMORY_LIMIT, str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ValueError: train-images-idx3-ubyte.gz is too long: more than 3936 bytes"), \
        result.stdout
    assert seconds < 60  # a few seconds at most: the 200 MB are never inflated (and never held)
    # The same in this process: the error names the file and the declared shape.
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is too long.*shape \(5, 28, 28\)"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "shape",
    [(20_000_000, 28, 28), (10, 5000, 28), (10, 28, 4097), (1000, 4096, 4096)],
    ids=["too-many-images", "too-tall", "too-wide", "too-many-bytes"],
)
def test_absurd_declared_shape_is_refused_before_reading(tmp_path, shape):
    make_mnist(tmp_path)
    (tmp_path / NAMES["test_images"]).unlink()
    gzip_bomb(tmp_path / (NAMES["test_images"] + ".gz"), struct.pack(">4I", 0x803, *shape), megabytes=1)
    with pytest.raises(ValueError, match=rf"t10k-images-idx3-ubyte.gz declares shape \({shape[0]}, .*refusing"):
        load_mnist(tmp_path)


def test_absurd_label_count_is_refused(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / NAMES["train_labels"], struct.pack(">2I", 0x801, 2**32 - 1))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte declares shape \(4294967295,\)"):
        load_mnist(tmp_path)


def test_load_mnist_without_a_path_says_it_downloads():
    doc = " ".join(load_mnist.__doc__.split())
    assert "**downloaded** from OpenML with scikit-learn's :func:`sklearn.datasets.fetch_openml`" in doc
    assert "cache" in doc


# --- load_mnist without a folder: OpenML, never the real network here ------------


def test_download_failure_is_clear(monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(OSError, match=r"could not download MNIST.*fetch_openml.*cache.*load_mnist\(path\)") as info:
        load_mnist()
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert calls and calls[0]["as_frame"] is False


def test_download_split_and_scaling(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(7, 784)).astype(np.float64)
    y = np.array(list("3141592"), dtype=object)  # OpenML gives the classes as strings
    seen = {}

    def fake_fetch(name, **kwargs):
        seen.update(kwargs, name=name)
        return X, y

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch)
    monkeypatch.setattr(datasets, "_MNIST_TRAIN_SIZE", 5)
    X_train, t_train, X_test, t_test = load_mnist(data_home=tmp_path)
    assert seen["name"] == "mnist_784" and seen["data_home"] == tmp_path
    assert X_train.shape == (5, 1, 28, 28) and X_test.shape == (2, 1, 28, 28)
    assert X_train.dtype == np.float32
    np.testing.assert_allclose(X_test.reshape(2, -1) * 255, X[5:], rtol=1e-6)
    np.testing.assert_array_equal(t_train.argmax(axis=1), [3, 1, 4, 1, 5])
    np.testing.assert_array_equal(t_test.argmax(axis=1), [9, 2])
