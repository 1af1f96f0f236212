"""Non-causal NaLa straight from ``q, k, v``, a block of tokens at a time, with RoPE and padding masks.

``o_i = rot(phi_q(q_i)) · mean_j rot(phi_k(k_j)) v_jᵀ / (phi_q(q_i) · mean_j phi_k(k_j) + eps)`` over the valid keys
of the row (``rot`` = RoPE, numerator only; without RoPE ``rot`` is the identity). The forward accumulates
``[Σ_j rot(phi_k_j) v_jᵀ | Σ_j phi_k_j]`` (``[F, Dv + 1]``, the denominator's sums in the last column) block by
block, then produces each block's output. Without RoPE one matmul of the features with ``[v, 1]`` gives both sums and
one matmul of the query features with them gives numerator and denominator; with RoPE the numerator's matmul reads
the rotated features and the denominator is a matrix-vector product with the plain ones (the rotation is one
complex multiplication of a block already in cache). Backward recomputes each block's features instead of saving
them: the memory kept is ``q, k, v``, the output and a ``[B, H, T]`` denominator (a sequence that fits in one block
keeps its features instead).
"""

from __future__ import annotations

import torch

from nalaformer.ops.feature_maps import check_key_range
from nalaformer.ops.higher_order import reference_vjp
from nalaformer.ops.linear_attn.naive import naive_core, nonzero
from nalaformer.ops.linear_attn.state import LinearAttentionState
from nalaformer.ops.nala.common import (
    NaLaMap,
    block_length,
    divide_into,
    head_major,
    overflowed,
    reference_rotate,
    rotate,
    token_blocks,
)


def key_block(
    k: torch.Tensor,
    v: torch.Tensor,
    block: slice,
    key: NaLaMap,
    table: torch.Tensor | None,
    valid: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """A block's ``(keys, aux, phi_k, rot(phi_k), values)``, head-major; padded keys' features and values are 0
    (selected, so that a NaN in padding stays out of the sums).

    Without RoPE the values carry a ones column, ``[v, 1]``, through which the numerator's matmuls also sum the
    denominator's features; with RoPE the denominator has its own features and the values are ``v`` alone.
    """
    keys = head_major(k[:, block])
    features, aux = key.forward(keys)
    batch, length, heads, value_dim = v[:, block].shape
    ones = table is None
    values = v.new_empty(batch, heads, length, value_dim + ones)
    values[..., :value_dim].copy_(v[:, block].transpose(1, 2))
    if ones:
        values[..., value_dim].fill_(1.0)
    if valid is not None:
        padding = ~valid[:, None, block, None]
        features.masked_fill_(padding, 0.0)
        values.masked_fill_(padding, 0.0)
    rotated = features if table is None else rotate(features, table[:, block])
    return keys, aux, features, rotated, values


def query_block(q: torch.Tensor, block: slice, query: NaLaMap, table: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """A block's ``(queries, aux, phi_q, rot(phi_q))``, head-major."""
    queries = head_major(q[:, block])
    features, aux = query.forward(queries)
    rotated = features if table is None else rotate(features, table[:, block])
    return queries, aux, features, rotated


def gradient_of_ratio(
    grad_o: torch.Tensor, o: torch.Tensor, den: torch.Tensor, valid: torch.Tensor | None, block: slice, joint: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``o = num / den`` on a block: ``do / den`` (``[B, H, t, Dv]``) and ``-(do · o) / den``
    (``[B, H, t]``), zero at padded positions (their output is a constant 0); side by side in one ``[B, H, t, Dv + 1]``
    tensor with ``joint`` (for the ones column), else a pair."""
    grad_block = grad_o[:, block].transpose(1, 2)
    value_dim = grad_block.shape[-1]
    batch, heads, length = grad_block.shape[:3]
    grad = grad_block.new_empty(batch, heads, length, value_dim + joint)
    grad_den = grad[..., value_dim] if joint else grad_block.new_empty(batch, heads, length)
    # copied in, not reduced with out=: dynamo cannot trace out= into the strided column of the joint tensor
    grad_den.copy_((grad_block * o[:, block].transpose(1, 2)).sum(dim=-1)).neg_()
    divide_into(grad[..., :value_dim], grad_block, den[..., block, None])
    if not joint:
        grad_den /= den[..., block]
    else:
        grad[..., value_dim] /= den[..., block]
    if valid is not None:
        padding = ~valid[:, None, block]
        grad.masked_fill_(padding.unsqueeze(-1), 0.0)
        if not joint:
            grad_den.masked_fill_(padding, 0.0)
    return grad if joint else (grad, grad_den)


class NaLaNonCausal(torch.autograd.Function):
    """``forward(q, k [B, T, H, D], v [B, T, H, Dv], table, valid, query, key, eps) -> o [B, T, H, Dv]``.

    ``table``: complex RoPE table ``[1 or B, T, F/2]`` (:func:`~nalaformer.ops.nala.common.rotation_table`) or
    None; ``valid``: bool ``[B, T]`` (True = real token) or None; ``query``, ``key``: :class:`NaLaMap`. fp32 or fp64
    inputs; padded positions give 0.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, valid, query, key, eps):
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        blocks = token_blocks(seq_len, block_length(batch, heads, query.width(dim), seq_len))
        sums = q.new_zeros(batch, heads, key.width(dim), value_dim + 1)
        for block in blocks:
            keys, key_aux, key_features, key_rotated, values = key_block(k, v, block, key, table, valid)
            if table is None:
                sums += key_features.transpose(-1, -2) @ values
            else:
                sums[..., :value_dim] += key_rotated.transpose(-1, -2) @ values[..., :value_dim]
                sums[..., value_dim] += key_features.sum(dim=-2)
            if len(blocks) > 1:
                # free the block before the next one allocates its own (a loop variable lives until reassigned)
                del keys, key_aux, key_features, key_rotated, values
        if overflowed(sums):
            # keys so large that their features' sums overflow: every output would be NaN, say so instead (checked
            # on the small sums after the fact, not with a reduction over every key before)
            check_key_range(k, key.lam, q.dtype)
        count = torch.full((batch,), float(seq_len), dtype=q.dtype, device=q.device)
        if valid is not None:
            count = valid.sum(dim=1).to(q.dtype).clamp_min(1.0)
        sums /= count[:, None, None, None]
        den = q.new_empty(batch, heads, seq_len)
        o = q.new_empty(batch, seq_len, heads, value_dim)
        for block in blocks:
            queries, query_aux, query_features, query_rotated = query_block(q, block, query, table)
            if table is None:
                num_den = query_features @ sums
                num, den_block = num_den[..., :value_dim], num_den[..., value_dim]
            else:
                num = query_rotated @ sums[..., :value_dim]
                # a row times the features' transpose: matrix-vector products as [F, 1] matmuls are slow on CPU
                den_block = (sums[..., value_dim].unsqueeze(-2) @ query_features.transpose(-1, -2)).squeeze(-2)
            den[..., block] = nonzero(den_block + eps)
            divide_into(o[:, block].transpose(1, 2), num, den[..., block, None])
            del num, den_block
            if len(blocks) > 1:
                del queries, query_aux, query_features, query_rotated
        if valid is not None:
            o.masked_fill_(~valid[:, :, None, None], 0.0)
        kept = ()
        if len(blocks) == 1:
            kept = (queries, query_aux, query_features, query_rotated, keys, key_aux, key_features, key_rotated, values)
        ctx.save_for_backward(q, k, v, table, valid, count, sums, den, o, *kept)
        ctx.options = (query, key, eps)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, table, valid, count, sums, den, o, *kept = ctx.saved_tensors
        query, key, eps = ctx.options
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formulas
            grads = reference_vjp(
                lambda q, k, v: reference_nala(q, k, v, table, valid, query, key, eps, causal=False), (q, k, v), grad_o
            )
            return (*grads, None, None, None, None, None)
        batch, seq_len, heads, dim = q.shape
        value_dim = v.shape[-1]
        blocks = token_blocks(seq_len, block_length(batch, heads, query.width(dim), seq_len))
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_sums = torch.zeros_like(sums)
        for block in blocks:
            queries, query_aux, query_features, query_rotated = (
                kept[:4] if kept else query_block(q, block, query, table)
            )
            if table is None:
                grad = gradient_of_ratio(grad_o, o, den, valid, block, joint=True)
                grad_sums += query_features.transpose(-1, -2) @ grad
                grad_features = grad @ sums.transpose(-1, -2)
            else:
                grad, grad_den = gradient_of_ratio(grad_o, o, den, valid, block, joint=False)
                grad_sums[..., :value_dim] += query_rotated.transpose(-1, -2) @ grad
                grad_sums[..., value_dim] += (grad_den.unsqueeze(-2) @ query_features).squeeze(-2)
                grad_features = rotate(grad @ sums[..., :value_dim].transpose(-1, -2), table[:, block], True)
                grad_features.addcmul_(grad_den.unsqueeze(-1), sums[..., value_dim].unsqueeze(-2))
                del grad_den
            del grad
            grad_queries = query.backward(queries, query_aux, query_features, grad_features)
            grad_q[:, block].copy_(grad_queries.transpose(1, 2))
            del queries, query_aux, query_features, query_rotated, grad_features, grad_queries
        grad_sums /= count[:, None, None, None]
        grad_kv, grad_k_sum = grad_sums[..., :value_dim], grad_sums[..., value_dim]
        for block in blocks:
            keys, key_aux, key_features, key_rotated, values = (
                kept[4:] if kept else key_block(k, v, block, key, table, valid)
            )
            grad_features = values[..., :value_dim] @ grad_kv.transpose(-1, -2)
            if table is not None:
                grad_features = rotate(grad_features, table[:, block], True)
            grad_features += grad_k_sum.unsqueeze(2)
            grad_values = key_rotated @ grad_kv
            if valid is not None:
                padding = ~valid[:, None, block, None]
                grad_features.masked_fill_(padding, 0.0)
                grad_values.masked_fill_(padding, 0.0)
            grad_keys = key.backward(keys, key_aux, key_features, grad_features)
            grad_k[:, block].copy_(grad_keys.transpose(1, 2))
            grad_v[:, block].copy_(grad_values.transpose(1, 2))
            del keys, key_aux, key_features, key_rotated, values, grad_features, grad_keys, grad_values
        return grad_q, grad_k, grad_v, None, None, None, None, None


def reference_nala(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor | None,
    valid: torch.Tensor | None,
    query: NaLaMap,
    key: NaLaMap,
    eps: float,
    causal: bool,
    kv: torch.Tensor | None = None,
    k_sum: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
) -> torch.Tensor:
    """What the fast forms compute, with the reference maps, a complex multiplication for RoPE and the quadratic
    form (autograd-tracked: the double backward of the fast forms differentiates it). Head-major inside,
    ``[B, T, H, Dv]`` out; ``kv, k_sum, count`` an initial state (causal)."""
    phi_q, phi_k = query.reference(q.transpose(1, 2)), key.reference(k.transpose(1, 2))
    values = v.transpose(1, 2)
    if valid is None:
        valid = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
    keep = valid[:, None, :, None]
    phi_k = torch.where(keep, phi_k, torch.zeros((), dtype=phi_k.dtype, device=phi_k.device))
    values = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    phi_q_num, phi_k_num = phi_q, phi_k
    if table is not None:
        phi_q_num, phi_k_num = reference_rotate(phi_q, table), reference_rotate(phi_k, table)
    state = None if kv is None else LinearAttentionState(kv, k_sum, count)
    o = naive_core(phi_q, phi_k, phi_q_num, phi_k_num, values, valid.to(q.dtype), state, causal, eps)
    o = torch.where(keep, o, torch.zeros((), dtype=o.dtype, device=o.device))
    return o.transpose(1, 2)
