"""Load a model trained by ``nalaformer train`` and a batch of its held-out data, for diagnosis.

The model, its checkpoint's weights and the data come from ``nalaformer.train.runs.load_run`` (the loader of
``nalaformer eval`` too); this module adds the held-out batch and the description of where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

RECIPES_WITH_DIAGNOSIS = ("image", "lm")


@dataclass
class LoadedRun:
    """A trained model in eval mode, a batch of its held-out inputs, and where both came from.

    Attributes:
        model (nn.Module): the model with the checkpoint's weights.
        inputs: images ``[B, C, H, W]`` (image runs) or ``{"input_ids": [B, T]}`` (language-model runs).
        source (dict): ``run_dir``, ``checkpoint``, ``step``, ``recipe``, ``model``, ``mixer``, ``data``, ``split``,
            ``ema``, ``samples``.
    """

    model: nn.Module
    inputs: Any
    source: dict[str, Any]


def _first(dataset, count: int, what: str) -> list[Any]:
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the run has no {what} data to diagnose")
    return [dataset[i] for i in range(min(count, len(dataset)))]


def load_run(
    checkpoint: str | Path, *, split: str = "val", ema: bool = False, batch_size: int = 8, device: str = "cpu"
) -> LoadedRun:
    """Rebuild a run's model with its checkpoint weights and take the first ``batch_size`` held-out samples.

    Args:
        checkpoint (str | Path): a run folder (its newest valid checkpoint is used) or a ``checkpoints/step_*``
            folder of one.
        split (str): ``"val"`` (held-out training data) or ``"test"`` (image datasets with an official test
            split). Default: "val".
        ema (bool): load the EMA weights. Default: False.
        batch_size (int): samples in the batch. Default: 8.
        device (str): where the model and batch go. Default: "cpu".

    Returns:
        LoadedRun
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    from nalaformer.train.recipes.common import read_run_config
    from nalaformer.train.runs import find_run_dir
    from nalaformer.train.runs import load_run as load_trained_run

    recipe, _, _ = read_run_config(find_run_dir(checkpoint))
    if recipe not in RECIPES_WITH_DIAGNOSIS:
        raise ValueError(f"recipe {recipe!r} of {str(checkpoint)!r} is not supported; known: {RECIPES_WITH_DIAGNOSIS}")
    if recipe == "lm" and split != "val":
        raise ValueError(f"split={split!r}: language-model runs have only the held-out 'val' split")
    run = load_trained_run(checkpoint, ema=ema)
    data = run.datasets.val if split == "val" else run.datasets.test
    samples = torch.stack([sample[0] for sample in _first(data, batch_size, split)]).to(device)
    inputs = {"input_ids": samples} if recipe == "lm" else samples
    source = {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "recipe": recipe,
        "split": split,
        "ema": ema,
        "model": run.config.model.name,
        "mixer": run.config.model.mixer,
        "data": run.config.data.name,
        "samples": int(samples.shape[0]),
    }
    return LoadedRun(run.model.to(device), inputs, source)
