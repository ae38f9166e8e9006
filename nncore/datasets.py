"""Data sets for the examples: scikit-learn's 8x8 digits and MNIST.

Images come back as NumPy arrays of shape ``(n, 1, height, width)`` with
values in [0, 1] (the layout :class:`nncore.CNN` expects), targets one-hot
``(n, 10)``. Moving them to a GPU is the model's job.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import numbers
import zlib
from pathlib import Path

import numpy as np

from backends import to_numpy

__all__ = ["onehot", "load_digits", "load_mnist", "idx_dataset_name"]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (n, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (n,)

# The four MNIST files, by role; Kaggle's copies use a dot instead of the
# second hyphen, and each may be gzipped.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_TRAIN_SIZE = 60000
# Bounds on what an IDX header may declare (MNIST: 60000 images of 28x28, 47 MB); beyond
# them a file is refused before its data is read.
MAX_IDX_ITEMS = 10_000_000
MAX_IDX_SIDE = 4096
MAX_IDX_BYTES = 2**31  # OpenML's mnist_784 keeps the standard order: train, then test


def onehot(labels, n_classes=None, dtype="float64"):
    """One-hot encode integer class labels.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Integers ``0 <= label < n_classes`` (integral floats such as ``3.0``
        are accepted). Arrays of any backend are copied to the host.
    n_classes : int, optional
        Number of classes ``k``; default ``max(labels) + 1``.
    dtype : {"float64", "float32"}, default="float64"

    Returns
    -------
    t : ndarray of shape (n, k)
        ``t[i, labels[i]] == 1``, zeros elsewhere.

    Raises
    ------
    ValueError
        ``labels`` not 1-D, a label that is negative, not an integer or not
        below ``n_classes`` (the message names it), an invalid
        ``n_classes``, or empty labels without ``n_classes``.

    Examples
    --------
    >>> onehot([2, 0, 1])
    array([[0., 0., 1.],
           [1., 0., 0.],
           [0., 1., 0.]])
    """
    dtype = _float_dtype(dtype)
    values = to_numpy(labels)
    if values.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        bad = values[0] if values.size else values.dtype
        raise ValueError(f"labels must be integers 0, 1, 2, ...; got {bad!r} (dtype {values.dtype})")
    if values.dtype.kind == "f":
        not_int = ~np.isfinite(values) | (values != np.round(values))
        if not_int.any():
            raise ValueError(f"labels must be integers, got {values[np.argmax(not_int)]!r}")
    if values.size and values.min() < 0:
        raise ValueError(f"labels must be >= 0, got {values.min()!r}")
    if n_classes is None:
        if values.size == 0:
            raise ValueError("cannot infer n_classes from empty labels; pass n_classes")
        n_classes = int(values.max()) + 1
    elif isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    elif values.size and values.max() >= n_classes:
        raise ValueError(
            f"label {values.max()!r} is out of range for n_classes={n_classes} (labels must be < n_classes)"
        )
    t = np.zeros((values.size, int(n_classes)), dtype=dtype)
    t[np.arange(values.size), values.astype(np.intp)] = 1
    return t


def load_digits(dtype="float32"):
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, no download).

    Parameters
    ----------
    dtype : {"float32", "float64"}, default="float32"

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8)
        Pixel intensities scaled from 0..16 to [0, 1].
    t : ndarray of shape (1797, 10)
        One-hot targets.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    dtype = _float_dtype(dtype)
    digits = sklearn_digits()
    X = (digits.images / 16.0).astype(dtype)[:, None, :, :]
    return X, onehot(digits.target, 10, dtype=dtype)


def load_mnist(path=None, *, dtype="float32", data_home=None):
    """MNIST, from a folder of IDX files or downloaded from OpenML.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder with the four standard IDX files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each possibly gzipped (``.gz``) or with a
        dot before ``idx`` (``train-images.idx3-ubyte``, as on Kaggle). Any
        data set in this format works (e.g. Fashion-MNIST). If omitted, MNIST
        is **downloaded** from OpenML with scikit-learn's
        :func:`sklearn.datasets.fetch_openml` (``"mnist_784"``), which needs
        the network the first time and then reads its cache under
        ``data_home``.
    dtype : {"float32", "float64"}, default="float32"
    data_home : str or os.PathLike, optional
        scikit-learn's download cache folder (default ``~/scikit_learn_data``);
        only used without ``path``.

    Returns
    -------
    X_train : ndarray of shape (60000, 1, 28, 28)
        Intensities scaled from 0..255 to [0, 1].
    t_train : ndarray of shape (60000, 10)
        One-hot targets.
    X_test : ndarray of shape (10000, 1, 28, 28)
    t_test : ndarray of shape (10000, 10)

    Raises
    ------
    FileNotFoundError
        ``path`` is not a folder, or lacks a file (the message lists the
        names looked for).
    ValueError
        A malformed file: wrong magic number, truncated or too long,
        unreadable gzip, image and label counts that differ, or a label
        above 9 (the message names the file and the numbers).
    OSError
        ``path`` omitted and MNIST could not be downloaded.
    """
    dtype = _float_dtype(dtype)
    if path is None:
        return _fetch_mnist(dtype, data_home)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {str(folder)!r} does not exist or is not a folder")
    found = {role: _find_idx(folder, name) for role, name in MNIST_FILES.items()}
    missing = [name for role, name in MNIST_FILES.items() if found[role] is None]
    if missing:
        looked_for = ", ".join(f"{n} / {_dotted(n)} (optionally .gz)" for n in missing)
        raise FileNotFoundError(f"MNIST folder {str(folder)!r} lacks {looked_for}")
    result = []
    for split in ("train", "test"):
        images_file, labels_file = found[f"{split}_images"], found[f"{split}_labels"]
        images = _read_idx(images_file, IDX_IMAGES_MAGIC)
        labels = _read_idx(labels_file, IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise ValueError(
                f"{images_file.name} has {len(images)} images but {labels_file.name} has {len(labels)} labels"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{labels_file.name} holds label {labels.max()}; MNIST labels are 0..9")
        result += [(images / 255.0).astype(dtype)[:, None, :, :], onehot(labels, 10, dtype=dtype)]
    return tuple(result)


def idx_dataset_name(folder, name=None):
    """The name to show for the IDX files in ``folder``: ``name`` if given, else the folder's own name.

    A folder called ``mnist`` (any case) is shown as ``"MNIST"``, and so is
    ``folder=None`` (:func:`load_mnist` then downloads MNIST). Nothing looks
    inside the files: the name is only as true as the folder's.
    """
    if name is None:
        name = "mnist" if folder is None else Path(folder).resolve().name
    return "MNIST" if name.lower() == "mnist" else name


def _fetch_mnist(dtype, data_home):
    import sklearn.datasets

    # The pandas parser is much faster; the pure-Python one needs nothing extra.
    parser = "pandas" if importlib.util.find_spec("pandas") else "liac-arff"
    try:
        X, y = sklearn.datasets.fetch_openml(
            "mnist_784", version=1, as_frame=False, parser=parser, return_X_y=True, data_home=data_home
        )
    except Exception as exc:  # no network, HTTP errors, a broken cache: all mean "no data"
        raise OSError(
            f"could not download MNIST from OpenML with scikit-learn's fetch_openml, which load_mnist() "
            f"without a path uses (cache: {data_home or '~/scikit_learn_data'}) ({type(exc).__name__}: {exc}); "
            "check the network connection, or download the four IDX files "
            "(train-images-idx3-ubyte.gz, ...) and pass their folder: load_mnist(path)"
        ) from exc
    X = (np.asarray(X, dtype=np.float64) / 255.0).astype(dtype).reshape(-1, 1, 28, 28)
    t = onehot(np.asarray(y).astype(np.int64), 10, dtype=dtype)
    n = _MNIST_TRAIN_SIZE
    return X[:n], t[:n], X[n:], t[n:]


def _dotted(name):
    return name.replace("-idx", ".idx")


def _find_idx(folder, name):
    for candidate in (name, name + ".gz", _dotted(name), _dotted(name) + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _read_idx(file, magic):
    """Parse an IDX file of unsigned bytes: big-endian magic, one uint32 per dimension, data.

    The header is read and checked first; the data read is then bounded by the
    size it declares, so a small gzip file that would inflate to gigabytes is
    refused after reading one byte past that size, not at its end.
    """
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb") as stream:
            head = stream.read(header)
            shape = _idx_shape(file, head, magic)
            size = math.prod(shape)
            data = stream.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream raises EOFError
        raise ValueError(f"cannot read {file.name}: {exc}") from exc
    if len(data) < size:
        raise ValueError(f"{file.name} is truncated: {header + len(data)} bytes, expected {header + size} "
                         f"for shape {shape}")
    if len(data) > size:
        found = f"more than {header + size} bytes uncompressed" if file.suffix == ".gz" else \
            f"{file.stat().st_size} bytes"
        raise ValueError(f"{file.name} is too long: {found}, expected {header + size} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _idx_shape(file, head, magic):
    """The shape declared by an IDX header ``head``, after checking its magic number and sizes."""
    ndim = magic & 0xFF
    if len(head) < 4:
        raise ValueError(f"{file.name} is truncated: {len(head)} bytes, not even the 4-byte magic number")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise ValueError(
            f"{file.name} has magic number 0x{found:08X}, expected 0x{magic:08X}; is it the right IDX file?"
        )
    if len(head) < 4 * (1 + ndim):
        raise ValueError(f"{file.name} is truncated: {len(head)} bytes, shorter than its {4 * (1 + ndim)}-byte header")
    shape = tuple(int.from_bytes(head[4 * i:4 * i + 4], "big") for i in range(1, ndim + 1))
    if shape[0] > MAX_IDX_ITEMS or any(side > MAX_IDX_SIDE for side in shape[1:]) \
            or math.prod(shape) > MAX_IDX_BYTES:
        raise ValueError(f"{file.name} declares shape {shape}: more than {MAX_IDX_ITEMS:,} items, a side over "
                         f"{MAX_IDX_SIDE} pixels or more than {MAX_IDX_BYTES:,} bytes of data; refusing to read it")
    return shape


def _float_dtype(dtype):
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved
