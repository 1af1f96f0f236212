"""``delta_rule``: the one entry point that picks the naive, chunked or recurrent form."""

from __future__ import annotations

import torch

from nalaformer.ops.delta.chunk import chunk_delta_rule
from nalaformer.ops.delta.inputs import check_mode
from nalaformer.ops.delta.naive import naive_recurrent_delta_rule
from nalaformer.ops.delta.recurrent import recurrent_delta_rule
from nalaformer.ops.validation import check_chunk_size

# At or below this many tokens "auto" steps token by token (decoding). Measured on CPU (H=4, D=64): recurrent
# 0.11 ms vs chunk 0.28 ms at T=1, about equal at T=4, chunk 8x faster at T=64.
RECURRENT_MAX_TOKENS = 2


def delta_rule(
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
    mode: str = "auto",
    chunk_size: int = 64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Causal delta rule: DeltaNet, or Gated DeltaNet when ``g`` is given.

    Per batch row and head, with the state ``S [Dk, Dv]`` (``S_0 = initial_state`` or zeros)::

        S_t = alpha_t (I - beta_t k_t k_tᵀ) S_{t-1} + beta_t k_t v_tᵀ,     o_t = scale · S_tᵀ q_t

    where ``alpha_t = exp(g_t)`` (1 without ``g``); the output at ``t`` is read after the update at ``t``.

    Keys are assumed L2-normalised by the caller (not checked, not done here): the transition has eigenvalue
    ``1 - beta_t ||k_t||²`` along ``k_t``, so the recursion stays bounded only when ``beta_t ||k_t||² <= 2``, i.e.
    ``||k_t|| <= 1`` with ``beta_t`` in (0, 2). Queries need no normalisation (they only read the state).

    Args:
        q: ``[B, T, H, Dk]`` queries; any float dtype. The output has this dtype.
        k: ``[B, T, H, Dk]`` keys, the dtype of ``q``, L2-normalised along ``Dk``.
        v: ``[B, T, H, Dv]`` values, the dtype of ``q``; ``Dv`` may differ from ``Dk``.
        beta: ``[B, T, H]`` write strengths, any float dtype; in (0, 1), or in (0, 2) to allow negative eigenvalues.
        g: ``[B, T, H]`` log of the decay ``alpha_t`` (``<= 0``), any float dtype; default ``None`` (DeltaNet).
        scale: query scale, a real number; default ``None`` = ``Dk ** -0.5``.
        initial_state: ``[B, H, Dk, Dv]`` state to resume from (``[N, H, Dk, Dv]``, one per sequence, with
            ``cu_seqlens``), any float dtype (used in fp32); default ``None`` = zeros.
        output_final_state: return ``(o, final_state)`` instead of ``o``; default ``False``.
        attention_mask: ``[B, T]`` bool or 0/1 (1 = real token); default ``None``. A padded token leaves the state
            untouched (no write, no decay) and its output is zero, so left and right padding both work.
        cu_seqlens: ``[N + 1]`` integer cumulative lengths (FlashAttention convention: starts at 0, strictly
            increasing, ends at ``T``) of ``N`` sequences packed into ``B == 1``; equals ``N`` separate calls.
            Default ``None``; not combined with ``attention_mask``.
        mode: ``"auto"`` (recurrent for at most ``RECURRENT_MAX_TOKENS`` tokens, else chunk), ``"naive"``,
            ``"chunk"`` or ``"recurrent"``; default ``"auto"``.
        chunk_size: tokens per chunk for the chunked form, a positive int; default 64.

    Returns:
        ``o [B, T, H, Dv]`` in the dtype of ``q``; with ``output_final_state`` the pair ``(o, final_state)``,
        ``final_state [B, H, Dk, Dv]`` (``[N, H, Dk, Dv]`` with ``cu_seqlens``) in fp32, or fp64 for fp64 inputs.
        All arithmetic runs in fp32 (fp64 for fp64 inputs) with autocast disabled.

    Raises:
        TypeError: non-tensor inputs, integer / bool dtypes, ``q``, ``k``, ``v`` of different dtypes.
        ValueError: wrong ranks or shapes, mismatched ``B`` / ``T`` / ``H``, a state of the wrong shape, bad
            ``cu_seqlens`` or ``attention_mask``, ``chunk_size <= 0``, an unknown ``mode``.
    """
    mode = check_mode(mode)
    check_chunk_size(chunk_size)
    if mode == "auto":
        length = q.shape[1] if isinstance(q, torch.Tensor) and q.ndim == 4 else 0
        if cu_seqlens is not None and isinstance(cu_seqlens, torch.Tensor) and cu_seqlens.numel() > 1:
            length = int(cu_seqlens.diff().max())
        mode = "recurrent" if length <= RECURRENT_MAX_TOKENS else "chunk"
    kwargs = {
        "g": g,
        "scale": scale,
        "initial_state": initial_state,
        "output_final_state": output_final_state,
        "attention_mask": attention_mask,
        "cu_seqlens": cu_seqlens,
    }
    if mode == "naive":
        return naive_recurrent_delta_rule(q, k, v, beta, **kwargs)
    if mode == "recurrent":
        return recurrent_delta_rule(q, k, v, beta, **kwargs)
    return chunk_delta_rule(q, k, v, beta, chunk_size=chunk_size, **kwargs)
