"""How the tools write what they measured: Markdown tables, strict JSON files, and matplotlib figures.

Shared by ``train``, ``diagnostics``, ``bench`` and ``reproduce`` so each kind of output is written one way. It imports
nothing else from the package, so any level may use it.
"""

from nalaformer.reporting.json_files import json_line, read_json, to_json, write_json
from nalaformer.reporting.markdown import markdown_table
from nalaformer.reporting.plotting import load_pyplot, save_figure

__all__ = ["json_line", "load_pyplot", "markdown_table", "read_json", "save_figure", "to_json", "write_json"]
