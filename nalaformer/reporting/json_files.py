"""Strict JSON: the one convention of every JSON and JSONL file the package writes.

Non-finite floats (NaN, inf) are written as ``null`` (JSON has no NaN; ``null`` reads back as ``None`` in Python and
as a missing value elsewhere), numpy scalars and arrays as plain numbers and lists. A file is written through a
temporary file and a rename, so it is either whole or absent.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """Replace non-finite floats by None and numpy scalars / arrays by Python values, recursively."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_line(value: Any) -> str:
    """``value`` as one line of strict JSON (for JSONL logs), without the newline."""
    return json.dumps(to_json(value), allow_nan=False)


def write_json(value: Any, path: str | Path, indent: int = 1) -> Path:
    """Write ``value`` as strict JSON to ``path`` (parent folders created, whole file or none); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(to_json(value), indent=indent, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_json(path: str | Path) -> Any:
    """The JSON document at ``path``, or ``None`` when the file does not exist (a result not written yet)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
