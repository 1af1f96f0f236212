"""Markdown tables for the reports (``nalaformer bench`` summaries, the reproduction study's ``report.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _cell(value: Any, float_format: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format(value, float_format)
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], float_format: str = ".4g") -> str:
    """A pipe table: the header row, the ``---`` row, then one line per row (no trailing newline).

    Args:
        header (Sequence[str]): the column titles.
        rows (Iterable[Sequence]): the cells of each row, as many as ``header``. Strings are written as they are,
            floats with ``float_format``, anything else with ``str``.
        float_format (str): format spec of float cells. Default: ".4g".
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(rows):
        cells = [_cell(value, float_format) for value in row]
        if len(cells) != len(header):
            raise ValueError(f"markdown_table: row {index} has {len(cells)} cells, expected {len(header)} (the header)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
