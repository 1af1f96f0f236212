"""Softmax attention in the ops layout ``[B, T, H, D]`` through ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nalaformer.ops.rope import apply_rope, check_rope
from nalaformer.ops.validation import check_attention_mask, check_qkv


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention ``softmax(q kᵀ * scale) v``, the upper bound every linear method is compared to.

    Args:
        q (torch.Tensor): ``[B, T, H, D]``.
        k (torch.Tensor): ``[B, T, H, D]``.
        v (torch.Tensor): ``[B, T, H, Dv]``.
        causal (bool): attend to ``s <= t`` only. Default: False.
        rope (tuple, optional): ``(cos, sin)`` tables ``[T, D]`` or ``[B, T, D]`` rotating q and k. Default: None.
        attention_mask (torch.Tensor, optional): ``[B, T]``, 1 = real token; padded keys get no weight and padded
            queries output 0. Default: None.
        scale (float, optional): Default: ``D ** -0.5``.

    Returns:
        torch.Tensor: ``[B, T, H, Dv]`` in the dtype of ``q`` (SDPA's own precision rules apply).
    """
    check_qkv(q, k, v)
    batch, seq_len = q.shape[:2]
    mask = check_attention_mask(attention_mask, batch, seq_len)
    if rope is not None:
        cos, sin = check_rope(rope, batch, seq_len, q.shape[-1])
        q = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rope(k, cos.to(k.dtype), sin.to(k.dtype))
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    if mask is None:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        return o.transpose(1, 2)
    allowed = mask[:, None, None, :].expand(batch, 1, seq_len, seq_len)
    if causal:
        allowed = allowed & torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()
    # a padded query may have no allowed key at all; letting it see itself avoids a 0/0 (its output is zeroed)
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=q.device)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale).transpose(1, 2)
    return torch.where(mask[:, :, None, None], o, torch.zeros((), dtype=o.dtype, device=o.device))
