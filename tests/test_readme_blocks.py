"""The README's course-API code blocks run as written, one after the other, as a reader would paste them.

(The scikit-learn block has its own test in test_users_readme.py; the blocks on backends and processes
are fragments, and the cluster block needs a Dask cluster.)
"""

import importlib.util
import re
from pathlib import Path

import numpy as np

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def block_after(heading):
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def without_gpu_lines(code):
    """Lines that move a model to CuPy are left out where CuPy is not installed."""
    if importlib.util.find_spec("cupy") is not None:
        return code
    return "\n".join(line for line in code.splitlines() if '"cupy"' not in line)


def test_quickstart_saving_and_own_layer_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cnn.save("digits.npz") writes here
    scope = {}
    exec(block_after("## Quickstart"), scope)
    assert 0.8 < scope["cnn"].score(scope["X"][1500:], scope["t"][1500:]) <= 1.0
    exec(without_gpu_lines(block_after("## Saving, loading, moving")), scope)
    assert (tmp_path / "digits.npz").exists()
    exec(block_after("### Your own layer"), scope)
    X = np.random.default_rng(0).random((20, 5))
    scores = scope["cnn"].fit(X, np.eye(10)[np.arange(20) % 10], epochs=2, verbose=False)
    assert np.isfinite(scores["train_error"]).all()
