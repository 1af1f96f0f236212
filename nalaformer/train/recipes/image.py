"""Image classification: ``nalaformer train image`` (default: the NaLaFormer nano variant on MNIST-5k).

Usable from Python::

    from nalaformer.train.recipes import image
    config = image.default_config()
    config.train.steps = 100
    result = image.run(config)            # a TrainResult; result.metrics["val_accuracy"]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.data.images import IMAGE_DATASETS, ImageDatasets, build_image_datasets
from nalaformer.train.config import TrainConfig, check_fields, from_dict, option, to_dict
from nalaformer.train.distributed import resolve_device, setup_distributed
from nalaformer.train.engine import EvalHook, TrainResult, evaluate, seed_everything, train
from nalaformer.train.recipes.common import count_parameters, parse_options, resolve_callable
from nalaformer.train.run_folder import claim_run_dir

NAME = "image"


@dataclass
class ImageDataConfig:
    """Which images, how they are split and augmented."""

    name: str = option("mnist", "dataset", choices=IMAGE_DATASETS)
    root: str | None = option(None, "directory of fashion-mnist / idx / cifar10 / folder data")
    val_fraction: float = option(0.1, "share of the training images held out for validation", min=0.0, max=0.9)
    augment: bool = option(True, "random crop (and flip where it makes sense) on training images")
    channels: int = option(3, "image folders: 1 (grey) or 3 (RGB)", choices=(1, 3))
    image_size: int = option(0, "image folders: resize to N x N (0: the first image's size)", min=0)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class ImageModelConfig:
    """Which model: an entrypoint of ``nalaformer.models`` (or ``module:callable``) and its options."""

    name: str = option("nalaformer_nano", "entrypoint in nalaformer.models, or package.module:callable")
    mixer: str = option("", "token-mixer layout passed as mixers= ('released', 'nala', 'softmax', any registry name)")
    options: str = option("{}", "more keyword arguments for the model, as a JSON object")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss", min=0.0, max=0.5)

    def __post_init__(self) -> None:
        check_fields(self)
        parse_options(self.options, "ImageModelConfig.options")


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=300, batch_size=64, lr=2e-3, warmup_steps=30, weight_decay=0.05, eval_every=100, checkpoint_every=100
    )


@dataclass
class ImageRecipeConfig:
    """The whole configuration of an image-classification run."""

    train: TrainConfig = field(default_factory=_default_train)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)


def default_config() -> ImageRecipeConfig:
    """The defaults of ``nalaformer train image``."""
    return ImageRecipeConfig()


def build_datasets(config: ImageRecipeConfig) -> ImageDatasets:
    """Train / val / test datasets of ``config.data`` (split and augmentation seeded by ``config.train.seed``)."""
    data = config.data
    return build_image_datasets(
        data.name,
        data.root,
        val_fraction=data.val_fraction,
        seed=config.train.seed,
        augment=data.augment,
        channels=data.channels,
        image_size=(data.image_size, data.image_size) if data.image_size else None,
    )


def build_model(config: ImageModelConfig, *, in_chans: int, num_classes: int) -> nn.Module:
    """The classifier named by ``config``, called as ``fn(in_chans=..., num_classes=..., [mixers=...], **options)``."""
    builder = resolve_callable(config.name, "nalaformer.models")
    kwargs: dict[str, Any] = {"in_chans": in_chans, "num_classes": num_classes}
    if config.mixer:
        kwargs["mixers"] = config.mixer
    kwargs.update(parse_options(config.options, "ImageModelConfig.options"))
    return builder(**kwargs)


def make_loss_fn(label_smoothing: float = 0.0):
    """``(model, (images [B, C, H, W], labels [B])) -> (cross-entropy, {"accuracy"})``."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean()}

    return loss_fn


def classification_eval(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validation metrics: plain cross-entropy (no smoothing) and top-1 accuracy."""
    images, labels = batch
    logits = model(images)
    return {
        "loss": F.cross_entropy(logits.float(), labels),
        "accuracy": (logits.argmax(-1) == labels).float().mean(),
    }


def run(config: ImageRecipeConfig, eval_hook: EvalHook | None = None) -> TrainResult:
    """Train the image classifier of ``config``; see :func:`nalaformer.train.train` for the result and
    ``eval_hook``."""
    # the run folder is claimed (writable, not in use, not another run) before any data is read
    with claim_run_dir(
        config.train.run_dir,
        resume=config.train.resume,
        overwrite=config.train.overwrite,
        context=setup_distributed(config.train.device),
    ):
        return _run(config, eval_hook)


def _run(config: ImageRecipeConfig, eval_hook: EvalHook | None = None) -> TrainResult:
    seed_everything(config.train.seed)
    datasets = build_datasets(config)
    model = build_model(config.model, in_chans=datasets.channels, num_classes=datasets.num_classes)
    run_config = {
        "recipe": NAME,
        **to_dict(config),
        "dataset": {
            "classes": datasets.classes,
            "image_size": list(datasets.image_size),
            "mean": list(datasets.mean),
            "std": list(datasets.std),
            "train_size": len(datasets.train),
            "val_size": len(datasets.val) if datasets.val is not None else 0,
            "model_parameters": count_parameters(model),
        },
    }
    return train(
        model,
        datasets.train,
        make_loss_fn(config.model.label_smoothing),
        config.train,
        val_data=datasets.val,
        eval_fn=classification_eval,
        run_config=run_config,
        eval_hook=eval_hook,
    )


def config_from_run(sections: dict[str, Any]) -> ImageRecipeConfig:
    """The recipe configuration saved in a run folder's ``config.json`` (sections only)."""
    return from_dict(ImageRecipeConfig, sections)


def rebuild(
    run_dir: str | Path, sections: dict[str, Any], *, with_data: bool = True
) -> tuple[ImageRecipeConfig, nn.Module, ImageDatasets, None]:
    """``(config, untrained model, datasets, no tokenizer)`` of a saved image run, for :func:`nalaformer.train.runs.
    load_run`; augmentation is off and the datasets are always built (they give the model's channels and classes)."""
    config = config_from_run(sections)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, augment=False))
    datasets = build_datasets(config)
    model = build_model(config.model, in_chans=datasets.channels, num_classes=datasets.num_classes)
    return config, model, datasets, None


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    split: str = "val",
    ema: bool = False,
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, float]:
    """Evaluate a finished (or interrupted) image run.

    Args:
        run_dir: the run folder.
        checkpoint: checkpoint folder; default the newest valid one of the run.
        split: ``"val"`` (held-out training images) or ``"test"`` (the official test split); default ``"val"``.
        ema: evaluate the EMA weights; default False.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; default ``"auto"``.
        batch_size: evaluation batch size; default 256.
    """
    from nalaformer.train.runs import load_run

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    run = load_run(run_dir, checkpoint=checkpoint, ema=ema, recipe=NAME)
    data = run.datasets.val if split == "val" else run.datasets.test
    if data is None:
        reason = "it has no official test split" if split == "test" else "the run used val_fraction=0"
        raise ValueError(f"split={split!r} is not available for {run.config.data.name!r}: {reason}")
    target = resolve_device(device)
    model = run.model.to(target)
    metrics = evaluate(
        model, data, classification_eval, batch_size=batch_size, device=target, precision=run.config.train.precision
    )
    return {**metrics, "step": run.step, "samples": len(data)}
