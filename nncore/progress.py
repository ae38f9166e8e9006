"""Progress bars that work in a terminal and in Jupyter, with or without ipywidgets.

``tqdm.auto`` draws a widget in Jupyter, but without ipywidgets it warns
"IProgress not found" (and then falls back to text). nncore uses it only when
ipywidgets can be imported, and plain text bars otherwise, so no setup warns.
"""

import importlib.util
import sys
from functools import cache


@cache
def _bar_class():
    """tqdm's class for this environment: the notebook-aware one only when ipywidgets exists."""
    try:
        widgets = importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # a broken or blocked ipywidgets
        widgets = False
    if widgets:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def progress_bar(total, disable=False, **kw):
    """A tqdm bar over ``total`` steps (a widget in Jupyter with ipywidgets, else text on stderr).

    ``disable=True`` gives a bar that draws nothing; ``kw`` goes to ``tqdm``
    (``unit``, ``desc``, ``dynamic_ncols``, ...).
    """
    return _bar_class()(total=total, disable=disable, **kw)


def message(text):
    """Print ``text`` as a line of its own on stderr, without breaking a progress bar being drawn."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
