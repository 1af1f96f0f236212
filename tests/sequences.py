"""Sequence set-ups the tests share: padding masks and step-by-step decoding runs."""

from __future__ import annotations

from typing import Any

import torch


def padding_mask(lengths: list[int], total: int, side: str) -> torch.Tensor:
    """``[len(lengths), total]`` bool mask, True on each row's ``length`` real tokens: at the end of the row for
    ``side="left"`` (left padding), at its start for ``side="right"``."""
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for row, length in enumerate(lengths):
        if side == "left":
            mask[row, total - length :] = True
        else:
            mask[row, :length] = True
    return mask


def decode_in_steps(mixer: Any, x: torch.Tensor, prefill: int) -> tuple[torch.Tensor, Any]:
    """Run a causal mixer over ``x [B, T, C]`` as a decoder does: one call on the first ``prefill`` tokens, then one
    token per call with the carried state. Returns ``(y [B, T, C], final state)``."""
    y, state = mixer(x[:, :prefill], use_cache=True)
    outputs = [y]
    for t in range(prefill, x.shape[1]):
        y, state = mixer(x[:, t : t + 1], state=state, use_cache=True)
        outputs.append(y)
    return torch.cat(outputs, dim=1), state
