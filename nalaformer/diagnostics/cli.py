"""``nalaformer diagnose``: spikiness diagnostics of a trained run, or the controlled study alone.

Writes ``diagnostics.json`` (or ``controlled.json``) and one PNG per figure into ``--out`` and prints a summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _temperatures(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--temperatures must be comma-separated numbers, got {text!r}") from error
    if any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"--temperatures must all be > 0, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer diagnose``."""
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="run folder of `nalaformer train` (newest valid checkpoint) or a checkpoint",
    )
    parser.add_argument("--out", required=True, help="folder for diagnostics.json and the PNG plots")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="data of the batch (default: val)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights")
    parser.add_argument("--batch-size", type=int, default=8, help="samples in the diagnosed batch (default: 8)")
    parser.add_argument("--max-queries", type=int, default=256, help="query rows per sample and block (default: 256)")
    parser.add_argument(
        "--temperatures",
        type=_temperatures,
        default=[1.0, 2.0, 4.0, 8.0],
        help="NaLa norm temperatures of the post-hoc sweep, comma-separated (default: 1,2,4,8; '' for none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query subsets (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--no-plots", action="store_true", help="write JSON only")
    parser.add_argument("--no-controlled", action="store_true", help="skip the controlled study")
    parser.add_argument(
        "--controlled-only", action="store_true", help="run only the controlled study (no checkpoint needed)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the diagnostics and print the summary table."""
    from nalaformer.diagnostics.controlled import controlled_entropy_study, format_controlled_table
    from nalaformer.diagnostics.report import diagnose, format_report_table
    from nalaformer.reporting import write_json

    for name in ("batch_size", "max_queries"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    out = Path(args.out)
    if args.controlled_only:
        study = controlled_entropy_study()
        files = [write_json(study, out / "controlled.json")]
        if not args.no_plots:
            from nalaformer.diagnostics.plots import plot_controlled_study

            files.append(plot_controlled_study(study, out / "controlled_entropy_vs_query_norm.png"))
        print(format_controlled_table(study))
        print("wrote " + ", ".join(str(f) for f in files))
        return 0
    if args.checkpoint is None:
        raise ValueError("--checkpoint is required (a run folder or checkpoint), or pass --controlled-only")
    from nalaformer.diagnostics.runs import load_run

    loaded = load_run(args.checkpoint, split=args.split, ema=args.ema, batch_size=args.batch_size, device=args.device)
    report = diagnose(
        loaded.model,
        loaded.inputs,
        out,
        max_queries=args.max_queries,
        max_samples=None,
        temperatures=args.temperatures,
        controlled=not args.no_controlled,
        plots=not args.no_plots,
        seed=args.seed,
        source=loaded.source,
    )
    source = loaded.source
    print(
        f"{source['recipe']} run {source['run_dir']} (step {source['step']}, model {source['model']}, "
        f"{source['samples']} {source['split']} samples of {source['data']})"
    )
    print(format_report_table(report))
    print("wrote " + ", ".join(report["files"]))
    return 0
