"""A whole conversion in a run folder: load, swap, attention transfer, recovery, save; resumable.

Run folder: ``config.json`` (the :class:`LinearizeConfig`), ``metrics.jsonl`` (one record per logged step, with
``stage``), ``checkpoints/step_*`` (the training engine's atomic safetensors + manifest checkpoints, holding the
stage, the optimizer and the RNG states) and, at the end, ``model/`` (:func:`nalaformer.convert.save_pretrained`
plus the tokenizer). The data order is a function of the seed and the step, so a resumed run sees the batches the
interrupted one would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nalaformer.convert.data import Passage, batch_at, minilm_path, play_passages, split_plays
from nalaformer.convert.decoder import is_language_model_folder, load_language_model
from nalaformer.convert.saving import save_pretrained
from nalaformer.convert.stages import (
    freeze_for_transfer,
    make_teacher,
    prepare_recovery,
    recovery_loss,
    transfer_loss,
)
from nalaformer.convert.swap import ConversionError, ConversionSpec, calibrate, linearize
from nalaformer.train.checkpoint import (
    capture_rng_state,
    latest_valid_checkpoint,
    load_state,
    load_weights,
    restore_rng_state,
    save_checkpoint,
)
from nalaformer.train.metrics import MetricsLog
from nalaformer.train.run_folder import claim_run_dir

MODEL_ALIASES = {"all-MiniLM-L6-v2": minilm_path, "minilm": minilm_path}


@dataclass
class LinearizeConfig:
    """Everything a conversion run depends on (saved as ``config.json``; a resume must match it).

    Attributes:
        model (str): a transformers model folder, ``all-MiniLM-L6-v2`` (the offline wheel), or a
            ``nalaformer train lm`` run folder / ``NaLaForCausalLM.save_pretrained`` folder.
        mixer, options, window: the :class:`ConversionSpec`.
        seq_len (int): tokens per passage (truncation); words (int): words per passage.
        raw_text (bool): passages keep the plays' line breaks and blank lines (for language models trained on the
            plain text); default: lines joined by spaces.
        batch_size (int): passages per step.
        transfer_steps (int), recovery_steps (int): optimizer steps of stage 1 and stage 2.
        transfer_lr (float), recovery_lr (float): Adam learning rates.
        kl_weight (float): weight of the attention KL in stage 1 (0 = output MSE only).
        kl_max_len (int): inputs up to this many tokens get the KL term.
        embedding_weight (float): encoders: weight of the pooled sentence-embedding cosine distance added to the
            stage-2 hidden-state MSE (0 = MSE only).
        similarity_weight (float): encoders: weight of the mean squared difference of the in-batch pairwise
            similarities of the pooled embeddings, student vs teacher, added to the stage-2 loss (0 = off).
        lora_rank (int): LoRA rank of stage 2; full_finetune (bool): train every weight instead.
        calibrate (bool): start NaLa's temperature at the median query norm.
        eval_every (int): every ``eval_every``-th play is held out (never used here).
        checkpoint_every (int): steps between checkpoints (and one at each stage end).
        seed (int): initial seed and data order.
    """

    model: str = "all-MiniLM-L6-v2"
    mixer: str = "nala"
    options: dict[str, Any] = field(default_factory=dict)
    window: int = 0
    seq_len: int = 64
    words: int = 40
    raw_text: bool = False
    batch_size: int = 16
    transfer_steps: int = 60
    recovery_steps: int = 40
    transfer_lr: float = 1e-2
    recovery_lr: float = 1e-3
    kl_weight: float = 1.0
    kl_max_len: int = 64
    embedding_weight: float = 0.0
    similarity_weight: float = 0.0
    lora_rank: int = 8
    full_finetune: bool = False
    calibrate: bool = True
    eval_every: int = 5
    checkpoint_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("seq_len", "words", "batch_size", "checkpoint_every", "lora_rank", "kl_max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("transfer_steps", "recovery_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("transfer_lr", "recovery_lr", "kl_weight", "embedding_weight", "similarity_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def spec(self) -> ConversionSpec:
        return ConversionSpec(mixer=self.mixer, options=dict(self.options), window=self.window)

    @property
    def total_steps(self) -> int:
        return self.transfer_steps + self.recovery_steps


def resolve_model_path(name: str) -> Path:
    """A local transformers folder for ``name`` (an alias of an offline wheel, or a folder)."""
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {name!r} is neither a known offline model ({', '.join(MODEL_ALIASES)}) nor a folder with a "
            "config.json (nothing is downloaded)"
        )
    return path


def load_pretrained(name: str) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` of a local pretrained model, offline, in train mode with dropout off.

    ``name`` may also be a ``nalaformer train lm`` run folder or a ``NaLaForCausalLM.save_pretrained`` folder (its
    tokenizer behind :class:`~nalaformer.convert.decoder.TextTokenizer`).
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    if is_language_model_folder(path):
        model, tokenizer = load_language_model(path)
        return model.train(), tokenizer
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if any(arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel") for arch in architectures):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    else:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model, tokenizer


def _check_run_folder(run_dir: Path, config: LinearizeConfig, resume: bool) -> None:
    saved = run_dir / "config.json"
    if saved.exists():
        if not resume:
            raise ValueError(f"run folder {str(run_dir)!r} already holds a conversion; pass --resume to continue it "
                             "or choose another folder")  # fmt: skip
        # a setting the saved file lacks (written before the setting existed) counts as its default
        previous = {**dataclasses.asdict(LinearizeConfig()), **json.loads(saved.read_text(encoding="utf-8"))}
        current = dataclasses.asdict(config)
        changed = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
        if changed:
            details = ", ".join(f"{key}: {previous.get(key)!r} -> {current.get(key)!r}" for key in changed)
            raise ValueError(f"--resume with a different configuration ({details}); use the saved one or a new folder")
    elif resume:
        raise ValueError(f"--resume: {str(run_dir / 'config.json')!r} does not exist; nothing to resume")


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        warnings.warn("tqdm is not installed: no progress bar (pip install tqdm)", RuntimeWarning, stacklevel=3)
        return None
    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc="linearize")


def run_conversion(
    config: LinearizeConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a conversion in ``run_dir``; returns a summary (final metrics, CPU seconds, tokens used).

    The folder is held with the training engine's exclusive lock (:func:`nalaformer.train.claim_run_dir`) for the
    whole run: a second process on it fails at once, and the lock dies with its holder however it exits. The model is
    loaded and converted before anything is written, so an option the converter cannot take fails with nothing
    started. ``on_step(step, metrics)`` is called after each step's checkpoint (tests interrupt a run from it).
    """
    run_dir = Path(run_dir)
    # whether the folder's contents may be continued is the conversion's own check, made under the lock
    with claim_run_dir(run_dir, resume="conversion"):
        _check_run_folder(run_dir, config, resume)
        conversion = _start(config, run_dir, resume)
        _train(conversion, progress, on_step)
        return _finish(conversion)


@dataclass
class _Conversion:
    """A conversion in progress: its inputs, the checkpoint it resumed from, and the stage it is in."""

    config: LinearizeConfig
    run_dir: Path
    model: torch.nn.Module
    tokenizer: Any
    passages: list[Passage]
    log: MetricsLog
    teacher: torch.nn.Module | None
    checkpoint: Path | None = None
    state: dict[str, Any] | None = None
    start: int = 0
    cpu_seconds: float = 0.0
    stage: int = 0
    trainable: Any = None
    optimizer: torch.optim.Optimizer | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        config = self.config
        return batch_at(self.tokenizer, self.passages, step, config.batch_size, config.seq_len, config.seed)


def _start(config: LinearizeConfig, run_dir: Path, resume: bool) -> _Conversion:
    """Load and convert the model, then write ``config.json`` and restore the newest checkpoint (``resume``)."""
    torch.manual_seed(config.seed)
    model, tokenizer = load_pretrained(config.model)
    linearize(model, config.spec)
    conversion_plays, _ = split_plays(config.eval_every)
    passages = play_passages(conversion_plays, words=config.words, raw=config.raw_text)
    if len(passages) < config.batch_size:
        raise ValueError(f"only {len(passages)} conversion passages for batch_size={config.batch_size}")
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1), encoding="utf-8")
    log = MetricsLog(run_dir / "metrics.jsonl")
    # the teacher is the pretrained model itself (softmax mode), taken before any checkpoint is loaded
    teacher = make_teacher(model) if config.recovery_steps else None
    conversion = _Conversion(config, run_dir, model, tokenizer, passages, log, teacher, trainable=model)
    conversion.checkpoint = latest_valid_checkpoint(run_dir / "checkpoints") if resume else None
    if conversion.checkpoint is not None:
        _restore(conversion)
    elif config.calibrate:
        calibrate(model, [conversion.batch(0)])
    return conversion


def _restore(conversion: _Conversion) -> None:
    """Step, metrics log, stage-1 weights and RNG of the checkpoint; a finished run's stage-2 model too."""
    state = conversion.state = load_state(conversion.checkpoint)
    conversion.start = int(state["step"])
    conversion.cpu_seconds = float(state["cpu_seconds"])
    conversion.log.truncate_after(conversion.start)
    if int(state["stage"]) == 1:
        load_weights(conversion.checkpoint, conversion.model)
    restore_rng_state(state["rng"])  # a run resumed at a stage boundary draws the next stage's init alike
    if conversion.start >= conversion.config.total_steps and int(state["stage"]) == 2:
        # finished run: rebuild the stage-2 model to load into
        conversion.trainable, _ = _enter_stage(conversion.model, conversion.config, 2)
        load_weights(conversion.checkpoint, conversion.trainable)
        conversion.stage = 2


def _train(conversion: _Conversion, progress: bool, on_step: Callable[[int, dict[str, float]], None] | None) -> None:
    """Every remaining step: the stage's loss, an optimizer step, the log line, the checkpoint."""
    config = conversion.config
    bar = _progress(config.total_steps, conversion.start, progress)
    try:
        for step in range(conversion.start, config.total_steps):
            _step(conversion, step)
            done = step + 1
            conversion.log.write(
                {"step": done, "stage": conversion.stage, "cpu_seconds": round(conversion.cpu_seconds, 2),
                 **conversion.metrics}
            )  # fmt: skip
            if bar is not None:
                bar.update(1)
                bar.set_postfix(stage=conversion.stage, loss=f"{conversion.metrics['loss']:.4g}")
            if done % config.checkpoint_every == 0 or done in (config.transfer_steps, config.total_steps):
                save_checkpoint(
                    conversion.run_dir / "checkpoints", done, model=conversion.trainable, keep=2,
                    state={"stage": conversion.stage, "optimizer": conversion.optimizer.state_dict(),
                           "rng": capture_rng_state(), "cpu_seconds": conversion.cpu_seconds},
                )  # fmt: skip
            if on_step is not None:
                on_step(done, conversion.metrics)
    finally:
        if bar is not None:
            bar.close()


def _step(conversion: _Conversion, step: int) -> None:
    """One optimizer step of the stage ``step`` belongs to (entering that stage first when needed)."""
    config = conversion.config
    wanted = 1 if step < config.transfer_steps else 2
    if wanted != conversion.stage:
        conversion.stage = wanted
        conversion.trainable, conversion.optimizer = _enter_stage(conversion.model, config, wanted)
        state = conversion.state
        if state is not None and int(state["stage"]) == wanted:  # resuming inside this stage
            if wanted == 2:
                load_weights(conversion.checkpoint, conversion.trainable)
            conversion.optimizer.load_state_dict(state["optimizer"])
            restore_rng_state(state["rng"])
    began = time.process_time()
    conversion.trainable.train()
    batch = conversion.batch(step)
    if conversion.stage == 1:
        loss, metrics = transfer_loss(conversion.model, batch, kl_weight=config.kl_weight, kl_max_len=config.kl_max_len)
    else:
        loss, metrics = recovery_loss(
            conversion.trainable,
            conversion.teacher,
            batch,
            embedding_weight=config.embedding_weight,
            similarity_weight=config.similarity_weight,
        )
    if not torch.isfinite(loss):
        raise FloatingPointError(f"stage {conversion.stage} loss is {float(loss)} at step {step}")
    conversion.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    conversion.optimizer.step()
    conversion.cpu_seconds += time.process_time() - began
    conversion.metrics = metrics


def _finish(conversion: _Conversion) -> dict[str, Any]:
    """Save the converted model (LoRA merged) and the run's ``summary.json``; returns the summary."""
    config, run_dir = conversion.config, conversion.run_dir
    conversion.trainable.eval()
    final = save_pretrained(conversion.trainable, run_dir / "model", tokenizer=conversion.tokenizer)
    summary = {
        "run_dir": str(run_dir),
        "model_dir": str(final),
        "steps": config.total_steps,
        "tokens": config.total_steps * config.batch_size * config.seq_len,
        "cpu_seconds": round(conversion.cpu_seconds, 1),
        **{f"final_{key}": value for key, value in conversion.metrics.items()},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _enter_stage(model: torch.nn.Module, config: LinearizeConfig, stage: int) -> tuple[Any, torch.optim.Optimizer]:
    if stage == 1:
        params = freeze_for_transfer(model)
        return model, torch.optim.Adam(params, lr=config.transfer_lr)
    trainable = prepare_recovery(model, lora_rank=config.lora_rank, full=config.full_finetune)
    params = [param for param in trainable.parameters() if param.requires_grad]
    if not params:
        raise ConversionError("recovery has no trainable parameter")
    return trainable, torch.optim.Adam(params, lr=config.recovery_lr)
