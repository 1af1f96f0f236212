"""Seed statistics of the boundary sections, and the rule that calls one mixer better than another.

A difference is called only when it exceeds the seed noise: the gap between two means must be larger than the
larger of their standard deviations (the same rule as the study's ``compare``), and with fewer than two seeds on
either side no call is made at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """``{"mean", "std" (None with fewer than 2 values), "n"}`` over the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "n": len(finite),
    }


def call_best(task: str, entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The best mixer of one task and whether its lead over the runner-up is beyond seed noise.

    Args:
        task: the task's label (copied into the row).
        entries: mixer -> ``{"mean", "std", "n"}`` of a higher-is-better metric.

    Returns:
        ``{"task", "best", "runner_up", "margin", "noise", "seeds", "verdict"}``; ``None`` without two measured
        mixers. ``verdict`` is ``"ahead beyond seed noise"``, ``"within seed noise"`` or ``"not called (one seed)"``.
    """
    ranked = sorted(
        ((name, e) for name, e in entries.items() if e.get("mean") is not None), key=lambda item: -item[1]["mean"]
    )
    if len(ranked) < 2:
        return None
    (best, a), (second, b) = ranked[0], ranked[1]
    margin = a["mean"] - b["mean"]
    seeds = min(a["n"], b["n"])
    noise = max(a["std"] or 0.0, b["std"] or 0.0) if seeds >= 2 else None
    if noise is None:
        verdict = "not called (one seed)"
    elif margin > noise:
        verdict = "ahead beyond seed noise"
    else:
        verdict = "within seed noise"
    return {
        "task": task,
        "best": best,
        "runner_up": second,
        "margin": margin,
        "noise": noise,
        "seeds": seeds,
        "verdict": verdict,
    }


def calls(task: str, entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`call_best` over every mixer, and, when that call rests on fewer seeds than some mixers have, the same
    call among the mixers with the most seeds (two or more of them, two seeds or more), labelled
    ``"<task>, mixers with n seeds"``: a one-seed leader does not hide the comparison the seeds can decide."""
    rows = [row] if (row := call_best(task, entries)) is not None else []
    counts = [e["n"] for e in entries.values() if e.get("mean") is not None]
    most = max(counts, default=0)
    if rows and rows[0]["seeds"] < most and most >= 2 and counts.count(most) >= 2:
        seeded = {name: e for name, e in entries.items() if e.get("mean") is not None and e["n"] == most}
        rows.append(call_best(f"{task}, mixers with {most} seeds", seeded))
    return rows
