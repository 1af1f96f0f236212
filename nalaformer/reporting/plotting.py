"""The one way the package loads matplotlib (an optional dependency: the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_EXTRA_HINT = "pip install 'nalaformer[plot]' (or pip install matplotlib)"


def load_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only written to files).

    Raises:
        ImportError: matplotlib is not installed; the message names the ``plot`` extra. Callers whose figures are
            optional catch it, say so once, and go on with their tables and JSON.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(f"figures need matplotlib, which is not installed: {PLOT_EXTRA_HINT}") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``figure``, write it to ``path`` (creating its folder) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    load_pyplot().close(figure)
    return path
