"""Plumbing shared by the examples: command-line options, data, plots. Not an example itself."""

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np


def parser(description, *, data=True, backend=True):
    """An ``ArgumentParser`` with the options every example takes (``--backend`` for those that train)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for figures and tables (default: ./out)")
    p.add_argument("--quick", action="store_true", help="a few seconds' smoke run: less data, fewer epochs")
    p.add_argument("--seed", type=int, default=2023)
    if backend:
        p.add_argument("--backend", default=None, help=BACKEND_HELP)
    if data:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="folder with the four IDX files of MNIST or a data set in its format, such as "
                            "Fashion-MNIST (train-images-idx3-ubyte[.gz], ...); "
                            "default: scikit-learn's bundled 8x8 digits")
    return p


#: ``--backend``'s help, the same in every example.
BACKEND_HELP = ("numpy, cupy, auto or array_api_strict; default: the environment variable NNCORE_BACKEND "
                "if set, else numpy")


def write_idx(path, array):
    """Write a uint8 array as a gzipped IDX file (big-endian magic ``0x08`` + ndim, one uint32 per dimension)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def write_synthetic_idx(folder, n_train=1200, n_test=300, seed=0):
    """A folder of the four MNIST-format IDX files holding synthetic 28x28 images of 10 classes.

    Class ``k`` is a bright 6x6 square at one of 10 fixed places plus uniform
    noise, so a small CNN learns it within an epoch; it stands in for MNIST in
    smoke runs and says nothing about accuracy on real data.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corners = [(3 + 8 * (k // 4), 2 + 6 * (k % 4)) for k in range(10)]  # 3 rows of 4, 6x6 squares inside 28x28
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 96, size=(n, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            row, col = corners[label]
            images[index, row:row + 6, col:col + 6] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def use_agg_unless_interactive():
    """Draw off-screen when there is no display (CI, SSH), so saving figures never needs a window."""
    import matplotlib

    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")


def upsample_nearest(X, size):
    """Nearest-neighbour resize of ``(n, c, h, w)`` images to ``size x size``.

    Output pixel ``i`` copies input pixel ``floor(i * h / size)``; for 8 -> 28
    each digit pixel becomes a 3x3 or 4x4 block (28 / 8 = 3.5).
    """
    rows = (np.arange(size) * X.shape[2]) // size
    cols = (np.arange(size) * X.shape[3]) // size
    return X[:, :, rows][:, :, :, cols]


def load_images(data_dir, n=None, size=None, seed=2023):
    """``(X, t, name)``: IDX data from ``data_dir`` (train and test pooled, first ``n``) or the digits.

    ``size`` resizes the digits (8x8) by nearest neighbour; IDX images keep their size.
    """
    from nncore.datasets import idx_dataset_name, load_digits, load_mnist

    if data_dir is not None:
        X_train, t_train, X_test, t_test = load_mnist(data_dir)
        X, t = np.concatenate([X_train, X_test]), np.concatenate([t_train, t_test])
        name = f"{idx_dataset_name(data_dir)} ({X.shape[2]}x{X.shape[3]})"
    else:
        X, t = load_digits()
        name = "scikit-learn digits (8x8)"
        if size is not None and size != X.shape[2]:
            X = upsample_nearest(X, size)
            name = f"scikit-learn digits, upsampled 8x8 -> {size}x{size} (nearest neighbour)"
    if n is not None and n < len(X):
        X, t = X[:n], t[:n]
    return X, t, name


def plot_accuracy(scores, model, data, path, *, ylim_low=0.8):
    """The course's accuracy-vs-epoch plot (training and validation), saved to ``path``.

    The title names the ``model`` on its first line and the ``data`` on its second.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(scores["train_acc"]) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(epochs, scores["train_acc"], label="Training")
    ax.plot(epochs, scores["val_acc"], label="Validation")
    finite = np.concatenate([scores["train_acc"], scores["val_acc"]])
    finite = finite[np.isfinite(finite)]
    low = min(ylim_low, np.floor(finite.min() * 20) / 20) if finite.size else 0
    ax.set_ylim(low, 1 + 0.01 * (1 - low))  # a little headroom: a curve at 100 % stays visible
    ax.set_xlim(1, max(len(epochs), 2))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epochs")
    ax.set_ylabel("Accuracy")
    ax.set_title(f"{model}\n{data}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_training(cnn, scores, n_train, x_val, y_val, epochs, seconds, data_name, title, path):
    """Print what the course examples print after training, then save their accuracy plot."""
    print(f"data: {data_name}; {n_train} training and {len(x_val)} validation images")
    print(f"trained {epochs} epochs in {seconds:.1f} s ({epochs * n_train / seconds:.0f} images/s)")
    print(f"final training accuracy:   {scores['train_acc'][-1]:.4f}")
    print(f"validation accuracy: {cnn.score(x_val, y_val):.4f} (best {np.nanmax(scores['val_acc']):.4f} "
          f"in epoch {int(np.nanargmax(scores['val_acc'])) + 1})")
    print(f"saved {plot_accuracy(scores, title, data_name, path)}")


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
