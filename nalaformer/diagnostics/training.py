"""Norm-awareness during training: a few numbers per evaluation that say whether NaLa's exponent is still alive.

NaLa's query exponent ``p = lam * (tau + tanh(||q|| / T))`` is norm-aware only while ``||q|| / T`` stays in tanh's
responsive range; once the queries outgrow it, ``p`` sits at its ceiling ``lam * (tau + 1)`` and the map is a
constant power. :func:`norm_awareness` measures that on a fixed batch of held-out inputs:

- ``saturated_fraction``: the share of query exponents within ``within`` (1%) of the ceiling;
- ``exponent_mean`` / ``exponent_std``: the spread of ``p`` (0 std = a constant power);
- ``pearson_entropy_q_norm``: the correlation of each attention row's entropy with ``||q||``, averaged over heads
  (softmax rows grow sharper with the query norm, a negative correlation; a live NaLa exponent should follow),
  and the same per head as ``pearson_entropy_q_norm/<block>/<head>``.

Exponent statistics pool the norm-aware NaLa blocks; the correlation covers every block with defined attention
weights (softmax and linear; the delta rule has none and is skipped). :func:`norm_awareness_hook` turns it into the
training engine's ``eval_hook`` so each evaluation logs these as the ``"norm"`` split of ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from nalaformer.diagnostics.analysis import analyse_attention
from nalaformer.diagnostics.capture import capture_attention
from nalaformer.diagnostics.summary import is_norm_aware, summarise
from nalaformer.layers import LinearAttention, SoftmaxAttention

# a query counts as saturated when its exponent is within this share of the ceiling lam * (tau + 1)
SATURATION_WITHIN = 0.01


def saturation_threshold(tau: float, within: float = SATURATION_WITHIN) -> float:
    """The ``tanh(||q|| / T)`` above which ``p`` is within ``within`` of ``lam (tau + 1)`` (0.985 at tau = 0.5)."""
    return (1.0 - within) * (tau + 1.0) - tau


def norm_awareness(
    model: nn.Module, inputs: Any, *, max_queries: int = 64, within: float = SATURATION_WITHIN, seed: int = 0
) -> dict[str, float]:
    """The norm-awareness statistics of ``model`` on ``inputs`` (see the module docstring); eval mode, no grad.

    Args:
        model (nn.Module): any model with nalaformer attention blocks.
        inputs: one batch, passed as in :func:`~nalaformer.diagnostics.capture_attention`.
        max_queries (int): query rows analysed per sample. Default: 64.
        within (float): the saturation margin, a share of the ceiling in (0, 1). Default: 0.01.
        seed (int): seed of the query subset. Default: 0.

    Returns:
        dict[str, float]: the statistics; empty when the model has no block with defined attention weights.
    """
    if not 0.0 < within < 1.0:
        raise ValueError(f"within must be in (0, 1), got {within!r}")
    records = [
        record
        for record in capture_attention(model, inputs)
        if isinstance(record.module, (SoftmaxAttention, LinearAttention))
    ]
    exponents, saturated, correlations = [], [], []
    out: dict[str, float] = {}
    for record in records:
        layer = analyse_attention(record, max_queries=max_queries, seed=seed)
        tau = layer.nala.get("tau", 0.5) if layer.nala else 0.5
        (summary,) = summarise([layer], saturation=saturation_threshold(tau, within))["layers"]
        for head in summary["heads"]:
            value = head["pearson_entropy_q_norm"]
            out[f"pearson_entropy_q_norm/{record.label}/{head['unit']}"] = value
            correlations.append(value)
        if is_norm_aware(record):
            exponent = layer.values["exponent"].ravel()
            cap = layer.nala["lam"] * (layer.nala["tau"] + 1.0)
            exponents.append(exponent)
            saturated.append(exponent >= (1.0 - within) * cap)
    finite = [c for c in correlations if np.isfinite(c)]
    if finite:
        out["pearson_entropy_q_norm"] = float(np.mean(finite))
    if exponents:
        pooled = np.concatenate(exponents)
        out["saturated_fraction"] = float(np.concatenate(saturated).mean())
        out["exponent_mean"] = float(pooled.mean())
        out["exponent_std"] = float(pooled.std())
    return out


def norm_awareness_hook(samples: int = 8, **options: Any) -> Callable[[nn.Module, Dataset | None], dict[str, float]]:
    """An ``eval_hook`` for :func:`nalaformer.train.train`: :func:`norm_awareness` on the first ``samples`` examples
    of the validation set (their inputs: the first element of each example). ``options`` go to
    :func:`norm_awareness`."""
    if not isinstance(samples, int) or samples <= 0:
        raise ValueError(f"samples must be a positive int, got {samples!r}")

    def hook(model: nn.Module, val_data: Dataset | None) -> dict[str, float]:
        if val_data is None or len(val_data) == 0:
            return {}
        batch = default_collate([val_data[i] for i in range(min(samples, len(val_data)))])
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        device = next(model.parameters()).device
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.to(device)
        try:
            return norm_awareness(model, inputs, **options)
        except ValueError as error:
            if "contains no nalaformer attention block" in str(error):
                return {}
            raise

    return hook
