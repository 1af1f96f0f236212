"""``nalaformer train image|lm``: train with a recipe, writing config, metrics and checkpoints to one run folder."""

from __future__ import annotations

import argparse
import dataclasses
import json

from nalaformer.reporting import to_json
from nalaformer.train.config import add_config_arguments, apply_arguments
from nalaformer.train.distributed import broadcast_object, setup_distributed, teardown_distributed
from nalaformer.train.recipes import RECIPES, load_recipe
from nalaformer.train.recipes.common import default_run_dir

EPILOG = """\
Options: training fields are top-level flags (--steps 200 --lr 3e-4), the others carry their section
(--data.name digits --model.mixer nala); write '_' in a field name as '-' (--warmup-steps); booleans take
--flag / --no-flag. The run folder (--run-dir, default runs/<recipe>-<time>) receives config.json, metrics.jsonl
and checkpoints/. --resume continues the newest valid checkpoint of --run-dir exactly (or give a checkpoint folder);
--overwrite replaces the run a --run-dir holds (without either, a non-empty --run-dir is refused). One process per
run folder (a lock); Ctrl-C stops with one line naming the checkpoint to resume from.
Distributed: torchrun --nproc-per-node N -m nalaformer train ... (gloo on CPU, NCCL on GPUs).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per recipe, each with a flag per configuration field."""
    subparsers = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name, (_, help_text) in RECIPES.items():
        recipe_parser = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_config_arguments(recipe_parser, load_recipe(name).default_config())


def run(args: argparse.Namespace) -> int:
    """Build the configuration (validated before any data is read), train, print the final metrics."""
    recipe = load_recipe(args.recipe)
    config = apply_arguments(recipe.default_config(), args)
    context = setup_distributed(config.train.device)
    try:
        if config.train.run_dir is None:
            # Every rank must write to the folder rank 0 named.
            run_dir = broadcast_object(default_run_dir(args.recipe), context)
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, run_dir=run_dir))
        result = recipe.run(config)
    finally:
        teardown_distributed()
    if context.is_main:
        summary = {"run_dir": str(result.run_dir), "step": result.step, **result.metrics}
        print(json.dumps(to_json(summary), indent=1))
    return 0
