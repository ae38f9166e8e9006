"""The main job, ``python -m nncore``: output lines, --out files, MNIST from IDX files."""

import re
import subprocess
import sys

import numpy as np
import pytest

from nncore import CNN
from nncore.__main__ import digits_split, main, mnist_cnn, reference_cnn, validation_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def accuracy_line(out):
    match = re.search(r"^test accuracy: (\d\.\d{4})$", out, re.MULTILINE)
    assert match, out
    return float(match.group(1))


def test_digits_split_and_reference_cnn():
    X_train, X_test, t_train, t_test = digits_split(2023)
    assert X_train.shape == (1437, 1, 8, 8) and X_test.shape == (360, 1, 8, 8)
    assert t_train.shape == (1437, 10) and X_train.dtype == np.float32
    X_fit, X_val, t_fit, t_val = validation_split(X_train, t_train, 0.1, 2023)
    assert len(X_fit) + len(X_val) == 1437 and len(X_val) == 144
    assert set(t_val.argmax(axis=1)) == set(range(10))  # stratified
    assert validation_split(X_train, t_train, 0, 0)[1] is None
    assert reference_cnn("numpy", 0).summary((1, 8, 8), print_fn=None)
    assert mnist_cnn("numpy", 0).summary((1, 28, 28), print_fn=None)


def test_short_run_with_out(tmp_path, capsys):
    assert main(["--epochs", "2", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accuracy = accuracy_line(out)
    assert re.search(r"^training throughput: \d+ images/s", out, re.MULTILINE)
    assert "training on 1293 digits (144 held out for validation), testing on 360" in out
    # The saved model is the trained one: it scores exactly the printed accuracy.
    model = CNN.load(tmp_path / "model.npz")
    _, X_test, _, t_test = digits_split(2023)
    assert round(model.score(X_test, t_test), 4) == accuracy
    png = tmp_path / "learning_curve.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10000
    rows = (tmp_path / "learning_curve.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_error,train_acc,val_error,val_acc" and len(rows) == 3
    assert all(np.isfinite(float(v)) for v in rows[2].split(","))


def test_no_validation(tmp_path, capsys):
    assert main(["--epochs", "1", "--quiet", "--val-fraction", "0", "--out", str(tmp_path)]) == 0
    assert "training on 1437 digits, testing on 360" in capsys.readouterr().out
    assert (tmp_path / "learning_curve.png").is_file()


def test_mnist_from_idx_files(tmp_path, capsys, mnist_idx):
    data = mnist_idx(n_train=100, n_test=30)
    assert main(["--data", "mnist", "--data-dir", str(data), "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training on 90 MNIST images (10 held out for validation), testing on 30" in out
    accuracy_line(out)


def test_bad_arguments(tmp_path, capsys):
    assert main(["--data", "mnist", "--data-dir", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "cannot load MNIST" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path)])  # --data-dir without --data mnist
    with pytest.raises(SystemExit):
        main(["--val-fraction", "1.5"])


@pytest.mark.slow
def test_default_run_as_documented():
    """The README's main job: >= 0.98 test accuracy on the digits, well under a minute."""
    result = subprocess.run([sys.executable, "-m", "nncore", "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert accuracy_line(result.stdout) >= 0.98
    seconds = float(re.search(r"images/s \((\d+\.\d) s\)", result.stdout).group(1))
    assert seconds < 60


def test_help_is_plain_text_and_names_the_backend_variable(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":meth:" not in text and ":func:" not in text  # no reStructuredText
    flat = " ".join(text.split())
    assert "NNCORE_BACKEND if set, else numpy" in flat and "numpy (default)" not in flat
    assert "fetch_openml" in flat  # --data mnist without --data-dir downloads: said plainly


def test_backend_none_reads_nncore_backend(monkeypatch, capsys):
    pytest.importorskip("array_api_strict")
    assert reference_cnn().backend.name == "numpy" and mnist_cnn().backend.name == "numpy"
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    assert reference_cnn().backend.name == "array_api_strict"
    assert main(["--epochs", "1", "--quiet", "--val-fraction", "0"]) == 0
    assert "backend array_api_strict" in capsys.readouterr().out
    assert main(["--epochs", "1", "--quiet", "--val-fraction", "0", "--backend", "numpy"]) == 0
    assert "backend numpy" in capsys.readouterr().out
    monkeypatch.setenv("NNCORE_BACKEND", "nosuch")
    assert main(["--epochs", "1", "--quiet"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_any_idx_folder_is_named_by_its_folder(tmp_path, capsys, mnist_idx):
    fashion = mnist_idx(n_train=100, n_test=30).rename(tmp_path / "fashion-mnist")
    assert main(["--data", "mnist", "--data-dir", str(fashion), "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training on 90 fashion-mnist images (10 held out for validation), testing on 30" in out
    accuracy_line(out)
