"""Non-causal NaLa straight from ``q, k, v``, a block of tokens at a time: the ``2D``-wide features never exist for the
whole sequence.

Feature maps followed by :func:`~nalaformer.ops.linear_attention` write ``phi_q`` and ``phi_k`` (``[B, T, H, 2D]``,
twice the size of ``q``) to memory, read them back in the matmuls, keep them for backward and receive gradients of the
same size. On CPU that traffic, and the page faults of freshly allocated tensors of that size, cost more than the
matmuls. Here the sequence is cut into blocks small enough to stay in cache (``2^18`` feature elements): the forward
accumulates ``Σ_j phi_k(k_j) [v_j, 1]ᵀ`` block by block (the ones column carries the denominator), then produces each
block's output; the backward recomputes each block's features (cheap, in cache) instead of saving them, so the memory
kept for backward is ``q, k, v``, the output and a ``[B, H, T]`` denominator (a sequence that fits in one block keeps
its features instead: they are small and recomputing them would cost as much as the rest).

Covers the released configuration and everything with the same structure: non-causal, sign split, exponents > 1, no
RoPE, no padding mask; :func:`~nalaformer.ops.nala_attention` uses it when those hold.
"""

from __future__ import annotations

import torch

from nalaformer.ops.fused_features import (
    SignSplitOptions,
    reference_features,
    sign_split_backward,
    sign_split_forward,
)
from nalaformer.ops.higher_order import reference_vjp
from nalaformer.ops.linear_attention.naive import nonzero
from nalaformer.ops.linear_attention.parallel import reference_parallel

# features per block (1 MiB of fp32 stays in cache); a sequence with at most SINGLE_BLOCK_ELEMENTS is one block
BLOCK_ELEMENTS = 1 << 18
SINGLE_BLOCK_ELEMENTS = 1 << 19


def block_length(batch: int, heads: int, features: int, seq_len: int) -> int:
    """Tokens per block: the whole sequence when its features are few (then they are kept for backward), else about
    :data:`BLOCK_ELEMENTS` features per block (at least 64 tokens)."""
    per_token = max(1, batch * heads * features)
    if seq_len * per_token <= SINGLE_BLOCK_ELEMENTS:
        return seq_len
    return max(64, BLOCK_ELEMENTS // per_token)


def _blocks(seq_len: int, length: int) -> list[slice]:
    return [slice(start, min(seq_len, start + length)) for start in range(0, seq_len, length)]


def _head_major(x: torch.Tensor) -> torch.Tensor:
    """A ``[B, t, H, D]`` block as a contiguous ``[B, H, t, D]`` copy."""
    return x.transpose(1, 2).contiguous()


class BlockedNaLaAttention(torch.autograd.Function):
    """``o = phi_q(q) · mean_j(phi_k(k_j) v_jᵀ) / (phi_q(q) · mean_j phi_k(k_j) + eps)``, non-causal, in token blocks.

    ``forward(q [B, T, H, D], k [B, T, H, D], v [B, T, H, Dv], query: SignSplitOptions, key: SignSplitOptions, eps)``
    with fp32 or fp64 inputs returns ``o [B, T, H, Dv]`` in their dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, query, key, eps):
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        blocks = _blocks(seq_len, block_length(batch, heads, 2 * dim, seq_len))
        # [Σ phi_k vᵀ, Σ phi_k] / T side by side (the ones column): one matmul per block gives numerator and denominator
        sums = q.new_zeros(batch, heads, 2 * dim, value_dim + 1)
        for block in blocks:
            keys = _head_major(k[:, block])
            key_features, _ = sign_split_forward(keys, key)
            values = q.new_empty(batch, heads, block.stop - block.start, value_dim + 1)
            values[..., :value_dim].copy_(v[:, block].transpose(1, 2))
            values[..., value_dim].fill_(1.0)
            sums += key_features.transpose(-1, -2) @ values
        sums /= seq_len
        den = q.new_empty(batch, heads, seq_len)
        o = q.new_empty(batch, seq_len, heads, value_dim)
        for block in blocks:
            queries = _head_major(q[:, block])
            query_features, norm = sign_split_forward(queries, query)
            num_den = query_features @ sums
            den[..., block] = nonzero(num_den[..., value_dim] + eps)
            torch.div(num_den[..., :value_dim], den[..., block, None], out=o[:, block].transpose(1, 2))
        # a sequence that fits in one block keeps that block's features (cache-sized) instead of recomputing them
        kept = (queries, norm, query_features, keys, key_features) if len(blocks) == 1 else ()
        ctx.save_for_backward(q, k, v, sums, den, o, *kept)
        ctx.options = (query, key, eps)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, sums, den, o, *kept = ctx.saved_tensors
        query, key, eps = ctx.options
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formulas
            grads = reference_vjp(lambda q, k, v: reference_nala(q, k, v, query, key, eps), (q, k, v), grad_o)
            return (*grads, None, None, None)
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        blocks = _blocks(seq_len, block_length(batch, heads, 2 * dim, seq_len))
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_sums = torch.zeros_like(sums)
        for block in blocks:
            queries, norm, query_features = kept[:3] if kept else (_head_major(q[:, block]), None, None)
            if not kept:
                query_features, norm = sign_split_forward(queries, query)
            grad_block = grad_o[:, block].transpose(1, 2)
            # d/dnum = do / den and d/dden = -(do · o) / den, side by side like the sums
            grad_num_den = q.new_empty(batch, heads, block.stop - block.start, value_dim + 1)
            grad_num_den[..., :value_dim].copy_(grad_block)
            torch.sum(grad_block * o[:, block].transpose(1, 2), dim=-1, out=grad_num_den[..., value_dim]).neg_()
            grad_num_den /= den[..., block, None]
            grad_sums += query_features.transpose(-1, -2) @ grad_num_den
            grad_features = grad_num_den @ sums.transpose(-1, -2)
            grad_queries = sign_split_backward(queries, norm, query_features, grad_features, query)
            grad_q[:, block].copy_(grad_queries.transpose(1, 2))
        grad_sums /= seq_len
        grad_kv, grad_k_sum = grad_sums[..., :value_dim], grad_sums[..., value_dim]
        for block in blocks:
            keys, key_features = kept[3:] if kept else (_head_major(k[:, block]), None)
            if not kept:
                key_features, _ = sign_split_forward(keys, key)
            values = v[:, block].transpose(1, 2)
            grad_features = (values @ grad_kv.transpose(-1, -2)).add_(grad_k_sum.unsqueeze(2))
            grad_keys = sign_split_backward(keys, None, key_features, grad_features, key)
            grad_k[:, block].copy_(grad_keys.transpose(1, 2))
            grad_v[:, block].copy_((key_features @ grad_kv).transpose(1, 2))
        return grad_q, grad_k, grad_v, None, None, None


def reference_nala(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query: SignSplitOptions,
    key: SignSplitOptions,
    eps: float,
) -> torch.Tensor:
    """What :class:`BlockedNaLaAttention` computes, with the reference maps and the plain mean form (autograd)."""
    phi_q, phi_k = (reference_features(x, options).transpose(1, 2) for x, options in ((q, query), (k, key)))
    inv_count = torch.full((q.shape[0],), 1.0 / q.shape[1], dtype=q.dtype, device=q.device)
    return reference_parallel(phi_q, phi_k, phi_q, phi_k, v.transpose(1, 2), inv_count, eps).transpose(1, 2)
