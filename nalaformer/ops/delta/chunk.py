"""Chunkwise-parallel delta rule (the WY / UT representation): parallel inside a chunk, recurrent across chunks.

Inside a chunk of ``C`` tokens (cumulative log decay ``gamma_i = g_1 + ... + g_i``, zero for DeltaNet), the corrected
values ``U`` that the tokens write solve one unit lower-triangular system (derivation in this folder's README.md)::

    (I + A) U = diag(beta) V - diag(beta e^gamma) K S_0,    A_ij = beta_i e^(gamma_i - gamma_j) k_iᵀ k_j  (j < i)

so ``U = U_0 - W S_0`` with ``W, U_0`` computed for all chunks at once by a triangular solve. The loop then only
walks over chunks: ``O = (Q e^gamma) S_0 + (Q Kᵀ ∘ D) U`` and ``S_C = e^gamma_C S_0 + (K e^(gamma_C - gamma))ᵀ U``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange

from nalaformer.ops.delta.inputs import run_delta_rule_form
from nalaformer.ops.validation import check_chunk_size


def _chunk_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
    *,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    length = q.shape[1]
    size = min(chunk_size, length)
    # Padding tokens have beta = 0, g = 0, k = v = 0: they neither write nor decay, so the final state is exact.
    pad = (-length) % size
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        beta = F.pad(beta, (0, 0, 0, pad))
        g = None if g is None else F.pad(g, (0, 0, 0, pad))
    q, k, v = (rearrange(x, "b (n c) h d -> b h n c d", c=size) for x in (q, k, v))
    beta = rearrange(beta, "b (n c) h -> b h n c", c=size)

    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    if g is None:
        gamma = None
        decay = causal.to(q.dtype)
    else:
        gamma = rearrange(g, "b (n c) h -> b h n c", c=size).cumsum(-1)
        # Mask before exp: gamma_i - gamma_j > 0 above the diagonal could overflow, and 0 · inf is NaN.
        decay = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, float("-inf")).exp()

    # Strictly lower part of A; with unitriangular=True the solver uses the implicit unit diagonal of I + A.
    interaction = torch.tril(beta[..., :, None] * (k @ k.transpose(-1, -2)) * decay, diagonal=-1)
    keys_in = beta[..., None] * k if gamma is None else (beta * gamma.exp())[..., None] * k
    rhs = torch.cat([keys_in, beta[..., None] * v], dim=-1)
    solved = torch.linalg.solve_triangular(interaction, rhs, upper=False, unitriangular=True)
    w, u_base = solved.split([k.shape[-1], v.shape[-1]], dim=-1)
    scores = (q @ k.transpose(-1, -2)) * decay
    if gamma is None:
        q_from_start, k_to_end, chunk_decay = q, k, None
    else:
        q_from_start = q * gamma.exp()[..., None]
        k_to_end = k * (gamma[..., -1:] - gamma).exp()[..., None]
        chunk_decay = gamma[..., -1].exp()[..., None, None]

    # unbind once: indexing chunk n inside the loop would cost a full-size zero tensor per chunk in backward.
    per_chunk = zip(*(x.unbind(2) for x in (u_base, w, q_from_start, scores, k_to_end.transpose(-1, -2))))
    decays = [None] * q.shape[2] if chunk_decay is None else chunk_decay.unbind(2)
    outputs = []
    for (u_n, w_n, q_n, scores_n, k_n), decay_n in zip(per_chunk, decays):
        new_values = u_n - w_n @ state
        outputs.append(q_n @ state + scores_n @ new_values)
        state = (state if decay_n is None else decay_n * state) + k_n @ new_values
    o = rearrange(torch.stack(outputs, dim=2), "b h n c d -> b (n c) h d")
    return o[:, :length], state


def chunk_delta_rule(
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
    chunk_size: int = 64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel delta rule (DeltaNet; Gated DeltaNet when ``g`` is given): the training / prefill path.

    Equal to ``naive_recurrent_delta_rule`` in outputs, final state and gradients up to rounding. Arguments, returns and
    rules: see :func:`nalaformer.ops.delta.delta_rule`.
    """
    check_chunk_size(chunk_size)
    core = functools.partial(_chunk_core, chunk_size=chunk_size)
    return run_delta_rule_form(
        core, q, k, v, beta, g, scale, initial_state, output_final_state, attention_mask, cu_seqlens
    )
