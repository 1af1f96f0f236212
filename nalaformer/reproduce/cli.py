"""``nalaformer reproduce``: the small-scale reproduction study and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from nalaformer.reproduce.plan import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the quick mode (about 6 minutes on 2 CPU cores)")
    parser.add_argument("--mode", choices=MODES, default=None, help="quick, full (hours) or tiny (seconds, for tests)")
    parser.add_argument(
        "--out", default=None, help="study folder (default: runs/reproduce-<mode>); resumed if it exists"
    )
    parser.add_argument("--workers", type=int, default=None, help="training runs in parallel (default: min(2, CPUs))")
    parser.add_argument(
        "--sections",
        default="spikiness,accuracy,efficiency,recall,long-range",
        help="comma-separated parts to run: spikiness, accuracy, efficiency, recall (MQAR grid), long-range, "
        "conversion (pretrained MiniLM -> each linear map; not in the default set)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from nalaformer.reproduce.study import run_study

    if args.quick and args.mode not in (None, "quick"):
        raise ValueError(f"--quick conflicts with --mode {args.mode}")
    mode = args.mode or ("quick" if args.quick else "full")
    out = Path(args.out or f"runs/reproduce-{mode}")
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    if "conversion" in sections:
        from nalaformer.reproduce.conversion import conversion_section

        conversion_section(out, mode, progress=not args.no_progress)
        print(f"conversion report: {out / 'conversion.md'}")
        sections = tuple(s for s in sections if s != "conversion")
        if not sections:
            return 0
    results = run_study(out, mode, workers=args.workers, sections=sections, progress=not args.no_progress)
    print(f"report: {out / 'report.md'}")
    for claim in results["claims"]:
        print(f"- {claim['claim']}: {claim['verdict']}")
    problems = len(results["failures"]) + len(results["missing_runs"])
    if problems:
        print(f"{problems} training run(s) did not finish; run the same command again to resume")
    return 1 if problems else 0
