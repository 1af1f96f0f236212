"""Capture the per-head queries and keys of every attention block during one forward pass.

Hooks only: a forward pre-hook on each :class:`~nalaformer.layers.AttentionBlock` records how it was called (grid size,
padding mask, decoding state) and a forward hook on its fused ``in_proj`` records the projection output, which holds
``q`` and ``k`` as its first two ``C``-sized parts (the block contract in CONTRIBUTING.md). The model's code path is
not touched, so this works on any ``nn.Module`` that contains our mixers: the vision backbone, the language model, a
single mixer, or a user's own model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nalaformer.layers import AttentionBlock


@dataclass
class CapturedAttention:
    """Queries and keys of one call of one attention block.

    Attributes:
        name (str): the block's path in the model (``model.named_modules()``), ``""`` for the model itself.
        call (int): index of this call among the calls of the same block during the forward (0 for most models).
        module (AttentionBlock): the block (its feature map, RoPE and causal settings define the weights).
        q (torch.Tensor): per-head queries ``[B, T, H, D]`` as the block computed them (before RoPE), detached.
        k (torch.Tensor): per-head keys ``[B, T, H, D]``, detached.
        positions (torch.Tensor): token positions ``[T]`` or ``[B, T]`` (long) as the block uses them for RoPE.
        attention_mask (torch.Tensor | None): ``[B, T]`` bool, True for real tokens, or None.
        size (tuple[int, int] | None): the ``(H, W)`` grid of a 2-D block, None for sequences.
    """

    name: str
    call: int
    module: AttentionBlock
    q: torch.Tensor
    k: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor | None
    size: tuple[int, int] | None

    @property
    def label(self) -> str:
        """``name`` plus ``#call`` when the block ran more than once."""
        base = self.name or type(self.module).__name__
        return base if self.call == 0 else f"{base}#{self.call}"


def attention_blocks(model: nn.Module) -> list[tuple[str, AttentionBlock]]:
    """Every :class:`AttentionBlock` inside ``model`` (``model`` itself included), as ``(name, module)`` pairs."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AttentionBlock)]


def _token_positions(module: AttentionBlock, seq_len: int, mask: torch.Tensor | None, device) -> torch.Tensor:
    """Positions the block gives its RoPE for a call without decoding state (see ``AttentionBlock._positions``)."""
    if module.layout == "2d" or mask is None:
        return torch.arange(seq_len, device=device)
    # left or inner padding: real tokens are numbered 0, 1, ... from the first real one of each row
    return (mask.long().cumsum(dim=1) - 1).clamp_min(0)


def _call_inputs(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def capture_attention(model: nn.Module, inputs: Any, *, max_samples: int | None = None) -> list[CapturedAttention]:
    """Run ``model`` once (eval mode, no grad) and return the queries and keys of every attention block call.

    Args:
        model (nn.Module): any module containing :class:`AttentionBlock` mixers (or one itself).
        inputs: passed as ``model(**inputs)`` for a mapping (e.g. ``{"input_ids": ...}``), ``model(*inputs)`` for a
            tuple / list, else ``model(inputs)`` (e.g. images ``[B, C, H, W]``).
        max_samples (int, optional): keep only the first ``max_samples`` rows of the batch (the forward still runs
            on the whole batch). Default: None (all rows).

    Returns:
        list[CapturedAttention]: in call order. Calls that carry a decoding state (step-by-step generation) are
        skipped with a warning: their keys live in the cache, not in this call.

    Raises:
        ValueError: ``model`` contains no attention block, or ``max_samples`` is not positive.
    """
    blocks = attention_blocks(model)
    if not blocks:
        raise ValueError(
            f"model ({type(model).__name__}) contains no nalaformer attention block (AttentionBlock subclasses); "
            "nothing to capture"
        )
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples <= 0):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
    records: list[CapturedAttention] = []
    pending: dict[int, dict[str, Any]] = {}
    calls: dict[int, int] = {}
    skipped = 0

    def before(module: AttentionBlock, args: tuple, kwargs: dict, name: str) -> None:
        x = args[0] if args else kwargs["x"]
        size = kwargs.get("size")
        if x.dim() == 4:
            size = (int(x.shape[2]), int(x.shape[3]))
        pending[id(module)] = {
            "name": name,
            "size": None if size is None else (int(size[0]), int(size[1])),
            "mask": kwargs.get("attention_mask"),
            "state": kwargs.get("state"),
        }

    def projected(block: AttentionBlock, output: torch.Tensor) -> None:
        nonlocal skipped
        context = pending.pop(id(block), None)
        if context is None:
            return
        if context["state"] is not None:
            skipped += 1
            return
        batch, seq_len = output.shape[:2]
        heads = (batch, seq_len, block.num_heads, block.head_dim)
        q, k = (part.detach().reshape(heads) for part in output.split(block.dim, dim=-1)[:2])
        mask = context["mask"]
        mask = None if mask is None else mask.detach().to(torch.bool)
        positions = _token_positions(block, seq_len, mask, output.device)
        if max_samples is not None:
            q, k = q[:max_samples], k[:max_samples]
            mask = None if mask is None else mask[:max_samples]
            positions = positions[:max_samples] if positions.dim() == 2 else positions
        call = calls.get(id(block), 0)
        calls[id(block)] = call + 1
        records.append(CapturedAttention(context["name"], call, block, q, k, positions, mask, context["size"]))

    handles = []
    try:
        for name, block in blocks:
            handles.append(
                block.register_forward_pre_hook(
                    lambda m, a, kw, name=name: before(m, a, kw, name), with_kwargs=True, prepend=True
                )
            )
            handles.append(block.in_proj.register_forward_hook(lambda m, a, out, block=block: projected(block, out)))
        training = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            args, kwargs = _call_inputs(inputs)
            with torch.no_grad():
                model(*args, **kwargs)
        finally:
            for module, mode in training:
                module.training = mode
    finally:
        for handle in handles:
            handle.remove()
    if skipped:
        warnings.warn(f"capture_attention skipped {skipped} block call(s) that carried a decoding state", stacklevel=2)
    return records
