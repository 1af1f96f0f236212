"""Softmax attention in the shared block (the upper bound), with a KV cache for decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nalaformer.layers.block import AttentionBlock
from nalaformer.ops import apply_rope, softmax_attention


@dataclass
class KVCache:
    """Keys (RoPE-rotated) and values seen so far: ``keys [B, H, L, D]``, ``values [B, H, L, Dv]``, ``valid [B, L]``."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor


class SoftmaxAttention(AttentionBlock):
    """Softmax attention through ``scaled_dot_product_attention`` in the shared block (RoPE rotates q and k).

    Its decoding cache grows with the context, unlike the linear mixers' fixed-size state.
    """

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        inputs: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        state: Any,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Any]:
        if state is None and not use_cache:
            return softmax_attention(q, k, v, causal=self.causal, rope=rope, attention_mask=attention_mask), None
        if rope is not None:
            q = apply_rope(q, rope[0].to(q.dtype), rope[1].to(q.dtype))
            k = apply_rope(k, rope[0].to(k.dtype), rope[1].to(k.dtype))
        batch, seq_len = q.shape[:2]
        valid = (
            torch.ones(batch, seq_len, dtype=torch.bool, device=q.device) if attention_mask is None else attention_mask
        )
        keys, values = k.transpose(1, 2), v.transpose(1, 2)
        if state is not None:
            keys = torch.cat([state.keys.to(keys.dtype), keys], dim=2)
            values = torch.cat([state.values.to(values.dtype), values], dim=2)
            valid = torch.cat([state.valid, valid], dim=1)
        past = keys.shape[2] - seq_len
        query_index = past + torch.arange(seq_len, device=q.device)
        key_index = torch.arange(keys.shape[2], device=q.device)
        allowed = valid[:, None, None, :] & (key_index[None, :] <= query_index[:, None])
        # a padded query may see no real key; letting it see itself avoids 0/0 (its output is zeroed below)
        allowed = allowed | (key_index[None, :] == query_index[:, None])
        o = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=allowed).transpose(1, 2)
        o = torch.where(valid[:, past:, None, None], o, torch.zeros((), dtype=o.dtype, device=o.device))
        return o, KVCache(keys, values, valid) if use_cache else None
