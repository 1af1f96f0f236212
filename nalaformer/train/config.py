"""Training configuration: dataclasses that validate themselves, and their command-line form.

Every run is described by dataclasses. Each field is validated when the object is built (so a bad value is rejected
with its field name before any data is read or any step is taken), and the whole configuration is saved as JSON in
the run folder.

Command line scheme: the fields of the training section are top-level flags (``--steps 200 --lr 3e-4``), the fields
of every other section carry the section name (``--data.name digits --model.mixer nala``); ``_`` in a field name is
written ``-`` (``--warmup-steps``, ``--data.val-fraction``). Booleans take ``--flag`` / ``--no-flag``. Only the flags
given override the recipe's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRECISIONS = ("fp32", "bf16")


def _fail(owner: str, name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"{owner}.{name} must be {expected}, got {value!r}")


def check_fields(config: Any) -> None:
    """Check every field of a dataclass instance against its annotation (``TypeError``) and its ``metadata``
    bounds: ``min`` / ``max`` (inclusive), ``above`` (exclusive) and ``choices`` (``ValueError``, naming the field)."""
    owner = type(config).__name__
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        annotation = hints[item.name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, annotation):
                raise TypeError(f"{owner}.{item.name} must be a {annotation.__name__}, got {type(value).__name__}")
            continue
        base, optional = _unwrap_optional(annotation)
        if value is None:
            if not optional:
                raise TypeError(f"{owner}.{item.name} must not be None")
            continue
        _check_type(owner, item.name, value, base)
        meta = item.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise _fail(owner, item.name, value, f"one of {tuple(meta['choices'])}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(owner, item.name, value, "a finite number")
        if "min" in meta and value < meta["min"]:
            raise _fail(owner, item.name, value, f">= {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise _fail(owner, item.name, value, f"<= {meta['max']}")
        if "above" in meta and not value > meta["above"]:
            raise _fail(owner, item.name, value, f"> {meta['above']}")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> None:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise _fail(owner, name, value, f"one of {typing.get_args(annotation)}")
        return
    expected = origin or annotation
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise TypeError(f"{owner}.{name} must be {getattr(expected, '__name__', expected)}, got {value!r}")


def option(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field with a help text and validation bounds (``min``, ``max``, ``above``, ``choices``) and,
    for optional strings, ``const`` (the value of the bare flag, e.g. ``--resume`` alone)."""
    return field(default=default, metadata={"help": help, **bounds})


@dataclass
class TrainConfig:
    """How to train: optimisation, schedule, precision, evaluation, checkpoints and the run folder.

    The batch is global: ``batch_size`` samples per optimizer step, split over ``grad_accum`` micro-steps and the
    distributed ranks, so the same configuration gives the same training on 1 or N processes.
    """

    steps: int = option(1000, "optimizer steps", min=1)
    batch_size: int = option(64, "global batch size per optimizer step (all ranks and micro-steps)", min=1)
    grad_accum: int = option(1, "micro-steps (gradient accumulation) per optimizer step", min=1)
    lr: float = option(1e-3, "peak learning rate (AdamW)", above=0.0)
    min_lr_ratio: float = option(0.1, "final learning rate of the cosine decay, as a fraction of lr", min=0.0, max=1.0)
    warmup_steps: int = option(50, "linear warm-up steps (at most steps)", min=0)
    weight_decay: float = option(0.05, "AdamW weight decay of matrices (not biases, norms, gains)", min=0)
    beta1: float = option(0.9, "AdamW beta1", min=0.0, max=0.999999)
    beta2: float = option(0.999, "AdamW beta2", min=0.0, max=0.999999)
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: no clipping)", min=0.0)
    precision: str = option("fp32", "fp32, or bf16 autocast", choices=PRECISIONS)
    ema_decay: float = option(0.0, "decay of an exponential moving average of the weights (0: no EMA)", min=0, max=1)
    eval_every: int = option(0, "evaluate every N steps (0: only at the end)", min=0)
    eval_batches: int = option(0, "batches per evaluation, a fixed random subset (0: the whole validation set)", min=0)
    eval_batch_size: int = option(0, "evaluation batch size per rank (0: same as the training micro-batch)", min=0)
    log_every: int = option(10, "log training metrics every N steps", min=1)
    checkpoint_every: int = option(0, "save a checkpoint every N steps (0: only at the end)", min=0)
    keep_checkpoints: int = option(3, "keep the newest K checkpoints", min=1)
    skip_nonfinite: bool = option(False, "skip a step whose loss or gradient is NaN/inf instead of stopping")
    seed: int = option(0, "seed of the model, the data order, augmentation and dropout", min=0)
    num_workers: int = option(0, "data-loader worker processes", min=0)
    cpu_threads: int = option(0, "torch intra-op CPU threads (0: torch's default; 1 suits a busy machine)", min=0)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = option(True, "show a progress bar with ETA")
    run_dir: str | None = option(None, "run folder for config, metrics and checkpoints (none: nothing written)")
    resume: str | None = option(
        None,
        "continue a run: bare --resume (= 'auto') takes the newest valid checkpoint of run_dir (a fresh start if "
        "it has none, refused if all are damaged); or name a checkpoint folder or run folder. Model, data and "
        "optimisation settings must match the checkpoint's",
        const="auto",
    )
    overwrite: bool = option(False, "replace what run_dir holds (without it, a non-empty run_dir needs --resume)")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"TrainConfig.warmup_steps={self.warmup_steps} must be at most steps={self.steps} "
                f"(pass --warmup-steps N with N <= {self.steps})"
            )
        if self.overwrite and self.resume is not None:
            raise ValueError(
                f"TrainConfig.overwrite=True and resume={self.resume!r} exclude each other: resume a run or replace it"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}"
            )
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise _fail("TrainConfig", "device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.resume is not None and self.resume == "auto" and self.run_dir is None:
            raise ValueError("TrainConfig.resume='auto' needs TrainConfig.run_dir (the folder to resume from)")


def to_dict(config: Any) -> dict[str, Any]:
    """The configuration as plain JSON-ready data (nested sections become nested dicts)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild (and validate) a configuration dataclass of type ``cls`` from :func:`to_dict` output.

    Unknown keys raise ``ValueError`` naming them; missing keys keep their defaults.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}; expected some of {sorted(names)}")
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            value = from_dict(hints[name], value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def save_config(config: Any, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the configuration (plus ``extra`` facts about the run) as indented JSON to ``path``."""
    payload = to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    if extra:
        payload = {**payload, **extra}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _argument_type(annotation: Any) -> dict[str, Any]:
    base, _ = _unwrap_optional(annotation)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is Literal:
        return {"type": type(typing.get_args(base)[0]), "choices": typing.get_args(base)}
    if typing.get_origin(base) is tuple:
        return {"type": typing.get_args(base)[0], "nargs": "+"}
    if base in (int, float, str):
        return {"type": base}
    raise TypeError(f"no command-line form for fields of type {annotation!r}")


def add_config_arguments(parser: argparse.ArgumentParser, config: Any, *, top_level: str = "train") -> None:
    """Add one flag per field of the recipe configuration ``config`` (a dataclass of dataclass sections).

    Fields of the section named ``top_level`` become ``--field``; other sections give ``--section.field``. Defaults
    shown in ``--help`` come from ``config``; unset flags do not override anything.
    """
    hints = typing.get_type_hints(type(config))
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if not dataclasses.is_dataclass(hints[section.name]):
            continue
        group = parser.add_argument_group(f"{section.name} options")
        section_hints = typing.get_type_hints(type(value))
        for item in dataclasses.fields(value):
            flag = item.name if section.name == top_level else f"{section.name}.{item.name}"
            kwargs = _argument_type(section_hints[item.name])
            if "const" in item.metadata:
                kwargs.update(nargs="?", const=item.metadata["const"])
            if "choices" in item.metadata:
                kwargs["choices"] = tuple(item.metadata["choices"])
            if kwargs.get("action") is None and "choices" not in kwargs:
                kwargs["metavar"] = item.name.upper()
            default = getattr(value, item.name)
            help_text = item.metadata.get("help", "")
            group.add_argument(
                f"--{flag.replace('_', '-')}",
                dest=f"{section.name}.{item.name}",
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {default!r})" if default == "" else f"{help_text} (default: {default})",
                **kwargs,
            )


def apply_arguments(config: Any, args: argparse.Namespace) -> Any:
    """A copy of ``config`` with the flags present in ``args`` applied; every section is re-validated."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    sections = {name: dataclasses.replace(getattr(config, name), **values) for name, values in overrides.items()}
    return dataclasses.replace(config, **sections)
