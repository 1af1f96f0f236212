"""Reading a run folder back: the one loader behind ``nalaformer eval``, ``generate``, ``harness`` and ``diagnose``.

A run folder written by ``nalaformer train`` holds ``config.json`` (naming its recipe) and ``checkpoints/step_*``.
:func:`load_run` finds the folder from any path inside it, rebuilds the model (and, when asked, the data) with the
recipe's own ``rebuild``, and loads a checkpoint's weights (strict, manifest-verified).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nalaformer.train.checkpoint import checkpoint_step, load_weights, resolve_checkpoint

# A checkpoint folder sits at <run>/checkpoints/step_N: two levels; one more allows a path to a file inside it.
_RUN_DIR_DEPTH = 3


@dataclass
class TrainedRun:
    """A run rebuilt from its folder.

    Attributes:
        run_dir: the run folder.
        recipe: the recipe that trained it (``"image"``, ``"lm"``).
        config: the recipe's configuration, as saved (image runs: augmentation off).
        model: the model in eval mode, on the CPU, with the checkpoint's weights.
        checkpoint: the checkpoint folder the weights come from.
        step: optimizer steps behind that checkpoint.
        datasets: the recipe's datasets (``with_data=True``), else ``None``.
        tokenizer: the run's text tokenizer (text language-model runs), else ``None``.
    """

    run_dir: Path
    recipe: str
    config: Any
    model: nn.Module
    checkpoint: Path
    step: int
    datasets: Any = None
    tokenizer: Any = None


def find_run_dir(path: str | Path) -> Path:
    """The run folder of ``path``: ``path`` itself or the nearest parent (up to 3 levels) holding ``config.json``."""
    path = Path(path)
    for candidate in (path, *list(path.parents)[:_RUN_DIR_DEPTH]):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{str(path)!r}: no config.json there or in its parents; expected a run folder written by `nalaformer train` "
        "or one of its checkpoints/step_* folders"
    )


def load_run(
    target: str | Path,
    *,
    checkpoint: str | Path | None = None,
    ema: bool = False,
    recipe: str | None = None,
    with_data: bool = True,
) -> TrainedRun:
    """Rebuild a run's model with a checkpoint's weights (and its data).

    Args:
        target: the run folder (its newest valid checkpoint is used) or one of its ``checkpoints/step_*`` folders.
        checkpoint: another checkpoint folder to take the weights from; default ``target``'s.
        ema: load the EMA weights. Default: False.
        recipe: the recipe the caller expects (``ValueError`` naming both otherwise); default any.
        with_data: also build the recipe's datasets (image runs always build them: they give the model's shape).

    Returns:
        TrainedRun
    """
    from nalaformer.train.recipes import load_recipe
    from nalaformer.train.recipes.common import read_run_config

    run_dir = find_run_dir(target)
    name, sections, _ = read_run_config(run_dir)
    if recipe is not None and name != recipe:
        raise ValueError(f"{str(run_dir)!r} is a {name!r} run, not a {recipe!r} run")
    config, model, datasets, tokenizer = load_recipe(name).rebuild(run_dir, sections, with_data=with_data)
    path = resolve_checkpoint(checkpoint if checkpoint is not None else target)
    load_weights(path, model, ema=ema)
    return TrainedRun(run_dir, name, config, model.eval(), path, checkpoint_step(path), datasets, tokenizer)
