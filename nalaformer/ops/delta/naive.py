"""Naive recurrent delta rule: the ground-truth reference, written as the textbook matrix recurrence.

Per head, with the state ``S [Dk, Dv]``::

    S_t = alpha_t (I - beta_t k_t k_tᵀ) S_{t-1} + beta_t k_t v_tᵀ,     o_t = S_tᵀ (scale q_t)

``alpha_t = exp(g_t)`` (Gated DeltaNet) or 1 (DeltaNet). The transition matrix is built explicitly, one step at a
time, so this file shares no algebra with the chunked and recurrent forms it checks.
"""

from __future__ import annotations

import torch

from nalaformer.ops.delta.inputs import run_delta_rule_form


def _naive_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    key_dim = q.shape[-1]
    identity = torch.eye(key_dim, dtype=q.dtype, device=q.device)
    alphas = torch.ones_like(beta) if g is None else g.exp()
    outputs = []
    for q_t, k_t, v_t, beta_t, alpha_t in zip(*(x.unbind(1) for x in (q, k, v, beta, alphas))):
        beta_t, alpha_t = beta_t[..., None, None], alpha_t[..., None, None]
        transition = alpha_t * (identity - beta_t * k_t[..., :, None] * k_t[..., None, :])
        state = transition @ state + beta_t * k_t[..., :, None] * v_t[..., None, :]
        outputs.append((state * q_t[..., :, None]).sum(-2))
    return torch.stack(outputs, dim=1), state


def naive_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference delta rule (DeltaNet; Gated DeltaNet when ``g`` is given), one explicit step per token.

    Slow (a ``Dk × Dk`` transition per step); use it to check the other forms. Arguments, returns and
    rules: see :func:`nalaformer.ops.delta.delta_rule`.
    """
    return run_delta_rule_form(
        _naive_core, q, k, v, beta, g, scale, initial_state, output_final_state, attention_mask, cu_seqlens
    )
