"""The application-boundary sections of the study, runnable alone: where NaLa holds against softmax and the other
linear mixers (MQAR recall grid; ListOps, Pathfinder, pixel-level sequential images).

Inside the study they are the ``recall`` and ``long-range`` sections of ``nalaformer reproduce``; alone::

    python -m nalaformer.reproduce.boundary --mode reduced --out benchmarks/boundary-reduced

writes ``boundary.md``, its figures and ``results/{recall_grid,long_range}.json`` into ``--out`` (resumable: cells
with a result are not retrained).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from nalaformer.reporting import read_json
from nalaformer.reproduce.study import BOUNDARY_SECTIONS

BOUNDARY_MODES = ("tiny", "quick", "reduced", "map", "full")


def run_boundary_sections(
    out_dir: str | Path,
    mode: str,
    sections: tuple[str, ...],
    *,
    workers: int = 1,
    progress: bool = False,
    train: bool = True,
) -> dict[str, Any]:
    """Run the listed boundary sections of ``mode`` into ``out_dir``; returns ``{"recall_grid", "long_range"}``
    (with ``train=False`` only the cells already trained are summarised)."""
    from nalaformer.reproduce.long_range import long_range_section
    from nalaformer.reproduce.recall_grid import recall_section

    if mode not in BOUNDARY_MODES:
        raise ValueError(f"boundary sections: mode must be one of {BOUNDARY_MODES}, got {mode!r}")
    out_dir = Path(out_dir)
    results: dict[str, Any] = {"recall_grid": None, "long_range": None}
    if "recall" in sections:
        results["recall_grid"] = recall_section(out_dir, mode, workers=workers, progress=progress, train=train)
    if "long-range" in sections:
        results["long_range"] = long_range_section(out_dir, mode, workers=workers, progress=progress, train=train)
    return results


def write_boundary_report(out_dir: str | Path, mode: str) -> Path:
    """``boundary.md`` and its figures from the JSON the sections wrote into ``out_dir``."""
    from nalaformer.reproduce.boundary_report import boundary_figures, boundary_lines

    out_dir = Path(out_dir)
    grid = read_json(out_dir / "results" / "recall_grid.json")
    long_range = read_json(out_dir / "results" / "long_range.json")
    figures = boundary_figures(out_dir, grid, long_range)
    lines = [f"# Application boundary ({mode} mode)", "", *boundary_lines(grid, long_range, figures, level="#")]
    path = out_dir / "boundary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=BOUNDARY_MODES, default="quick")
    parser.add_argument("--out", help="output folder (resumed if it exists); required unless --estimate")
    parser.add_argument("--sections", default=",".join(BOUNDARY_SECTIONS), help="recall, long-range")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--estimate", action="store_true", help="print the cell count and the estimated CPU time, and run nothing"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: summarise the cells already in --out (the report lists the cells not run)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - set(BOUNDARY_SECTIONS)
    if unknown:
        raise ValueError(f"--sections: unknown {sorted(unknown)}; choose from {BOUNDARY_SECTIONS}")
    if args.estimate:
        from nalaformer.reproduce.boundary_budget import boundary_estimate, estimate_lines

        print("\n".join(estimate_lines(boundary_estimate(args.mode, sections, workers=max(1, args.workers)))))
        return 0
    if not args.out:
        parser.error("--out is required (unless --estimate)")
    start = time.perf_counter()
    run_boundary_sections(
        args.out, args.mode, sections, workers=args.workers, progress=True, train=not args.report_only
    )
    print(f"report: {write_boundary_report(args.out, args.mode)} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
