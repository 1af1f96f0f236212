"""Load a model trained by ``nalaformer train`` and a batch of its held-out data, for diagnosis.

A run folder (``config.json``, ``checkpoints/step_*``) names its recipe; the model and data are rebuilt with that
recipe's own ``build_model`` / ``build_datasets`` and the checkpoint's weights are loaded with the engine's
``load_weights`` (strict, manifest-verified), as ``nalaformer eval`` does.
"""

from __future__ import annotations

import dataclasses
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


def find_run_dir(path: str | Path) -> Path:
    """The run folder of ``path``: ``path`` itself or the nearest parent (up to 3 levels) holding ``config.json``."""
    path = Path(path)
    for candidate in (path, *list(path.parents)[:3]):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"checkpoint={str(path)!r}: no config.json there or in its parents; expected a run folder written by "
        "`nalaformer train` or one of its checkpoints/step_* folders"
    )


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
    from nalaformer.train.checkpoint import load_weights, resolve_checkpoint
    from nalaformer.train.recipes.common import read_run_config

    run_dir = find_run_dir(checkpoint)
    recipe, sections, _ = read_run_config(run_dir)
    if recipe == "image":
        model, inputs, details = _image_run(sections, split, batch_size)
    elif recipe == "lm":
        if split != "val":
            raise ValueError(f"split={split!r}: language-model runs have only the held-out 'val' split")
        model, inputs, details = _lm_run(run_dir, sections, batch_size)
    else:
        raise ValueError(f"recipe {recipe!r} of {str(run_dir)!r} is not supported; known: {RECIPES_WITH_DIAGNOSIS}")
    path = resolve_checkpoint(checkpoint)
    load_weights(path, model, ema=ema)
    model.to(device).eval()
    if isinstance(inputs, dict):
        inputs = {key: value.to(device) for key, value in inputs.items()}
    else:
        inputs = inputs.to(device)
    source = {
        "run_dir": str(run_dir),
        "checkpoint": str(path),
        "step": int(path.name.rsplit("_", 1)[-1]) if path.name.rsplit("_", 1)[-1].isdigit() else None,
        "recipe": recipe,
        "split": split,
        "ema": ema,
        **details,
    }
    return LoadedRun(model, inputs, source)


def _image_run(sections: dict[str, Any], split: str, batch_size: int) -> tuple[nn.Module, torch.Tensor, dict]:
    from nalaformer.train.recipes import image

    config = image.config_from_run(sections)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, augment=False))
    datasets = image.build_datasets(config)
    data = datasets.val if split == "val" else datasets.test
    images = torch.stack([sample[0] for sample in _first(data, batch_size, split)])
    model = image.build_model(config.model, in_chans=datasets.channels, num_classes=datasets.num_classes)
    details = {"model": config.model.name, "mixer": config.model.mixer, "data": config.data.name}
    return model, images, {**details, "samples": int(images.shape[0])}


def _lm_run(run_dir: Path, sections: dict[str, Any], batch_size: int) -> tuple[nn.Module, dict, dict]:
    from nalaformer.data.tokenizers import load_tokenizer
    from nalaformer.train.config import from_dict
    from nalaformer.train.recipes import lm

    config = from_dict(lm.LMRecipeConfig, sections)
    tokenizer = None if config.data.name == "mqar" else load_tokenizer(run_dir / lm.TOKENIZER_FOLDER)
    datasets = lm.build_datasets(config, tokenizer=tokenizer)
    input_ids = torch.stack([sample[0] for sample in _first(datasets.val, batch_size, "val")])
    model = lm.build_model(config.model, vocab_size=datasets.vocab_size, block_size=config.data.block_size)
    details = {"model": config.model.name, "mixer": config.model.mixer, "data": config.data.name}
    return model, {"input_ids": input_ids}, {**details, "samples": int(input_ids.shape[0])}
