"""nncore.progress: text bars without ipywidgets (no "IProgress not found" warning), messages on a line of their own."""

import re
import sys
import types
import warnings

import pytest
import tqdm

from nncore import progress


@pytest.fixture
def jupyter_without_ipywidgets(monkeypatch):
    """This process as a Jupyter kernel sees it, with ipywidgets missing and tqdm's auto modules not yet loaded."""
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    progress._bar_class.cache_clear()
    yield
    progress._bar_class.cache_clear()


def test_tqdm_auto_would_warn_here(jupyter_without_ipywidgets):
    # The oracle: the setup reproduces the problem that nncore.progress avoids.
    import importlib

    with pytest.warns(tqdm.TqdmWarning, match="IProgress not found"):
        importlib.import_module("tqdm.autonotebook")


def test_progress_bar_without_ipywidgets_is_plain_text_and_silent(jupyter_without_ipywidgets, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress.progress_bar(4, unit="epoch")
        bar.update(2)
        bar.close()
    assert type(bar) is tqdm.std.tqdm
    assert "2/4" in capsys.readouterr().err
    assert "tqdm.autonotebook" not in sys.modules


def test_progress_bar_with_ipywidgets_uses_tqdm_auto(monkeypatch):
    spec = types.SimpleNamespace(name="ipywidgets")
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: spec if name == "ipywidgets" else None)
    progress._bar_class.cache_clear()
    try:
        from tqdm.auto import tqdm as auto_tqdm

        assert progress._bar_class() is auto_tqdm
    finally:
        progress._bar_class.cache_clear()


def test_disabled_bar_draws_nothing(capsys):
    bar = progress.progress_bar(3, disable=True)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""


def test_message_gets_its_own_line_while_a_bar_is_drawn(capsys):
    bar = progress.progress_bar(10, file=sys.stderr, ncols=60)
    bar.update(3)
    progress.message("fit: interrupted in epoch 4 of 10")
    bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    # The bar's line is cleared (\r) before the message, which ends with its own newline.
    assert re.search(r"\r +\rfit: interrupted in epoch 4 of 10\n", err), repr(err)
