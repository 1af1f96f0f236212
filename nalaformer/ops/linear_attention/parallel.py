"""Non-causal normalised linear attention in O(T): the released code's mean form."""

from __future__ import annotations

import torch

from nalaformer.ops.linear_attention.naive import nonzero


def parallel_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``o_i = qn_i · [(1/n) Σ_j kn_j v_jᵀ] / (q_i · mean_j k_j + eps)`` over the ``n`` valid keys of each row.

    fp32 ``[B, H, T, F]`` features with masked keys zeroed, ``valid [B, T]`` -> ``o [B, H, T, Dv]``.
    """
    # a fully padded row has no keys: kv = 0 and k_mean = 0 give o = 0 rather than 0 / 0
    inv_count = 1.0 / valid.sum(dim=1).clamp_min(1.0)
    kv = torch.einsum("bhtf,bhtd->bhfd", kn, v) * inv_count[:, None, None, None]
    k_mean = k.sum(dim=2) * inv_count[:, None, None]
    den = nonzero((q @ k_mean.unsqueeze(-1)).squeeze(-1) + eps)
    return (qn @ kv) / den.unsqueeze(-1)
