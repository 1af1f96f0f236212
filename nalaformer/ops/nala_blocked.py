"""Non-causal NaLa straight from ``q, k, v``, a block of tokens at a time: the ``2D``-wide features never exist for the
whole sequence.

Feature maps followed by :func:`~nalaformer.ops.linear_attention` write ``phi_q`` and ``phi_k`` (``[B, T, H, 2D]``,
twice the size of ``q``) to memory, read them back in the matmuls, keep them for backward and receive gradients of the
same size. On CPU that traffic, and the page faults of freshly allocated tensors of that size, cost more than the
matmuls. Here the sequence is cut into blocks small enough to stay in cache (at most ``2^18`` feature elements). The
forward accumulates ``Σ_j phi_k(k_j) [v_j, 1]ᵀ`` block by block (the ones column carries the denominator), then
produces each block's output. The backward recomputes each block's features (cheap, in cache) instead of saving them,
so the memory kept for backward is ``q, k, v``, the output and a ``[B, H, T]`` denominator; a sequence that fits in
one block keeps its features instead (they are small, and recomputing them would cost as much as the rest).

The causal form (:class:`BlockedCausalNaLaAttention`) works the same way: each block is a few chunks of the chunked
form (:func:`~nalaformer.ops.linear_attention.chunk.chunk_sums_forward`) started from the running state, which is
carried from block to block; backward walks the blocks in reverse with the state's gradient.

Both cover the released configuration and everything with the same structure: sign split, exponents > 1, no RoPE, no
padding mask, no carried state in or out; :func:`~nalaformer.ops.nala_attention` uses them when those hold.
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
from nalaformer.ops.linear_attention.chunk import chunk_sums_backward, chunk_sums_forward, chunked
from nalaformer.ops.linear_attention.naive import naive_core, nonzero
from nalaformer.ops.linear_attention.parallel import reference_parallel

# Features per block: at most BLOCK_ELEMENTS (1 MiB of fp32 stays in cache) and, for mid-length sequences, a 16th of
# the sequence's features (at least MIN_BLOCK_ELEMENTS), so that the per-block working memory, a constant on top of the
# O(T) memory, stays small next to it; a sequence with at most SINGLE_BLOCK_ELEMENTS features is one block.
BLOCK_ELEMENTS = 1 << 18
MIN_BLOCK_ELEMENTS = 1 << 17
SINGLE_BLOCK_ELEMENTS = 1 << 19


def block_length(batch: int, heads: int, features: int, seq_len: int) -> int:
    """Tokens per block: the whole sequence when its features are few (then they are kept for backward), else the
    block size the module's constants describe (at least 64 tokens)."""
    per_token = max(1, batch * heads * features)
    total = seq_len * per_token
    if total <= SINGLE_BLOCK_ELEMENTS:
        return seq_len
    elements = min(BLOCK_ELEMENTS, max(MIN_BLOCK_ELEMENTS, total // 16))
    return max(64, elements // per_token)


def causal_block_length(batch: int, heads: int, features: int, seq_len: int, chunk_size: int) -> int:
    """:func:`block_length` rounded to whole chunks (at least one)."""
    length = block_length(batch, heads, features, seq_len)
    if length >= seq_len:
        return seq_len
    return max(chunk_size, length // chunk_size * chunk_size)


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
            if len(blocks) > 1:
                # free the block before the next one allocates its own (a loop variable lives until reassigned)
                del keys, key_features, values
        sums /= seq_len
        den = q.new_empty(batch, heads, seq_len)
        o = q.new_empty(batch, seq_len, heads, value_dim)
        for block in blocks:
            queries = _head_major(q[:, block])
            query_features, norm = sign_split_forward(queries, query)
            num_den = query_features @ sums
            den[..., block] = nonzero(num_den[..., value_dim] + eps)
            torch.div(num_den[..., :value_dim], den[..., block, None], out=o[:, block].transpose(1, 2))
            del num_den
            if len(blocks) > 1:
                del queries, query_features, norm
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
            del grad_num_den
            grad_queries = sign_split_backward(queries, norm, query_features, grad_features, query)
            grad_q[:, block].copy_(grad_queries.transpose(1, 2))
            del queries, norm, query_features, grad_features, grad_queries
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
            del keys, key_features, grad_features, grad_keys
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


class BlockedCausalNaLaAttention(torch.autograd.Function):
    """Causal NaLa ``o_t = phi_q(q_t) · S_t / (phi_q(q_t) · z_t + eps · t)`` (running sums over ``s <= t``), computed
    in token blocks of whole chunks from ``q, k, v``.

    ``forward(q [B, T, H, D], k [B, T, H, D], v [B, T, H, Dv], query, key: SignSplitOptions, eps, chunk_size)`` with
    fp32 or fp64 inputs returns ``o [B, T, H, Dv]``. Saves ``q, k, v``, the output, the ``[B, H, T]`` denominator and
    each block's per-chunk states and masked scores (``F·(Dv+1)/C + C`` numbers per token and head: recomputing them
    would cost two of backward's eleven matmuls); the features are recomputed per block.
    """

    @staticmethod
    def forward(ctx, q, k, v, query, key, eps, chunk_size):
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        rows = batch * heads
        blocks = _blocks(seq_len, causal_block_length(batch, heads, 2 * dim, seq_len, chunk_size))
        # [Σ phi_k vᵀ, Σ phi_k] so far, side by side (the ones column carries the denominator)
        state = q.new_zeros(rows, 2 * dim, value_dim + 1)
        den = q.new_empty(batch, heads, seq_len)
        o = q.new_empty(batch, seq_len, heads, value_dim)
        states, scores = [], []
        for block in blocks:
            inputs = _causal_block_inputs(q, k, v, block, query, key)
            a_c, b_c, c_c = (chunked(x, chunk_size) for x in (inputs[2], inputs[4], inputs[5]))
            out, total, before, block_scores = chunk_sums_forward(a_c, b_c, c_c, state)
            states.append(before)
            scores.append(block_scores)
            state = state + total
            out = out.reshape(batch, heads, -1, value_dim + 1)[:, :, : block.stop - block.start]
            count = torch.arange(block.start + 1, block.stop + 1, dtype=q.dtype, device=q.device)
            den[..., block] = nonzero(out[..., value_dim] + eps * count)
            torch.div(out[..., :value_dim], den[..., block, None], out=o[:, block].transpose(1, 2))
            del out, a_c, b_c, c_c
            if len(blocks) > 1:
                # free the block before the next one allocates its own (a loop variable lives until reassigned)
                del inputs
        # a sequence that fits in one block keeps its features (cache-sized) instead of recomputing them
        kept = inputs if len(blocks) == 1 else ()
        ctx.save_for_backward(q, k, v, o, den, *states, *scores, *kept)
        ctx.options = (query, key, eps, chunk_size)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, den, *rest = ctx.saved_tensors
        query, key, eps, chunk_size = ctx.options
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formulas
            grads = reference_vjp(lambda q, k, v: reference_causal_nala(q, k, v, query, key, eps), (q, k, v), grad_o)
            return (*grads, None, None, None, None)
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        blocks = _blocks(seq_len, causal_block_length(batch, heads, 2 * dim, seq_len, chunk_size))
        states, scores, kept = rest[: len(blocks)], rest[len(blocks) : 2 * len(blocks)], rest[2 * len(blocks) :]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        # the gradient of the running state after the block being processed (blocks are walked in reverse)
        grad_state = q.new_zeros(batch * heads, 2 * dim, value_dim + 1)
        for index in range(len(blocks) - 1, -1, -1):
            block = blocks[index]
            length = block.stop - block.start
            queries, norm, query_features, keys, key_features, values = (
                kept if kept else _causal_block_inputs(q, k, v, block, query, key)
            )
            a_c, b_c, c_c = (chunked(x, chunk_size) for x in (query_features, key_features, values))
            grad_block = grad_o[:, block].transpose(1, 2)
            # d/dnum = do / den and d/dden = -(do · o) / den, side by side like the ones column
            grad_num_den = q.new_empty(batch, heads, length, value_dim + 1)
            grad_num_den[..., :value_dim].copy_(grad_block)
            torch.sum(grad_block * o[:, block].transpose(1, 2), dim=-1, out=grad_num_den[..., value_dim]).neg_()
            grad_num_den /= den[..., block, None]
            grad_a, grad_b, grad_c, grad_start = chunk_sums_backward(
                a_c, b_c, c_c, states[index], scores[index], chunked(grad_num_den, chunk_size), grad_state
            )
            del grad_num_den
            # the block's start state reaches its outputs and, unchanged, the state after it
            grad_state = grad_state + grad_start
            grad_a, grad_b, grad_c = (_unchunked(x, batch, heads, length) for x in (grad_a, grad_b, grad_c))
            grad_queries = sign_split_backward(queries, norm, query_features, grad_a, query)
            grad_keys = sign_split_backward(keys, None, key_features, grad_b, key)
            grad_q[:, block].copy_(grad_queries.transpose(1, 2))
            grad_k[:, block].copy_(grad_keys.transpose(1, 2))
            grad_v[:, block].copy_(grad_c[..., :value_dim].transpose(1, 2))
            del queries, norm, query_features, keys, key_features, values, a_c, b_c, c_c
            del grad_a, grad_b, grad_c, grad_queries, grad_keys
        return grad_q, grad_k, grad_v, None, None, None, None


def _unchunked(x: torch.Tensor, batch: int, heads: int, length: int) -> torch.Tensor:
    """``[B*H, N, C, D]`` -> ``[B, H, length, D]`` (the padding of the last chunk dropped)."""
    return x.reshape(batch, heads, -1, x.shape[-1])[:, :, :length]


def _causal_block_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: slice, query: SignSplitOptions, key: SignSplitOptions
) -> tuple[torch.Tensor, ...]:
    """A block's ``(queries, norm, query features, keys, key features, [v, 1])``, all head-major."""
    queries, keys = _head_major(q[:, block]), _head_major(k[:, block])
    query_features, norm = sign_split_forward(queries, query)
    key_features, _ = sign_split_forward(keys, key)
    batch, length, heads, value_dim = v[:, block].shape
    values = q.new_empty(batch, heads, length, value_dim + 1)
    values[..., :value_dim].copy_(v[:, block].transpose(1, 2))
    values[..., value_dim].fill_(1.0)
    return queries, norm, query_features, keys, key_features, values


def reference_causal_nala(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query: SignSplitOptions,
    key: SignSplitOptions,
    eps: float,
) -> torch.Tensor:
    """What :class:`BlockedCausalNaLaAttention` computes: reference maps and the quadratic causal form (autograd)."""
    phi_q, phi_k = (reference_features(x, options).transpose(1, 2) for x, options in ((q, query), (k, key)))
    valid = torch.ones(q.shape[:2], dtype=q.dtype, device=q.device)
    o = naive_core(phi_q, phi_k, phi_q, phi_k, v.transpose(1, 2), valid, None, True, eps)
    return o.transpose(1, 2)
