"""The training loop every recipe shares, model-agnostic through a small task interface.

A task is two functions:

- ``loss_fn(model, batch) -> (loss, metrics)``: ``loss`` a scalar tensor to minimise, ``metrics`` a mapping of
  scalar batch means to log (floats or one-element tensors). ``batch`` is whatever the data loader yields, already
  on the training device.
- ``eval_fn(model, batch) -> metrics`` (optional; default: ``loss_fn``'s loss and metrics): batch means to average
  over the validation set. A ``"weight"`` entry (e.g. the number of labelled tokens) weights the batch; otherwise its
  size does.

``train`` handles the rest: AdamW with decay groups, warm-up + cosine, clipping, accumulation, bf16 autocast, EMA,
periodic evaluation, seeding, DDP under ``torchrun``, exact resume, non-finite losses, progress with ETA, and the run
folder (``config.json``, ``metrics.jsonl``, ``checkpoints/``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from nalaformer.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    latest_valid_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from nalaformer.train.config import TrainConfig, save_config, to_dict
from nalaformer.train.distributed import (
    DistributedContext,
    all_reduce,
    broadcast_object,
    gather_objects,
    setup_distributed,
)
from nalaformer.train.metrics import MetricsLog, WeightedMeans, as_float, format_metrics
from nalaformer.train.optim import WarmupCosine, build_ema, build_optimizer, build_scheduler
from nalaformer.train.run_folder import claim_run_dir, settings_differences
from nalaformer.train.sampling import DataPosition, GlobalBatchSampler, evaluation_batches

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, Any]]]
EvalFn = Callable[[nn.Module, Any], Mapping[str, Any]]
# (model, val_data) -> extra metrics logged at each evaluation (e.g. the norm-awareness diagnostics)
EvalHook = Callable[[nn.Module, Any], Mapping[str, float]]


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became NaN / inf and ``skip_nonfinite`` is off.

    Attributes:
        step: the 1-based optimizer step that failed (the weights are those after ``step - 1`` steps).
        checkpoint: the last good checkpoint folder, or ``None`` when none was written.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says where it stopped and what to resume from.

    Attributes:
        step: optimizer steps completed.
        checkpoint: the newest checkpoint written (complete: checkpoints are written atomically), or ``None``.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (unwrapped from DDP).
        ema_model: the EMA copy of the model, or ``None``.
        step: optimizer steps taken in total (resumed runs included).
        metrics: the final metrics, flat: ``train_<name>`` (last logging interval), ``val_<name>`` and
            ``val_ema_<name>`` (final evaluation).
        history: every record written to the metrics log by this call.
        run_dir: the run folder, or ``None``.
        checkpoint: the last checkpoint written, or ``None``.
        skipped_steps: steps skipped for non-finite values (``skip_nonfinite``).
    """

    model: nn.Module
    ema_model: nn.Module | None
    step: int
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    checkpoint: Path | None = None
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (inside tuples, lists and dicts too) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return type(batch)({key: move_to_device(value, device) for key, value in batch.items()})
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Leading dimension of the first tensor in ``batch``."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else []
    for value in values:
        with contextlib.suppress(TypeError):
            return batch_size_of(value)
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}; return a 'weight' from eval_fn")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def eval_fn_from_loss(loss_fn: LossFn) -> EvalFn:
    """The default evaluation: the loss and the metrics of ``loss_fn``."""

    def eval_fn(model: nn.Module, batch: Any) -> dict[str, Any]:
        loss, metrics = loss_fn(model, batch)
        return {"loss": loss, **metrics}

    return eval_fn


def evaluate(
    model: nn.Module,
    data: Dataset,
    eval_fn: EvalFn,
    *,
    batch_size: int = 64,
    collate_fn: Callable | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    max_batches: int = 0,
    num_workers: int = 0,
    context: DistributedContext | None = None,
) -> dict[str, float]:
    """Average ``eval_fn`` over ``data`` (in eval mode, without gradients), split over ranks when distributed.

    Args:
        model: the model (unwrapped).
        data: map-style dataset.
        eval_fn: ``(model, batch) -> metrics`` (batch means; optional ``"weight"``).
        batch_size: samples per batch per rank; default 64.
        collate_fn: the data loader's collate function; default torch's.
        device: where batches go; default the model's device.
        precision: ``"fp32"`` or ``"bf16"`` (autocast); default ``"fp32"``.
        max_batches: use only the first ``max_batches * batch_size`` samples (0: all); default 0.
        num_workers: data-loader workers; default 0.
        context: the distributed context (default: a single process).

    Returns:
        Weighted means of every metric over the evaluated samples.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    context = context or DistributedContext(device=device)
    batches = evaluation_batches(len(data), batch_size, context.rank, context.world_size, max_batches)
    loader = DataLoader(
        data, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers, generator=torch.Generator()
    )
    was_training = model.training
    model.eval()
    tracker = WeightedMeans()
    try:
        with torch.no_grad():
            for batch in loader:
                batch = move_to_device(batch, device)
                with _autocast(device, precision):
                    metrics = dict(eval_fn(model, batch))
                weight = as_float(metrics.pop("weight")) if "weight" in metrics else float(batch_size_of(batch))
                tracker.add(metrics, weight)
    finally:
        model.train(was_training)
    if context.enabled:
        merged = WeightedMeans()
        for sums, weights in gather_objects((tracker.sums, tracker.weights), context):
            merged.merge(sums, weights)
        tracker = merged
    return tracker.means()


def train(
    model: nn.Module,
    train_data: Dataset,
    loss_fn: LossFn,
    config: TrainConfig | None = None,
    *,
    val_data: Dataset | None = None,
    eval_fn: EvalFn | None = None,
    collate_fn: Callable | None = None,
    run_config: Any = None,
    eval_hook: EvalHook | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data`` by minimising ``loss_fn``.

    Args:
        model: any ``nn.Module``; moved to the configured device (wrapped in DDP under ``torchrun``).
        train_data: map-style dataset; datasets with ``accepts_epoch_index = True`` receive ``(epoch, index)`` keys
            (epoch-seeded augmentation).
        loss_fn: ``(model, batch) -> (loss, metrics)``, see the module docstring.
        config: optimisation and run settings; default ``TrainConfig()``.
        val_data: dataset evaluated every ``config.eval_every`` steps and at the end; default none.
        eval_fn: ``(model, batch) -> metrics`` for ``val_data``; default ``loss_fn``'s loss and metrics.
        collate_fn: the data loaders' collate function; default torch's.
        run_config: the full configuration saved as ``config.json`` (a dataclass or a dict); default ``config``.
        eval_hook: ``(model, val_data) -> metrics`` called (main process) at each evaluation and logged as the
            ``"norm"`` split, e.g. :func:`nalaformer.diagnostics.training.norm_awareness_hook`; default none.

    Returns:
        A :class:`TrainResult`. Raises :class:`NonFiniteLossError` on a NaN / inf loss unless
        ``config.skip_nonfinite``.
    """
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    context = setup_distributed(config.device)
    with claim_run_dir(config.run_dir, resume=config.resume, overwrite=config.overwrite, context=context):
        run = _TrainingRun(model, train_data, loss_fn, config, val_data, eval_fn, collate_fn, run_config, eval_hook)
        return run.run()


class _TrainingRun:
    """State of one :func:`train` call (split out so the loop reads top to bottom)."""

    def __init__(
        self, model, train_data, loss_fn, config, val_data, eval_fn, collate_fn, run_config, eval_hook=None
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"train: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.context = setup_distributed(config.device)
        self.train_data, self.val_data = train_data, val_data
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn or eval_fn_from_loss(loss_fn)
        self.eval_hook = eval_hook
        self.collate_fn = collate_fn
        self.sampler = GlobalBatchSampler(
            len(train_data),
            config.batch_size,
            config.grad_accum,
            self.context.rank,
            self.context.world_size,
            config.seed,
            epoch_keys=bool(getattr(train_data, "accepts_epoch_index", False)),
        )
        self.run_dir = Path(config.run_dir) if config.run_dir is not None else None
        self.checkpoint_dir = self.run_dir / "checkpoints" if self.run_dir is not None else None

        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        seed_everything(config.seed + self.context.rank)
        self.model = model.to(self.context.device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.ema = build_ema(self.model, config.ema_decay)
        self.step = 0
        self.position = DataPosition()
        self.skipped_steps = 0
        self.last_checkpoint: Path | None = None
        self.payload = _config_payload(config, run_config)
        self.interval, self.interval_seconds = WeightedMeans(), 0.0
        self.resumed_from = self._resume_target()
        if self.resumed_from is not None:
            self._load(self.resumed_from)
        self.sampler.start = DataPosition(**vars(self.position))
        self.wrapped = self.model
        if self.context.enabled:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=device_ids)
        main = self.context.is_main and self.run_dir is not None
        self.log = MetricsLog(self.run_dir / "metrics.jsonl" if main else None)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log.truncate_after(self.step)
            self._write_config()

    def _resume_target(self) -> Path | None:
        target = self.config.resume
        if target is None:
            return None
        found, error = None, None
        if self.context.is_main:
            try:
                if target != "auto":
                    found = resolve_checkpoint(target)
                else:
                    found = latest_valid_checkpoint(self.checkpoint_dir)
                    if found is None and list_checkpoints(self.checkpoint_dir):
                        raise CheckpointError(
                            f"--resume: no checkpoint under {str(self.checkpoint_dir)!r} is valid (each is incomplete "
                            f"or corrupt, see the warnings), so there is nothing to resume and the run's history is "
                            f"left as it is; pass --overwrite instead of --resume to start the run afresh"
                        )
            except CheckpointError as caught:
                error = caught
        found, error = broadcast_object((found, error), self.context)
        if error is not None:
            raise error
        return found

    def _load(self, path: Path) -> None:
        config, context = self.config, self.context
        state = load_state(path)
        if state.get("batch_size") != config.batch_size:
            raise ValueError(
                f"TrainConfig.batch_size={config.batch_size} differs from the checkpoint's {state.get('batch_size')} "
                f"({str(path)!r}); resume with the same global batch size"
            )
        self._check_settings(path, state)
        load_weights(path, self.model, verify=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule follows this run's configuration (e.g. more steps than the interrupted run planned).
        schedule = WarmupCosine(config.warmup_steps, config.steps, config.min_lr_ratio)
        self.scheduler.lr_lambdas = [schedule] * len(self.optimizer.param_groups)
        if self.ema is not None:
            if "ema_updates" not in state:
                raise ValueError(f"TrainConfig.ema_decay={config.ema_decay} but {str(path)!r} was saved without EMA")
            load_weights(path, self.ema.module, ema=True, verify=False)
            self.ema.n_averaged.fill_(state["ema_updates"])
        self.step = int(state["step"])
        self.position = DataPosition(**state["data_position"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.last_checkpoint = Path(path)
        rng_states = state["rng"]
        if len(rng_states) != context.world_size:
            warnings.warn(
                f"the checkpoint was written by {len(rng_states)} processes and this run has {context.world_size}: "
                f"data order and augmentation continue exactly, dropout randomness does not",
                RuntimeWarning,
                stacklevel=3,
            )
        restore_rng_state(rng_states[min(context.rank, len(rng_states) - 1)])
        # the logging interval the checkpoint cut, so the logged means equal an uninterrupted run's
        intervals = state.get("train_interval")
        if intervals and len(intervals) == context.world_size:
            sums, weights, seconds = intervals[context.rank]
            self.interval.merge(sums, weights)
            self.interval_seconds = float(seconds)

    def _check_settings(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse to continue a checkpoint under other settings (``RESUMABLE_SETTINGS`` aside), naming them."""
        if "run_config" in state:
            saved = json.loads(state["run_config"])
        else:
            # checkpoints written before the settings went into state.pt: the config.json of their run folder
            config_file = Path(path).parent.parent / "config.json"
            if not config_file.is_file():
                return
            saved = json.loads(config_file.read_text(encoding="utf-8"))
        differences = settings_differences(saved, self.payload)
        if differences:
            shown = "; ".join(differences[:8]) + ("; ..." if len(differences) > 8 else "")
            raise ValueError(
                f"cannot resume from {str(path)!r} with other settings ({shown}): resume with the checkpoint's "
                f"settings, or start a new run (another --run-dir, or --overwrite)"
            )

    def _write_config(self) -> None:
        payload = self.payload
        facts = {
            "world_size": self.context.world_size,
            "device": str(self.context.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "torch": torch.__version__,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
        }
        save_config(payload, self.run_dir / "config.json", extra={"run": facts})

    def run(self) -> TrainResult:
        config, context = self.config, self.context
        loader = DataLoader(
            self.train_data,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=config.num_workers,
            pin_memory=context.device.type == "cuda",
            # An explicit generator keeps the loader from drawing on the global RNG (exact resume).
            generator=torch.Generator().manual_seed(config.seed),
        )
        batches = iter(loader)
        bar = _progress_bar(config, context, self.step)
        interval, history_start = self.interval, len(self.log.records)
        final_metrics: dict[str, float] = {}
        self.interval_start = time.perf_counter()
        try:
            while self.step < config.steps:
                loss, metrics, grad_norm = self._train_step(batches)
                self.step += 1
                self.position.advance(self.sampler.batches_per_epoch)
                if loss is not None:
                    interval.add({"loss": loss, **metrics, "grad_norm": grad_norm})
                if bar is not None:
                    bar.update(1)
                    if loss is not None:
                        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                done = self.step == config.steps
                if self.step % config.log_every == 0 or done:
                    elapsed = self.interval_seconds + time.perf_counter() - self.interval_start
                    means = self._reduce_means(interval)
                    steps_in_interval = self.step % config.log_every or config.log_every
                    record = {"step": self.step, "split": "train", **means, "lr": self.optimizer.param_groups[0]["lr"]}
                    record["samples_per_second"] = steps_in_interval * config.batch_size / max(elapsed, 1e-9)
                    self.log.write(record)
                    final_metrics.update({f"train_{k}": v for k, v in means.items()})
                    interval.reset()
                    self.interval_start, self.interval_seconds = time.perf_counter(), 0.0
                if self.val_data is not None and ((config.eval_every and self.step % config.eval_every == 0) or done):
                    for split, values in self._evaluate().items():
                        self.log.write({"step": self.step, "split": split, **values})
                        final_metrics.update({f"{split}_{k}": v for k, v in values.items()})
                        if bar is not None:
                            bar.write(f"step {self.step} {split}: {format_metrics(values)}")
                if self.checkpoint_dir is not None and (
                    (config.checkpoint_every and self.step % config.checkpoint_every == 0) or done
                ):
                    self._save()
        except KeyboardInterrupt:
            newest = self._newest_checkpoint_on_disk()
            where = (
                f"the newest checkpoint, {str(newest)!r}, is complete (continue with --resume)"
                if newest is not None
                else "no checkpoint had been written yet"
            )
            message = f"interrupted during step {self.step + 1} of {config.steps}; {where}"
            raise TrainingInterrupted(message, self.step, newest) from None
        finally:
            if bar is not None:
                bar.close()
        return TrainResult(
            model=self.model,
            ema_model=self.ema.module if self.ema is not None else None,
            step=self.step,
            metrics=final_metrics,
            history=self.log.records[history_start:],
            run_dir=self.run_dir,
            checkpoint=self.last_checkpoint,
            skipped_steps=self.skipped_steps,
        )

    def _newest_checkpoint_on_disk(self) -> Path | None:
        # an interruption may land after a checkpoint's rename and before it was recorded: the folder decides
        if self.checkpoint_dir is None or not self.context.is_main:
            return self.last_checkpoint
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return latest_valid_checkpoint(self.checkpoint_dir) or self.last_checkpoint

    def _train_step(self, batches) -> tuple[float | None, dict[str, float], float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, metrics, grad norm) or a ``None``
        loss when the step was skipped for non-finite values."""
        config, context = self.config, self.context
        self.wrapped.train()
        total_loss = torch.zeros((), device=context.device)
        step_metrics = WeightedMeans()
        for micro in range(config.grad_accum):
            batch = move_to_device(next(batches), context.device)
            last = micro == config.grad_accum - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = contextlib.nullcontext() if last or not context.enabled else self.wrapped.no_sync()
            with sync:
                with _autocast(context.device, config.precision):
                    loss, metrics = self.loss_fn(self.wrapped, batch)
                if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
                    raise TypeError(
                        f"loss_fn must return (scalar loss tensor with grad, metrics), got loss={loss!r:.80}"
                    )
                (loss / config.grad_accum).backward()
            total_loss += loss.detach().float() / config.grad_accum
            step_metrics.add(metrics)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if config.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        finite = torch.stack([total_loss.isfinite(), grad_norm.isfinite()]).all().float()
        if not bool(all_reduce(finite, context, op="min")):
            self._handle_nonfinite(float(total_loss), float(grad_norm))
            return None, {}, float("nan")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(total_loss), step_metrics.means(), float(grad_norm)

    def _handle_nonfinite(self, loss: float, grad_norm: float) -> None:
        step = self.step + 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log.write({"step": step, "split": "train", "event": "nonfinite", "loss": loss, "grad_norm": grad_norm})
        if self.config.skip_nonfinite:
            self.skipped_steps += 1
            # The step still counts (data and schedule move on), so the run length does not change. Torch warns when
            # the schedule moves before any optimizer step; here that is intended.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                self.scheduler.step()
            return
        where = (
            f"the last good checkpoint is {str(self.last_checkpoint)!r} (continue with --resume)"
            if self.last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; training stopped before "
            f"updating the weights; {where}. Pass --skip-nonfinite (skip_nonfinite=True) to skip such steps instead",
            step,
            self.last_checkpoint,
        )

    def _reduce_means(self, tracker: WeightedMeans) -> dict[str, float]:
        means = tracker.means()
        if not self.context.enabled or not means:
            return means
        names = sorted(means)
        values = torch.tensor([means[n] for n in names], dtype=torch.float64, device=self.context.device)
        all_reduce(values, self.context)
        return {n: float(v) / self.context.world_size for n, v in zip(names, values)}

    def _evaluate(self) -> dict[str, dict[str, float]]:
        config = self.config
        batch_size = config.eval_batch_size or self.sampler.micro_batch_size
        kwargs = dict(
            batch_size=batch_size,
            collate_fn=self.collate_fn,
            device=self.context.device,
            precision=config.precision,
            max_batches=config.eval_batches,
            num_workers=config.num_workers,
            context=self.context,
        )
        results = {"val": evaluate(self.model, self.val_data, self.eval_fn, **kwargs)}
        if self.ema is not None:
            results["val_ema"] = evaluate(self.ema.module, self.val_data, self.eval_fn, **kwargs)
        if self.eval_hook is not None and self.context.is_main:
            was_training = self.model.training
            extra = self.eval_hook(self.model, self.val_data)
            self.model.train(was_training)
            if extra:
                results["norm"] = extra
        return results

    def _save(self) -> None:
        # Every rank's RNG state goes into the checkpoint (collective call), rank 0 writes it.
        rng_states = gather_objects(capture_rng_state(), self.context)
        seconds = self.interval_seconds + time.perf_counter() - self.interval_start
        intervals = gather_objects((dict(self.interval.sums), dict(self.interval.weights), seconds), self.context)
        if not self.context.is_main:
            return
        state = {
            "data_position": vars(self.position).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,
            "batch_size": self.config.batch_size,
            "world_size": self.context.world_size,
            "skipped_steps": self.skipped_steps,
            "train_interval": intervals,
            "run_config": json.dumps(self.payload, default=str),
        }
        if self.ema is not None:
            state["ema_updates"] = int(self.ema.n_averaged)
        self.last_checkpoint = save_checkpoint(
            self.checkpoint_dir,
            self.step,
            model=self.model,
            state=state,
            ema=self.ema.module if self.ema is not None else None,
            keep=self.config.keep_checkpoints,
        )


def _config_payload(config: TrainConfig, run_config: Any) -> dict[str, Any]:
    """What ``config.json`` records: the full run configuration (default: the training section alone)."""
    if run_config is None:
        return {"train": to_dict(config)}
    if dataclasses.is_dataclass(run_config):
        return to_dict(run_config)
    return dict(run_config)


def _progress_bar(config: TrainConfig, context: DistributedContext, start: int):
    if not (config.progress and context.is_main) or start >= config.steps:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        warnings.warn("tqdm is not installed: no progress bar (pip install tqdm)", RuntimeWarning, stacklevel=3)
        return None
    return tqdm(total=config.steps, initial=start, unit="step", dynamic_ncols=True, desc="train")
