"""Norm-aware linear attention: NaLa feature maps + the right attention form, in one call."""

from __future__ import annotations

import math

import torch

from nalaformer.ops.feature_maps import nala_key_map, nala_query_map
from nalaformer.ops.fused_features import SignSplitOptions, fused_path_applies
from nalaformer.ops.linear_attention import LinearAttentionState, linear_attention
from nalaformer.ops.linear_attention.api import Output, fp32_region
from nalaformer.ops.nala_blocked import BlockedCausalNaLaAttention, BlockedNaLaAttention
from nalaformer.ops.rope import apply_rope, check_rope
from nalaformer.ops.validation import check_chunk_size, check_qkv, upcast


def nala_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    lam: float = 3.0,
    tau: float = 0.5,
    temperature: float = 1.0,
    inhibit: str = "sign",
    alpha: float = 20.0,
    power: float | None = None,
    eps: float = 1e-6,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: LinearAttentionState | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> Output:
    """Norm-aware linear attention (NaLa).

    ``phi_q = nala_query_map(q)``, ``phi_k = nala_key_map(k)`` (``[..., 2D]``), then normalised linear attention
    (see :func:`nalaformer.ops.linear_attention`). With ``rope``, each ``D``-sized half of the features is rotated in
    the numerator only and the denominator uses the un-rotated features, as in the released code.

    Args:
        q (torch.Tensor): queries ``[B, T, H, D]``.
        k (torch.Tensor): keys ``[B, T, H, D]``.
        v (torch.Tensor): values ``[B, T, H, Dv]``; the output has its dtype.
        causal (bool): causal attention (running mean over ``s <= t``). Default: False.
        rope (tuple, optional): ``(cos, sin)`` tables, each ``[T, D]`` or ``[B, T, D]`` (interleaved pairs; see
            :mod:`nalaformer.ops.rope`). Default: None.
        lam, tau, temperature, inhibit, alpha, power: feature-map options (:func:`nala_query_map`,
            :func:`nala_key_map`). Defaults: 3.0, 0.5, 1.0, "sign", 20.0, None (released code).
        eps (float): added to the mean denominator. Default: 1e-6.
        attention_mask, cu_seqlens, initial_state, output_final_state, mode, chunk_size: as in
            :func:`nalaformer.ops.linear_attention`.

    Returns:
        ``o [B, T, H, Dv]``, or ``(o, final_state)`` when ``output_final_state=True``.

    A call without RoPE, padding or carried state (the released configuration, causal or not) runs
    :mod:`~nalaformer.ops.nala_blocked`, which never materialises the features of the whole sequence; every other call
    computes the features and then :func:`~nalaformer.ops.linear_attention`.
    """
    check_qkv(q, k, v)
    check_chunk_size(chunk_size)
    blocked = (
        rope is None
        and attention_mask is None
        and cu_seqlens is None
        and initial_state is None
        and not output_final_state
        and mode in (("auto", "chunk") if causal else ("auto", "parallel"))
        and inhibit == "sign"
        and fused_path_applies(lam, tau, power, normalise=True)
        and fused_path_applies(lam, 0.0, None, normalise=False)
        and eps >= 0.0
        and math.isfinite(eps)
    )
    if blocked:
        query = SignSplitOptions(True, lam, tau, temperature, power, eps)
        key = SignSplitOptions(False, lam, eps=eps)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        with fp32_region(q.device):
            if causal:
                o = BlockedCausalNaLaAttention.apply(upcast(q), upcast(k), upcast(v), query, key, eps, chunk_size)
            else:
                o = BlockedNaLaAttention.apply(upcast(q), upcast(k), upcast(v), query, key, eps)
        return o.to(v.dtype)
    if rope is not None:
        rope = check_rope(rope, q.shape[0], q.shape[1], q.shape[-1])
    with fp32_region(q.device):
        phi_q = nala_query_map(
            q, lam=lam, tau=tau, temperature=temperature, eps=eps, inhibit=inhibit, alpha=alpha, power=power
        )
        phi_k = nala_key_map(k, lam=lam, inhibit=inhibit, alpha=alpha, eps=eps)
        phi_q_num = phi_k_num = None
        if rope is not None:
            cos, sin = rope[0].to(phi_q.dtype), rope[1].to(phi_q.dtype)
            phi_q_num = apply_rope(phi_q, cos, sin)
            phi_k_num = apply_rope(phi_k, cos, sin)
    return linear_attention(
        phi_q,
        phi_k,
        v,
        causal=causal,
        phi_q_num=phi_q_num,
        phi_k_num=phi_k_num,
        eps=eps,
        attention_mask=attention_mask,
        cu_seqlens=cu_seqlens,
        initial_state=initial_state,
        output_final_state=output_final_state,
        mode=mode,
        chunk_size=chunk_size,
    )
