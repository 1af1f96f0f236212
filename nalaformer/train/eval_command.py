"""``nalaformer eval RUN_DIR``: evaluate a run's checkpoint; prints the metrics and appends them to eval.jsonl."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nalaformer.reporting import json_line, to_json
from nalaformer.train.recipes import load_recipe
from nalaformer.train.recipes.common import read_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer eval``."""
    parser.add_argument("run_dir", help="the run folder written by `nalaformer train`")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the newest valid one)")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="data to evaluate (default: val)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default: 64)")
    parser.add_argument(
        "--text", default=None, help="language-model runs: loss and perplexity on this UTF-8 text file instead"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one JSON object of metrics."""
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    recipe_name, _, _ = read_run_config(args.run_dir)
    recipe = load_recipe(recipe_name)
    if args.text is not None:
        if not hasattr(recipe, "evaluate_text"):
            raise ValueError(f"--text needs a language-model run; {args.run_dir!r} is a {recipe_name!r} run")
        metrics = recipe.evaluate_text(
            args.run_dir,
            args.text,
            checkpoint=args.checkpoint,
            ema=args.ema,
            device=args.device,
            batch_size=args.batch_size,
        )
        record = {"split": "text", "text": str(args.text), "ema": args.ema, **metrics}
        with open(Path(args.run_dir) / "eval.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json_line(record) + "\n")
        print(json.dumps(to_json(record), indent=1))
        return 0
    metrics = recipe.evaluate_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        split=args.split,
        ema=args.ema,
        device=args.device,
        batch_size=args.batch_size,
    )
    record = {"split": args.split, "ema": args.ema, **metrics}
    with open(Path(args.run_dir) / "eval.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json_line(record) + "\n")
    print(json.dumps(to_json(record), indent=1))
    return 0
