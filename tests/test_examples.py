"""Smoke tests: every example runs with --quick and writes what its README entry promises.

The examples are run in this process (their ``main(argv)``) for speed, with
matplotlib's Agg backend; one is also run as a script, as a user would.
"""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def agg(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import their helper module _shared


def run_example(name, *argv):
    """Call ``examples/<name>.py``'s ``main(argv)``; returns its exit code."""
    module = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")
    return module["main"](list(argv))


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000



def test_every_example_is_tested_and_listed_in_the_readme():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    assert scripts == {"course_quickstart", "untraditional_architecture", "grid_search", "image_filters", "mnist"}
    readme = (EXAMPLES / "README.md").read_text()
    for name in scripts:
        assert f"examples/{name}.py" in readme


def test_course_quickstart(tmp_path, capsys):
    assert run_example("course_quickstart", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "validation accuracy: 0." in out and "scikit-learn digits (8x8)" in out
    assert_png(tmp_path / "course_quickstart_accuracy.png")


def test_course_quickstart_runs_as_a_script(tmp_path):
    # This checkout's nncore, not whichever copy is installed.
    path = os.pathsep.join(filter(None, [str(EXAMPLES.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": path}
    result = subprocess.run([sys.executable, str(EXAMPLES / "course_quickstart.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "validation accuracy" in result.stdout
    assert_png(tmp_path / "course_quickstart_accuracy.png")


def test_untraditional_architecture(tmp_path, capsys):
    assert run_example("untraditional_architecture", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "upsampled 8x8 -> 28x28" in out and "(None, 1, 13, 9)" in out  # the asymmetric-stride conv
    assert_png(tmp_path / "untraditional_accuracy.png")


def test_untraditional_architecture_on_idx_files(tmp_path, capsys, mnist_idx):
    data = mnist_idx(n_train=200, n_test=50)
    assert run_example("untraditional_architecture", "--quick", "--out", str(tmp_path), "--data-dir", str(data)) == 0
    assert "MNIST (28x28)" in capsys.readouterr().out


def test_upsample_nearest():
    sys.path.insert(0, str(EXAMPLES))
    from _shared import upsample_nearest

    X = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    big = upsample_nearest(X, 28)
    assert big.shape == (2, 1, 28, 28)
    assert set(np.unique(big)) == set(np.unique(X))  # nearest neighbour: no new values
    np.testing.assert_array_equal(big[:, :, 0, :4], X[:, :, 0, :1].repeat(4, axis=-1))
    np.testing.assert_array_equal(big[:, :, 27, 27], X[:, :, 7, 7])


def test_grid_search(tmp_path, capsys):
    assert run_example("grid_search", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "best: eta=" in out and "held-out digits" in out
    for name in ("grid_search_train.png", "grid_search_test.png"):
        assert_png(tmp_path / name)
    lines = (tmp_path / "grid_search.csv").read_text().splitlines()
    assert lines[0] == "eta,lambda,mean_train_accuracy,mean_test_accuracy" and len(lines) == 1 + 4


def test_image_filters(tmp_path, capsys):
    pytest.importorskip("PIL", reason="loading china.jpg needs Pillow")
    assert run_example("image_filters", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "| 3x3 |" in out and "| 9x9 |" in out
    assert_png(tmp_path / "image_filters.png")
    assert_png(tmp_path / "filter_timings.png")
    rows = (tmp_path / "filter_timings.csv").read_text().splitlines()
    assert rows[0].startswith("size,direct_ms,separable_ms,fft_ms") and len(rows) == 3
    for row in rows[1:]:
        values = dict(zip(rows[0].split(","), map(float, row.split(","))))
        assert values["max_abs_diff_separable"] < 1e-10 and values["max_abs_diff_fft"] < 1e-10
    assert "| kernel | direct (ms) |" in (tmp_path / "filter_timings.md").read_text()


def test_mnist_without_data_says_what_it_needs(tmp_path, capsys):
    assert run_example("mnist", "--out", str(tmp_path)) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert run_example("mnist", "--data-dir", str(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mnist_on_tiny_idx_files(tmp_path, capsys, mnist_idx):
    data = mnist_idx()
    assert run_example("mnist", "--quick", "--data-dir", str(data), "--out", str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "test accuracy: " in out and "NOT reproduced" in out  # random images: nothing to learn
    assert_png(tmp_path / "out" / "mnist_accuracy.png")
    assert (tmp_path / "out" / "mnist_model.npz").is_file()


def test_mnist_quick_without_data_runs_on_synthetic_idx_files(tmp_path, capsys):
    assert run_example("mnist", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "training on 900 synthetic images" in out
    assert "is about MNIST; this data is synthetic, so it is not checked here" in out
    assert "reproduced" not in out
    assert sorted(p.name for p in (tmp_path / "synthetic-idx").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.3  # ten bright squares in noise: learnable, unlike random pixels (0.1)


def test_mnist_verdict_only_for_mnist(tmp_path, capsys, mnist_idx):
    fashion = mnist_idx(n_train=120, n_test=40).rename(tmp_path / "fashion-mnist")
    assert run_example("mnist", "--quick", "--data-dir", str(fashion), "--out", str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "training on 108 fashion-mnist images" in out and "this data is fashion-mnist" in out
    assert "reproduced" not in out
    # --dataset-name says what the folder's name does not.
    assert run_example("mnist", "--quick", "--data-dir", str(fashion), "--dataset-name", "MNIST",
                       "--out", str(tmp_path / "out")) == 0
    assert "claim of 99% test accuracy: NOT reproduced" in capsys.readouterr().out


def test_examples_follow_nncore_backend(tmp_path, capsys, monkeypatch):
    pytest.importorskip("array_api_strict")
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    assert run_example("course_quickstart", "--quick", "--out", str(tmp_path)) == 0
    assert "CNN: backend array_api_strict" in capsys.readouterr().out
    assert run_example("mnist", "--quick", "--train-size", "100", "--out", str(tmp_path)) == 0
    assert "backend array_api_strict" in capsys.readouterr().out
    assert run_example("course_quickstart", "--quick", "--backend", "numpy", "--out", str(tmp_path)) == 0
    assert "CNN: backend numpy" in capsys.readouterr().out
    monkeypatch.setenv("NNCORE_BACKEND", "nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        run_example("course_quickstart", "--quick", "--out", str(tmp_path))


def test_backend_help_names_the_variable(capsys):
    with pytest.raises(SystemExit):
        run_example("grid_search", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "NNCORE_BACKEND if set, else numpy" in text and "numpy (default)" not in text
