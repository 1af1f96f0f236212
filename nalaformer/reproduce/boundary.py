"""The application-boundary sections of the study, runnable alone: where NaLa holds against softmax and the other
linear mixers (MQAR recall grid; ListOps, Pathfinder, pixel-level sequential images).

Inside the study they are the ``recall`` and ``long-range`` sections of ``nalaformer reproduce``; alone::

    python -m nalaformer.reproduce.boundary --mode reduced --out benchmarks/boundary-reduced

writes ``boundary.md``, its figures and ``results/{recall_grid,long_range}.json`` into ``--out``. Every cell keeps
its record in ``--out`` as soon as it finishes, and a finished cell is never trained again, so a run cut short (or
limited with ``--cells`` / ``--max-minutes``) continues where it stopped: full mode can be filled over several
sessions::

    python -m nalaformer.reproduce.boundary --mode full --out DIR --list            # the cells in order, done or not
    python -m nalaformer.reproduce.boundary --mode full --out DIR --cells 'mqar-T32-P4-*' --max-minutes 40
    python -m nalaformer.reproduce.boundary --mode full --out DIR --estimate        # what is left, in CPU time
"""

from __future__ import annotations

import argparse
import fnmatch
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
    only: set[str] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run the listed boundary sections of ``mode`` into ``out_dir``; returns ``{"recall_grid", "long_range"}``
    (with ``train=False`` only the cells already trained are summarised; ``only``: train only the cells with these
    names; ``deadline``: a ``time.monotonic()`` value after which no cell starts)."""
    from nalaformer.reproduce.long_range import long_range_section
    from nalaformer.reproduce.recall_grid import recall_section

    if mode not in BOUNDARY_MODES:
        raise ValueError(f"boundary sections: mode must be one of {BOUNDARY_MODES}, got {mode!r}")
    out_dir = Path(out_dir)
    options = {"workers": workers, "progress": progress, "train": train, "only": only, "deadline": deadline}
    results: dict[str, Any] = {"recall_grid": None, "long_range": None}
    if "recall" in sections:
        results["recall_grid"] = recall_section(out_dir, mode, **options)
    if "long-range" in sections:
        results["long_range"] = long_range_section(out_dir, mode, **options)
    return results


def select_cells(names: list[str], patterns: str) -> set[str]:
    """The names matching any of the comma-separated ``patterns`` (cell names or shell patterns, ``*`` and ``?``);
    a pattern matching none is an error (a typo would otherwise train nothing)."""
    chosen: set[str] = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        matched = fnmatch.filter(names, pattern)
        if not matched:
            examples = ", ".join(names[:2])
            raise ValueError(
                f"--cells: {pattern!r} matches no cell of these sections (cell names look like {examples})"
            )
        chosen.update(matched)
    if not chosen:
        raise ValueError("--cells: give at least one cell name or pattern")
    return chosen


def cell_listing(mode: str, sections: tuple[str, ...], out_dir: str | Path | None, only: set[str] | None) -> list[str]:
    """The cells of ``mode`` in the order they run: estimated CPU-seconds, and with ``out_dir`` whether finished
    (``done``) or not (``todo``); cells outside ``only`` are marked ``skip``."""
    from nalaformer.reproduce.boundary_budget import cell_seconds, planned_cells
    from nalaformer.reproduce.small_training import finished_record

    lines = []
    for section, cells in planned_cells(mode, sections).items():
        folder = None if out_dir is None else Path(out_dir) / "results" / _FOLDERS[section]
        for cell in cells:
            seconds = cell_seconds(cell, memory=section == "long-range")
            if folder is not None and finished_record(folder / f"{cell.name}.json", cell)[0] is not None:
                state = "done"
            else:
                state = "todo" if only is None or cell.name in only else "skip"
            lines.append(f"{state}  {cell.name}  ~{seconds:.0f} CPU-s")
    return lines


_FOLDERS = {"recall": "recall", "long-range": "long_range"}


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
    parser.add_argument("--out", help="output folder (resumed if it exists); required unless --estimate or --list")
    parser.add_argument("--sections", default=",".join(BOUNDARY_SECTIONS), help="recall, long-range")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="print the cell count and the estimated CPU time (of --cells if given; with --out, of the cells not "
        "finished there), and run nothing",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the cells in the order they run (done / todo with --out), run nothing",
    )
    parser.add_argument(
        "--cells",
        help="train only these cells: comma-separated names or shell patterns, e.g. 'mqar-T32-P4-*-w64-*,pixels-*' "
        "(--list shows the names); the report still covers every finished cell",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="start no cell after this many minutes (running cells finish); run again to continue",
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
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    only = None
    if args.cells is not None:
        from nalaformer.reproduce.boundary_budget import planned_cells

        names = [c.name for cells in planned_cells(args.mode, sections).values() for c in cells]
        only = select_cells(names, args.cells)
    if args.list:
        print("\n".join(cell_listing(args.mode, sections, args.out, only)))
        return 0
    if args.estimate:
        print("\n".join(_estimate(args.mode, sections, args.workers, args.out, only)))
        return 0
    if not args.out:
        parser.error("--out is required (unless --estimate or --list)")
    start = time.perf_counter()
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    run_boundary_sections(
        args.out,
        args.mode,
        sections,
        workers=args.workers,
        progress=True,
        train=not args.report_only,
        only=only,
        deadline=deadline,
    )
    print(f"report: {write_boundary_report(args.out, args.mode)} ({time.perf_counter() - start:.0f} s)")
    return 0


def _estimate(mode: str, sections: tuple[str, ...], workers: int, out: str | None, only: set[str] | None) -> list[str]:
    """The estimate's lines: the selected cells (all without ``only``), less those finished in ``out``."""
    from nalaformer.reproduce.boundary_budget import boundary_estimate, estimate_lines, planned_cells, step_seconds
    from nalaformer.reproduce.small_training import Cell, finished_record

    cells = planned_cells(mode, sections)
    lines = []
    if only is not None:
        cells = {section: [c for c in group if c.name in only] for section, group in cells.items()}
        lines.append(f"cells selected by --cells: {sum(len(g) for g in cells.values())}")
    if out is not None:
        left: dict[str, list[Cell]] = {}
        ratios = []
        for section, group in cells.items():
            left[section], measured, table = [], 0.0, 0.0
            for cell in group:
                record = finished_record(Path(out) / "results" / _FOLDERS[section] / f"{cell.name}.json", cell)[0]
                if record is None:
                    left[section].append(cell)
                elif record.get("cpu_seconds"):
                    measured += record["cpu_seconds"]
                    table += cell.steps * step_seconds(
                        cell.task, cell.data["seq_len"], cell.width, cell.batch_size, cell.mixer
                    )
            if table:
                ratios.append(
                    f"{section}: the finished cells' training took {measured / 60:.1f} CPU-min where the step-cost "
                    f"table gives {table / 60:.1f} ({measured / table:.2f}x)"
                )
        finished = sum(len(g) for g in cells.values()) - sum(len(g) for g in left.values())
        lines.append(
            f"finished in {out}: {finished}; the estimate below is of the {sum(len(g) for g in left.values())} left"
        )
        if ratios:
            lines += [*ratios, "(on this machine, expect the cells left to take about that multiple of the estimate)"]
        cells = left
    return lines + estimate_lines(boundary_estimate(mode, sections, workers=max(1, workers), cells=cells))


if __name__ == "__main__":
    raise SystemExit(main())
