"""Causal normalised linear attention, chunked: masked matmuls inside a chunk, carried sums across chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nalaformer.ops.linear_attention.naive import normalise
from nalaformer.ops.linear_attention.state import LinearAttentionState


def chunk_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState | None,
    eps: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``[B, H, T, F]`` features (masked keys zeroed), ``valid [B, T]`` -> ``(o [B, H, T, Dv], kv_total)``.

    The numerator of chunk ``c`` is ``qn_c S_c + tril(qn_c kn_cᵀ) v_c`` with ``S_c`` the sum of ``kn v`` over earlier
    chunks (plus the initial state). The denominator uses a running sum of ``k`` over time, which costs as much memory
    as ``k`` itself. ``kv_total`` is ``Σ kn v`` over the whole call (for the final state).
    """
    seq_len = q.shape[2]
    pad = (-seq_len) % chunk_size
    if pad:
        qn, kn, v = (F.pad(x, (0, 0, 0, pad)) for x in (qn, kn, v))
    chunks = (seq_len + pad) // chunk_size
    qc = qn.unflatten(2, (chunks, chunk_size))
    kc = kn.unflatten(2, (chunks, chunk_size))
    vc = v.unflatten(2, (chunks, chunk_size))

    kv_chunks = kc.transpose(-1, -2) @ vc
    kv_before = kv_chunks.cumsum(dim=2) - kv_chunks
    if state is not None:
        kv_before = kv_before + state.kv.unsqueeze(2)
    keep = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~keep, 0.0)
    num = (qc @ kv_before + scores @ vc).flatten(2, 3)[:, :, :seq_len]

    k_running = k.cumsum(dim=2)
    count = valid.cumsum(dim=1)
    if state is not None:
        k_running = k_running + state.k_sum.unsqueeze(2)
        count = count + state.count.unsqueeze(1)
    den = (q * k_running).sum(dim=-1)
    return normalise(num, den, count, eps), kv_chunks.sum(dim=2)
