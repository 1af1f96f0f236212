"""Quadratic reference: the ``T x T`` weight matrix written out. For tests and analysis only."""

from __future__ import annotations

import torch

from nalaformer.ops.linear_attn.state import LinearAttentionState


def normalise(num: torch.Tensor, den: torch.Tensor, count: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / (den + eps * count)``; a zero denominator (no key seen, or with ``eps=0`` no key sharing support with
    the query, where non-negative features make ``num`` zero too) gives 0 instead of 0 / 0.

    Shapes: ``num [B, H, T, Dv]``, ``den [B, H, T]``, ``count [B, T]`` (broadcast over heads).
    """
    return num / nonzero(den + eps * count.unsqueeze(1)).unsqueeze(-1)


def nonzero(denominator: torch.Tensor) -> torch.Tensor:
    """Replace exact zeros of a denominator by 1."""
    return torch.where(denominator != 0, denominator, torch.ones_like(denominator))


def final_state(
    k: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState | None,
    kv: torch.Tensor | None = None,
) -> LinearAttentionState:
    """State after summing every (already masked) key of the call on top of ``state``.

    ``kv`` may pass ``Σ kn vᵀ`` when the caller already has it.
    """
    if kv is None:
        kv = torch.einsum("bhtf,bhtd->bhfd", kn, v)
    k_sum = k.sum(dim=2)
    return LinearAttentionState(kv, k_sum, valid.sum(dim=1)).plus(state)


def naive_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState | None,
    causal: bool,
    eps: float,
) -> torch.Tensor:
    """fp32 ``[B, H, T, F]`` features (masked keys already zeroed), ``valid [B, T]`` -> ``o [B, H, T, Dv]``."""
    scores_num = qn @ kn.transpose(-1, -2)
    scores_den = q @ k.transpose(-1, -2)
    if causal:
        seq_len = q.shape[2]
        keep = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()
        scores_num = scores_num.masked_fill(~keep, 0.0)
        scores_den = scores_den.masked_fill(~keep, 0.0)
        count = valid.cumsum(dim=1)
    else:
        count = valid.sum(dim=1, keepdim=True).expand_as(valid)
    num = scores_num @ v
    den = scores_den.sum(dim=-1)
    if state is not None:
        num = num + qn @ state.kv
        den = den + (q * state.k_sum.unsqueeze(2)).sum(dim=-1)
        count = count + state.count.unsqueeze(1)
    return normalise(num, den, count, eps)
