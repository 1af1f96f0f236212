"""The boundary sections' best-mixer calls: which mixer leads a task and whether its lead is beyond seed noise.

A lead is called by the study's one rule (:mod:`nalaformer.reproduce.seeds`): the margin between the two means must
exceed twice the standard error of that difference, and with fewer than two seeds on either side no call is made.
"""

from __future__ import annotations

from typing import Any

from nalaformer.reproduce.seeds import seed_call

# seed_call's word -> the summary table's (the leader's margin is never negative, so never "worse")
VERDICTS = {
    "better": "ahead beyond seed noise",
    "within seed noise": "within seed noise",
    "not called": "not called (one seed)",
}


def call_best(task: str, entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The best mixer of one task and whether its lead over the runner-up is beyond seed noise.

    Args:
        task: the task's label (copied into the row).
        entries: mixer -> ``{"mean", "std", "n"}`` of a higher-is-better metric.

    Returns:
        ``{"task", "best", "runner_up", "margin", "noise", "seeds", "verdict"}``; ``None`` without two measured
        mixers. ``noise`` is the threshold the margin is judged against, twice the standard error of the difference
        of the two means (None with one seed); ``verdict`` is ``"ahead beyond seed noise"``, ``"within seed noise"``
        or ``"not called (one seed)"``.
    """
    ranked = sorted(
        ((name, e) for name, e in entries.items() if e.get("mean") is not None), key=lambda item: -item[1]["mean"]
    )
    if len(ranked) < 2:
        return None
    (best, a), (second, b) = ranked[0], ranked[1]
    judged = seed_call(a, b)
    verdict = VERDICTS[judged["call"]]
    return {
        "task": task,
        "best": best,
        "runner_up": second,
        "margin": judged["difference"],
        "noise": judged["noise"],
        "seeds": min(a["n"], b["n"]),
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
