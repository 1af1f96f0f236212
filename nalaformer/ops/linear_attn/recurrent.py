"""Causal normalised linear attention one step at a time (decoding, and a second reference)."""

from __future__ import annotations

import torch

from nalaformer.ops.linear_attn.naive import normalise
from nalaformer.ops.linear_attn.state import LinearAttentionState


def recurrent_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState,
    eps: float,
) -> tuple[torch.Tensor, LinearAttentionState]:
    """Scan ``T`` steps: ``S += kn_t v_tᵀ``, ``z += k_t``, ``n += 1``, ``o_t = qn_t S / (q_t · z + eps n)``.

    fp32 ``[B, H, T, F]`` features (masked keys zeroed), ``valid [B, T]``; returns ``o [B, H, T, Dv]`` and the
    state after the last step. Out-of-place updates keep it differentiable.
    """
    kv, k_sum, count = state.kv, state.k_sum, state.count
    outputs = []
    for t in range(q.shape[2]):
        kv = torch.addcmul(kv, kn[:, :, t, :, None], v[:, :, t, None, :])
        k_sum = k_sum + k[:, :, t]
        count = count + valid[:, t]
        num = (qn[:, :, t, None, :] @ kv).squeeze(-2)
        den = (q[:, :, t] * k_sum).sum(dim=-1)
        outputs.append(normalise(num.unsqueeze(2), den.unsqueeze(2), count.unsqueeze(1), eps))
    o = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return o, LinearAttentionState(kv, k_sum, count)
