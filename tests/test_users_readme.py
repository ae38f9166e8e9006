"""The README's scikit-learn block runs as written, and no install hint names the other project on the index."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_block(heading):
    """The first ```python block after ``heading`` in the README."""
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_scikit_learn_block_runs_fast_variant():
    code = python_block("## scikit-learn")
    assert "epochs=20" in code and "random_state=0" in code
    scope = {}
    exec(code.replace("epochs=20", "epochs=1"), scope)  # the block itself, one epoch per fit
    search = scope["search"]
    assert np.dtype(search.best_estimator_.model_.dtype) == np.float32
    assert 0 < search.best_score_ <= 1


@pytest.mark.slow
def test_readme_scikit_learn_block_runs_as_written():
    scope = {}
    exec(python_block("## scikit-learn"), scope)
    assert scope["search"].best_score_ > 0.9


def test_install_hints_work_from_a_fresh_environment():
    """``pip install nncore`` would install another project (the name is taken on the index)."""
    name = re.search(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert name == "nncore-cnn"
    texts = {"README.md": README, "examples/README.md": (ROOT / "examples" / "README.md").read_text()}
    for path in [*ROOT.glob("nncore/**/*.py"), *ROOT.glob("examples/*.py")]:
        texts[str(path.relative_to(ROOT))] = path.read_text()
    for where, text in texts.items():
        for hint in re.findall(r"pip install [^`\n]*", text):
            assert not re.match(r'pip install (-U )?"?nncore(\[|"|\s|$)', hint), f"{where}: {hint}"
