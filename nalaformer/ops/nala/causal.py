"""Causal NaLa straight from ``q, k, v``, in token blocks of whole chunks, with RoPE, padding and a carried state;
and the single-token decoding step.

``o_t = rot(phi_q_t) · S_t / (phi_q_t · z_t + eps n_t)`` with the running sums ``S_t = S_0 + Σ_{s <= t} rot(phi_k_s)
v_sᵀ``, ``z_t = z_0 + Σ_{s <= t} phi_k_s`` and the count ``n_t`` of real keys (``rot`` = RoPE, numerator only). Each
block is a few chunks of the chunked form (:func:`~nalaformer.ops.linear_attn.chunk.chunk_sums_forward`) started
from the running state, which is carried from block to block; backward walks the blocks in reverse with the state's
gradient. Without RoPE the denominator rides along the numerator as a ones column of the values (one set of
matmuls); with RoPE the numerator (rotated features) takes the chunked form and the denominator (plain features)
the masked scores of 16-token pieces (:func:`running_den_forward`). The features are recomputed per block in
backward; per-chunk states and masked scores are saved.
"""

from __future__ import annotations

import torch

from nalaformer.ops.higher_order import reference_vjp
from nalaformer.ops.linear_attn.chunk import chunk_sums_backward, chunk_sums_forward, chunked, exclusive_scan
from nalaformer.ops.linear_attn.naive import nonzero
from nalaformer.ops.nala.common import (
    NaLaMap,
    add_rotated,
    causal_block_length,
    divide_into,
    reference_rotate,
    token_blocks,
)
from nalaformer.ops.nala.noncausal import gradient_of_ratio, key_block, query_block, reference_nala


def _block_inputs(q, k, v, block, query, key, table, valid) -> tuple[torch.Tensor, ...]:
    """``(queries, aux, phi_q, rot(phi_q), keys, aux, phi_k, rot(phi_k), [v, 1])`` of a block, head-major."""
    return (*query_block(q, block, query, table), *key_block(k, v, block, key, table, valid))


def _unchunked(x: torch.Tensor, batch: int, heads: int, length: int) -> torch.Tensor:
    """``[B*H, N, C, X]`` -> ``[B, H, length, X]`` (the padding of the last chunk dropped)."""
    return x.reshape(batch, heads, -1, x.shape[-1])[:, :, :length]


# Tokens per piece of the denominator's running sums with RoPE (a divisor of the chunk size when possible): a piece
# of C tokens costs a C x C x F triangular matmul, so pieces shorter than the numerator's chunks cost less; the
# pieces' totals are then scanned across the block.
DEN_PIECE = 16


def den_piece(chunk_size: int) -> int:
    """Tokens per piece of :func:`running_den_forward`: :data:`DEN_PIECE` when it divides ``chunk_size`` (the block's
    pieces are then views of its chunks), else ``chunk_size``."""
    return DEN_PIECE if chunk_size % DEN_PIECE == 0 else chunk_size


def lower_ones(size: int, like: torch.Tensor) -> torch.Tensor:
    """``[size, size]`` lower-triangular ones (diagonal included) in ``like``'s dtype and device."""
    return torch.ones(size, size, dtype=like.dtype, device=like.device).tril_()


def running_den_forward(
    a_c: torch.Tensor, b_c: torch.Tensor, start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``den_t = a_t · (z_0 + Σ_{s <= t} b_s)`` for ``a_c, b_c [R, N, C, F]`` cut into pieces of ``C`` tokens and
    ``start = z_0 [R, F]``.

    Returns ``(den [R, N, C], total Σ_s b_s [R, F], before [R, N, F])`` (``before``: the sums before each piece,
    start included). Inside a piece the masked scores ``tril(a bᵀ)`` summed over their rows (a ``[C, C]`` result
    per piece: the features are read once and no running sums of the features' width are written; ``cumsum`` over
    the tokens would be a strided scalar loop on CPU); the sums before the piece (a scan of the pieces' totals)
    enter through a ``[1, F] x [F, C]`` product. The denominator has its own features once RoPE rotates the
    numerator's, so it does not ride along the numerator's matmuls as a ones column.
    """
    totals = b_c.sum(dim=2)
    before = exclusive_scan(totals).add_(start.unsqueeze(1))
    inside = torch.matmul(a_c, b_c.mT).tril_().sum(dim=-1)
    # a row times the features' transpose: matrix-vector products as [F, 1] matmuls are slow on CPU
    den = (before.unsqueeze(-2) @ a_c.mT).squeeze(-2).add_(inside)
    return den, totals.sum(dim=1), before


def running_den_backward(
    a_c: torch.Tensor, b_c: torch.Tensor, before: torch.Tensor, grad_den: torch.Tensor, grad_total: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(d a_c, d b_c, d start)`` of :func:`running_den_forward` from ``grad_den [R, N, C]`` and
    ``grad_total [R, F]``; ``d start`` counts the outputs only (the caller adds the state's pass-through).

    With ``M[t, s] = g_t`` for ``s <= t`` (0 above the diagonal) in each piece: ``d a = M b + g beforeᵀ`` and
    ``d b = Mᵀ a`` plus what reaches every later piece and the total; ``M`` is ``[C, C]`` per piece.
    """
    weights = lower_ones(a_c.shape[2], a_c) * grad_den.unsqueeze(-1)
    grad_a = torch.matmul(weights, b_c).addcmul_(grad_den.unsqueeze(-1), before.unsqueeze(2))
    grad_b = torch.matmul(weights.mT, a_c)
    # the first row of Mᵀ a sums g_t a_t over the whole piece: what b_s adds to every later piece and the total
    per_piece = grad_b[:, :, 0]
    later = exclusive_scan(per_piece, reverse=True).add_(grad_total.unsqueeze(1))
    grad_start = per_piece.sum(dim=1)
    return grad_a, grad_b.add_(later.unsqueeze(2)), grad_start


def running_counts(valid: torch.Tensor | None, count0: torch.Tensor | None, batch: int, seq_len: int, like):
    """``n_t``: real keys up to ``t`` plus the initial count, ``[B, T]``."""
    if valid is None:
        counts = torch.arange(1, seq_len + 1, dtype=like.dtype, device=like.device).expand(batch, seq_len)
    else:
        counts = valid.to(like.dtype).cumsum(dim=1)
    return counts if count0 is None else counts + count0.to(like.dtype)[:, None]


def _forward_block(
    inputs: tuple[torch.Tensor, ...], state: torch.Tensor, rope: bool, chunk_size: int, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One block started from ``state = [S | z]`` (``[B*H, F, Dv + 1]``): ``(num [B, H, t, Dv], den [B, H, t]``
    (before ``eps n``), ``total`` (the block's ``[S | z]`` sums), what backward needs``)``."""
    _, _, query_features, query_rotated, _, _, key_features, key_rotated, values = inputs
    value_dim = state.shape[-1] - 1
    if not rope:
        # the ones column of the values carries the denominator through the numerator's matmuls
        out, total, before, scores = chunk_sums_forward(
            chunked(query_features, chunk_size), chunked(key_features, chunk_size), chunked(values, chunk_size), state
        )
        out = _unchunked(out, *shape)
        return out[..., :value_dim], out[..., value_dim], total, [before, scores]
    out, kv_total, before, scores = chunk_sums_forward(
        chunked(query_rotated, chunk_size),
        chunked(key_rotated, chunk_size),
        chunked(values, chunk_size),
        state[..., :value_dim],
    )
    piece = den_piece(chunk_size)
    den, z_total, z_before = running_den_forward(
        chunked(query_features, piece), chunked(key_features, piece), state[..., value_dim]
    )
    total = torch.cat([kv_total, z_total.unsqueeze(-1)], dim=-1)
    return _unchunked(out, *shape), _unchunked(den.unsqueeze(-1), *shape)[..., 0], total, [before, scores, z_before]


def _plain_block_gradients(
    inputs: tuple[torch.Tensor, ...],
    saved: list[torch.Tensor],
    grad: torch.Tensor,
    grad_state: torch.Tensor,
    chunk_size: int,
    shape: tuple[int, int, int],
) -> tuple[torch.Tensor, ...]:
    """Backward of a block without RoPE from ``grad = [do / den | d den]`` (``[B, H, t, Dv + 1]``) and the gradient
    of the state after the block: ``(d phi_q, d phi_k, d [v, 1], d start state)``."""
    _, _, query_features, _, _, _, key_features, _, values = inputs
    grad_a, grad_b, grad_c, grad_start = chunk_sums_backward(
        chunked(query_features, chunk_size),
        chunked(key_features, chunk_size),
        chunked(values, chunk_size),
        *saved,
        chunked(grad, chunk_size),
        grad_state,
    )
    return (*(_unchunked(x, *shape) for x in (grad_a, grad_b, grad_c)), grad_start)


def _rope_block_gradients(
    inputs: tuple[torch.Tensor, ...],
    saved: list[torch.Tensor],
    grad: torch.Tensor,
    grad_den: torch.Tensor,
    grad_state: torch.Tensor,
    table: torch.Tensor,
    chunk_size: int,
    shape: tuple[int, int, int],
) -> tuple[torch.Tensor, ...]:
    """Backward of a block with RoPE (``table``: the block's rows) from ``do / den`` and ``d den``: the numerator's
    chunked form and the denominator's running sums, ``(d phi_q, d phi_k, d v, d start state)``."""
    _, _, query_features, query_rotated, _, _, key_features, key_rotated, values = inputs
    before, scores, z_before = saved
    value_dim = values.shape[-1]
    grad_a, grad_b, grad_c, grad_kv_start = chunk_sums_backward(
        chunked(query_rotated, chunk_size),
        chunked(key_rotated, chunk_size),
        chunked(values, chunk_size),
        before,
        scores,
        chunked(grad, chunk_size),
        grad_state[..., :value_dim],
    )
    piece = den_piece(chunk_size)
    grad_query_den, grad_key_den, grad_z_start = running_den_backward(
        chunked(query_features, piece),
        chunked(key_features, piece),
        z_before,
        chunked(grad_den.unsqueeze(-1), piece)[..., 0],
        grad_state[..., value_dim],
    )
    grad_start = torch.cat([grad_kv_start, grad_z_start.unsqueeze(-1)], dim=-1)
    # the numerator saw rotated features: its gradients, rotated back, join the denominator's
    grad_query_features, grad_key_features = (
        add_rotated(_unchunked(den, *shape).contiguous(), _unchunked(num, *shape).contiguous(), table, True)
        for den, num in ((grad_query_den, grad_a), (grad_key_den, grad_b))
    )
    return grad_query_features, grad_key_features, _unchunked(grad_c, *shape), grad_start


def _write_input_gradients(
    inputs: tuple[torch.Tensor, ...],
    grad_query_features: torch.Tensor,
    grad_key_features: torch.Tensor,
    grad_values: torch.Tensor,
    valid: torch.Tensor | None,
    block: slice,
    query: NaLaMap,
    key: NaLaMap,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Through the feature maps to ``q, k`` (padded keys and values get none) into ``out = (dq, dk, dv)[:, block]``."""
    queries, query_aux, query_features, _, keys, key_aux, key_features, _, _ = inputs
    if valid is not None:
        padding = ~valid[:, None, block, None]
        grad_key_features = grad_key_features.masked_fill(padding, 0.0)
        grad_values = grad_values.masked_fill(padding, 0.0)
    for grad, result in zip(
        (
            query.backward(queries, query_aux, query_features, grad_query_features),
            key.backward(keys, key_aux, key_features, grad_key_features),
            grad_values,
        ),
        out,
    ):
        result[:, block].copy_(grad.transpose(1, 2))


class NaLaCausal(torch.autograd.Function):
    """``forward(q, k, v, kv0, z0, count0, table, valid, query, key, eps, chunk_size) -> (o, kv, k_sum)``.

    ``q, k [B, T, H, D]``, ``v [B, T, H, Dv]``; ``kv0 [B, H, F, Dv]``, ``z0 [B, H, F]``, ``count0 [B]`` the initial
    state (or None); ``table`` a complex RoPE table or None; ``valid`` bool ``[B, T]`` or None. Returns the output and
    the final sums (initial state included).
    """

    @staticmethod
    def forward(ctx, q, k, v, kv0, z0, count0, table, valid, query, key, eps, chunk_size):
        batch, seq_len, heads, dim = q.shape
        value_dim, features, rows = v.shape[-1], key.width(dim), batch * heads
        blocks = token_blocks(seq_len, causal_block_length(batch, heads, features, seq_len, chunk_size))
        counts = running_counts(valid, count0, batch, seq_len, q)
        # [S | z]: the numerator's sums and, in the last column, the denominator's
        state = q.new_zeros(rows, features, value_dim + 1)
        if kv0 is not None:
            state[..., :value_dim] = kv0.reshape(rows, features, value_dim)
            state[..., value_dim] = z0.reshape(rows, features)
        den = q.new_empty(batch, heads, seq_len)
        o = q.new_empty(batch, seq_len, heads, value_dim)
        saved = []
        for block in blocks:
            inputs = _block_inputs(q, k, v, block, query, key, table, valid)
            shape = (batch, heads, block.stop - block.start)
            num, den_block, total, saved_block = _forward_block(inputs, state, table is not None, chunk_size, shape)
            saved += saved_block
            state = state + total
            den[..., block] = nonzero(den_block + eps * counts[:, None, block])
            divide_into(o[:, block].transpose(1, 2), num, den[..., block, None])
            del num, den_block
            if len(blocks) > 1:
                # free the block before the next one allocates its own (a loop variable lives until reassigned)
                del inputs
        if valid is not None:
            o.masked_fill_(~valid[:, :, None, None], 0.0)
        # a sequence that fits in one block keeps its features (cache-sized) instead of recomputing them
        kept = inputs if len(blocks) == 1 else ()
        ctx.save_for_backward(q, k, v, kv0, z0, count0, table, valid, o, den, *saved, *kept)
        ctx.options = (query, key, eps, chunk_size, len(saved))
        kv = state[..., :value_dim].reshape(batch, heads, features, value_dim)
        return o, kv, state[..., value_dim].reshape(batch, heads, features)

    @staticmethod
    def backward(ctx, grad_o, grad_kv, grad_k_sum):
        q, k, v, kv0, z0, count0, table, valid, o, den, *rest = ctx.saved_tensors
        query, key, eps, chunk_size, num_saved = ctx.options
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formulas
            def reference(q, k, v, kv0, z0):
                return reference_causal_nala(q, k, v, kv0, z0, count0, table, valid, query, key, eps)

            grads = reference_vjp(reference, (q, k, v, kv0, z0), (grad_o, grad_kv, grad_k_sum))
            return (*grads, *([None] * 7))
        batch, seq_len, heads, dim = q.shape
        value_dim, features, rows = v.shape[-1], key.width(dim), batch * heads
        blocks = token_blocks(seq_len, causal_block_length(batch, heads, features, seq_len, chunk_size))
        saved, kept = rest[:num_saved], rest[num_saved:]
        per_block = len(saved) // len(blocks)
        grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
        # the gradient of the running state after the block being processed (blocks are walked in reverse)
        grad_state = torch.cat([grad_kv.reshape(rows, features, value_dim), grad_k_sum.reshape(rows, features, 1)], -1)
        for index in range(len(blocks) - 1, -1, -1):
            block = blocks[index]
            inputs = kept if kept else _block_inputs(q, k, v, block, query, key, table, valid)
            saved_block = saved[index * per_block : (index + 1) * per_block]
            shape = (batch, heads, block.stop - block.start)
            if table is None:
                grad = gradient_of_ratio(grad_o, o, den, valid, block, joint=True)
                parts = _plain_block_gradients(inputs, saved_block, grad, grad_state, chunk_size, shape)
            else:
                grad, grad_den = gradient_of_ratio(grad_o, o, den, valid, block, joint=False)
                parts = _rope_block_gradients(
                    inputs, saved_block, grad, grad_den, grad_state, table[:, block], chunk_size, shape
                )
                del grad_den
            del grad
            grad_query_features, grad_key_features, grad_c, grad_start = parts
            # the block's start state reaches its outputs and, unchanged, the state after it
            grad_state = grad_state + grad_start
            _write_input_gradients(
                inputs, grad_query_features, grad_key_features, grad_c[..., :value_dim], valid, block, query, key, grads
            )
            del inputs, parts, grad_query_features, grad_key_features, grad_c
        grad_kv0 = grad_state[..., :value_dim].reshape(batch, heads, features, value_dim) if kv0 is not None else None
        grad_z0 = grad_state[..., value_dim].reshape(batch, heads, features) if z0 is not None else None
        return *grads, grad_kv0, grad_z0, *([None] * 7)


def reference_causal_nala(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv0: torch.Tensor | None,
    z0: torch.Tensor | None,
    count0: torch.Tensor | None,
    table: torch.Tensor | None,
    valid: torch.Tensor | None,
    query: NaLaMap,
    key: NaLaMap,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :class:`NaLaCausal` computes, written with autograd-tracked ops: ``(o, kv, k_sum)``."""
    batch, _, heads, dim = q.shape
    features, value_dim = key.width(dim), v.shape[-1]
    if kv0 is None:
        kv0 = q.new_zeros(batch, heads, features, value_dim)
        z0 = q.new_zeros(batch, heads, features)
    if count0 is None:
        count0 = q.new_zeros(batch)
    o = reference_nala(q, k, v, table, valid, query, key, eps, causal=True, kv=kv0, k_sum=z0, count=count0)
    phi_k = key.reference(k.transpose(1, 2))
    values = v.transpose(1, 2)
    if valid is not None:
        keep = valid[:, None, :, None]
        phi_k = torch.where(keep, phi_k, torch.zeros((), dtype=phi_k.dtype))
        values = torch.where(keep, values, torch.zeros((), dtype=values.dtype))
    phi_k_num = phi_k if table is None else reference_rotate(phi_k, table)
    return o, kv0 + phi_k_num.transpose(-1, -2) @ values, z0 + phi_k.sum(dim=2)


def nala_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv0: torch.Tensor | None,
    z0: torch.Tensor | None,
    count0: torch.Tensor | None,
    table: torch.Tensor | None,
    valid: torch.Tensor | None,
    query: NaLaMap,
    key: NaLaMap,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step (``T == 1``, no autograd): a handful of small ops instead of the chunk machinery.

    ``S += rot(phi_k) vᵀ``, ``z += phi_k``, ``n += 1`` (nothing for a padded token), ``o = rot(phi_q) S /
    (phi_q · z + eps n)``. Returns ``(o [B, 1, H, Dv], kv, k_sum, count)``: new tensors, the inputs are not modified.
    """
    # T == 1: [B, 1, H, D] -> [B, H, D] views, no copies
    query_features, key_features, values = query.forward(q[:, 0])[0], key.forward(k[:, 0])[0], v[:, 0]
    added = 1.0
    if valid is not None:
        padding = ~valid[:, :1, None]
        key_features, values = key_features.masked_fill(padding, 0.0), values.masked_fill(padding, 0.0)
        added = valid[:, 0].to(q.dtype)
    query_rotated, key_rotated = query_features, key_features
    if table is not None:
        # both feature vectors rotated in one complex multiplication (the table spans the features: one row per
        # batch row)
        batch, heads, features = query_features.shape
        pairs = torch.view_as_complex(torch.stack([query_features, key_features]).view(2, batch, heads, -1, 2))
        factor = table[:, 0]
        query_rotated, key_rotated = torch.view_as_real(pairs * factor[:, None]).view(2, batch, heads, features)
    # S + rot(phi_k) vᵀ and rot(phi_q) S as one fused multiply-add and one batched product each
    kv = (
        key_rotated.unsqueeze(-1) * values.unsqueeze(-2)
        if kv0 is None
        else kv0.addcmul(key_rotated.unsqueeze(-1), values.unsqueeze(-2))
    )
    k_sum = key_features if z0 is None else z0 + key_features
    count = (torch.ones_like(q[:, 0, 0, 0]) * added) if count0 is None else count0 + added
    num = torch.matmul(query_rotated.unsqueeze(-2), kv).squeeze(-2)
    den = torch.linalg.vecdot(query_features, k_sum).add_(eps * count[:, None])
    o = (num / nonzero(den).unsqueeze(-1)).unsqueeze(1)
    if valid is not None:
        o = o.masked_fill(~valid[:, :, None, None], 0.0)
    return o, kv, k_sum, count


def first_nonfinite_key(
    k: torch.Tensor, v: torch.Tensor, key: NaLaMap, table: torch.Tensor | None, valid: torch.Tensor | None
) -> int | None:
    """The first position whose (real) key features or value hold a NaN or an infinity, or None."""
    batch, seq_len, heads, dim = k.shape
    for block in token_blocks(seq_len, causal_block_length(batch, heads, key.width(dim), seq_len, 1)):
        _, _, features, rotated, values = key_block(k, v, block, key, table, valid)
        finite = features.isfinite().all(-1) & rotated.isfinite().all(-1) & values.isfinite().all(-1)
        bad = (~finite).flatten(0, 1).any(dim=0).nonzero()
        if bad.numel():
            return block.start + int(bad[0])
    return None
