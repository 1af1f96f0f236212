"""Recurrent delta rule for decoding: one token (or a short run of tokens) at a time from a cached state.

The update is applied as a rank-1 correction, ``O(Dk · Dv)`` per token instead of the naive ``O(Dk² · Dv)``::

    S ← alpha_t S;   u_t = beta_t (v_t - Sᵀ k_t);   S ← S + k_t u_tᵀ;   o_t = Sᵀ (scale q_t)
"""

from __future__ import annotations

import torch

from nalaformer.ops.delta.inputs import run_delta_rule_form


def _recurrent_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    # unbind once: indexing step t inside the loop would cost a full-size zero tensor per step in backward.
    decays = [None] * q.shape[1] if g is None else g.exp().unbind(1)
    outputs = []
    for q_t, k_t, v_t, beta_t, decay_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1), decays):
        if decay_t is not None:
            state = state * decay_t[..., None, None]
        # What the state currently returns for k_t, replaced by v_t with strength beta_t.
        new_value = beta_t[..., None] * (v_t - torch.einsum("bhk,bhkv->bhv", k_t, state))
        state = state + k_t[..., :, None] * new_value[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, state))
    return torch.stack(outputs, dim=1), state


def recurrent_delta_rule(
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
    """Delta rule (DeltaNet; Gated DeltaNet when ``g`` is given) stepped token by token: the decoding path.

    Meant for ``T = 1`` (or a few tokens) with the state returned by a previous call; for long sequences use
    ``chunk_delta_rule``. Arguments, returns and rules: see :func:`nalaformer.ops.delta.delta_rule`.
    """
    return run_delta_rule_form(
        _recurrent_core, q, k, v, beta, g, scale, initial_state, output_final_state, attention_mask, cu_seqlens
    )
