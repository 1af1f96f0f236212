"""AdamW with weight-decay groups, the warm-up + cosine schedule, and the weight EMA."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from nalaformer.train.config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices and embeddings (decayed) and everything else (not decayed).

    Vectors and scalars (biases, norm weights, LayerScale gains) and every name in ``model.no_weight_decay()``
    (timm convention, full parameter names) go to the group without weight decay. Frozen parameters are left out.

    Args:
        model: the model (not wrapped in DistributedDataParallel).
        weight_decay: decay of the first group (>= 0).
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or name in skip else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` with ``config.lr``, ``config.beta1/2`` and ``config.weight_decay``."""
    groups = [group for group in parameter_groups(model, config.weight_decay) if group["params"]]
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


class WarmupCosine:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_ratio`` at
    ``total_steps``. Called with the number of optimizer steps taken so far (LambdaLR convention).

    A warm-up longer than the run is cut to ``total_steps``. An object rather than a closure so
    ``LambdaLR.state_dict()`` stores its settings.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = min(warmup_steps, total_steps)
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """The :class:`WarmupCosine` schedule of ``config`` on ``optimizer`` (step it once per optimizer step)."""
    return LambdaLR(optimizer, WarmupCosine(config.warmup_steps, config.steps, config.min_lr_ratio))


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (``torch.optim.swa_utils``), or ``None``
    when ``decay`` is 0. Update it with ``ema.update_parameters(model)`` after each optimizer step; evaluate
    ``ema.module``."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
