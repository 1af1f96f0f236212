"""Causal normalised linear attention, chunked: masked matmuls inside a chunk, carried sums across chunks.

The work is one autograd function, :class:`CausalChunkSums`, ``out_t = a_t · (S_0 + Σ_{s <= t} b_s c_sᵀ)``, used for
the numerator (``a, b, c = qn, kn, v``) and the denominator (``q, k, 1``). Written by hand because autograd through
the plain chunked formula costs more than the matmuls on CPU: ``cumsum`` over the chunk axis is a strided scalar loop
(its backward adds two ``flip`` copies), 5-D matmuls on strided views copy their inputs on every call, and every
intermediate is saved. Here the inputs are made chunk-contiguous once, the running state over chunks is a blocked
scan of two small triangular matmuls (:func:`exclusive_scan`: a handful of kernels whatever the number of chunks; a
Python loop of one add per chunk stalls on every add when the machine's cores are shared), the intra-chunk products
accumulate in place (``baddbmm``), and backward reuses the saved state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nalaformer.ops.higher_order import reference_vjp
from nalaformer.ops.linear_attn.naive import normalise
from nalaformer.ops.linear_attn.state import LinearAttentionState


def chunk_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState | None,
    eps: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 ``[B, H, T, F]`` features (masked keys zeroed), ``valid [B, T]`` -> ``(o [B, H, T, Dv], kv, k_sum)``.

    When the numerator and denominator share their features (``qn is q and kn is k``, no RoPE), a ones column
    appended to ``v`` carries the denominator through the numerator's matmuls; otherwise the denominator is a second
    pass with ``c = 1``. ``kv [B, H, F, Dv]`` and ``k_sum [B, H, F]`` sum the whole call, without the initial state.
    """
    value_dim = v.shape[-1]
    count = valid.cumsum(dim=1)
    if state is not None:
        count = count + state.count.unsqueeze(1)
    ones = torch.ones_like(v[..., :1])
    if qn is q and kn is k:
        initial = None if state is None else torch.cat([state.kv, state.k_sum.unsqueeze(-1)], dim=-1)
        out, total = CausalChunkSums.apply(q, k, torch.cat([v, ones], dim=-1), initial, chunk_size)
        num, den = out[..., :value_dim], out[..., value_dim]
        kv, k_sum = total[..., :value_dim], total[..., value_dim]
    else:
        num, kv = CausalChunkSums.apply(qn, kn, v, None if state is None else state.kv, chunk_size)
        initial = None if state is None else state.k_sum.unsqueeze(-1)
        den, k_sum = CausalChunkSums.apply(q, k, ones, initial, chunk_size)
        den, k_sum = den[..., 0], k_sum[..., 0]
    return normalise(num, den, count, eps), kv, k_sum


def reference_causal_sums(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, initial: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`CausalChunkSums` written out quadratically with autograd-tracked ops (its double backward)."""
    out = (a @ b.transpose(-1, -2)).tril() @ c
    if initial is not None:
        out = out + a @ initial
    return out, b.transpose(-1, -2) @ c


def chunked(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, H, T, D]`` -> contiguous ``[B*H, N, C, D]`` (zero-padded to ``N * C`` tokens; a view when possible)."""
    batch, heads, seq_len, dim = x.shape
    pad = (-seq_len) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(batch * heads, -1, chunk_size, dim).contiguous()


def exclusive_scan(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """``y[:, i] = Σ_{j < i} x[:, j]`` (``reverse``: ``Σ_{j > i}``) over dim 1 of ``x [R, N, M]``.

    Up to 32 entries: one strictly triangular ``[N, N]`` matmul. Beyond, blocked: the entries are cut into groups of
    about ``sqrt(N)``; a strictly triangular ``[g, g]`` matmul scans
    inside every group, another one scans the group totals, and one add combines them (``O(N^1.5 M)`` FLOPs in a few
    large kernels rather than ``N`` small ones; ``torch.cumsum`` over a strided dimension is a scalar loop).
    """
    rows, length, width = x.shape
    if length <= 32:
        # few entries: one strictly triangular matmul
        ones = torch.ones(length, length, dtype=x.dtype, device=x.device)
        strict = ones.triu(1) if reverse else ones.tril(-1)
        return strict.expand(rows, length, length) @ x
    group = max(1, math.isqrt(length))
    groups = -(-length // group)
    pad = groups * group - length
    if pad:
        x = F.pad(x, (0, 0, pad, 0) if reverse else (0, 0, 0, pad))
    ones = torch.ones(max(group, groups), max(group, groups), dtype=x.dtype, device=x.device)
    strict = ones.triu(1) if reverse else ones.tril(-1)
    blocks = x.reshape(rows * groups, group, width)
    inside = strict[:group, :group].expand(rows * groups, group, group) @ blocks
    # each group's total: its scan's end plus the entry the strict scan leaves out
    edge = 0 if reverse else -1
    totals = (inside[:, edge] + blocks[:, edge]).reshape(rows, groups, width)
    across = strict[:groups, :groups].expand(rows, groups, groups) @ totals
    out = inside.reshape(rows, groups, group, width).add_(across.unsqueeze(2)).reshape(rows, groups * group, width)
    return out[:, pad:] if reverse else out[:, :length]


def chunk_sums_forward(
    a_c: torch.Tensor, b_c: torch.Tensor, c_c: torch.Tensor, initial: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunk-contiguous ``a_c, b_c [R, N, C, F]``, ``c_c [R, N, C, Dc]``, ``initial [R, F, Dc]`` (or None) ->
    ``(out [R, N, C, Dc], total [R, F, Dc], before [R, N, F, Dc], scores [R, N, C, C])`` (no autograd)."""
    rows, chunks = a_c.shape[:2]
    # state before each chunk: the initial state plus an exclusive running sum of the per-chunk sums
    per_chunk = b_c.transpose(-1, -2) @ c_c
    before = exclusive_scan(per_chunk.view(rows, chunks, -1)).view_as(per_chunk)
    if initial is not None:
        before += initial.unsqueeze(1)
    total = per_chunk.sum(dim=1)
    scores = (a_c @ b_c.transpose(-1, -2)).tril_()
    out = a_c @ before
    out.flatten(0, 1).baddbmm_(scores.flatten(0, 1), c_c.flatten(0, 1))
    return out, total, before, scores


def chunk_sums_backward(
    a_c: torch.Tensor,
    b_c: torch.Tensor,
    c_c: torch.Tensor,
    before: torch.Tensor,
    scores: torch.Tensor,
    grad_out: torch.Tensor,
    grad_total: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(d a_c, d b_c, d c_c, d initial)`` of :func:`chunk_sums_forward` from ``grad_out [R, N, C, Dc]``
    and ``grad_total [R, F, Dc]`` (no autograd)."""
    rows, chunks = a_c.shape[:2]
    # through out = a · before: d before = aᵀ d out. The per-chunk sums feed every later chunk's state and the total
    # (a reverse exclusive running sum); the initial state feeds every chunk's state but not the total.
    grad_before = a_c.transpose(-1, -2) @ grad_out
    grad_initial = grad_before.sum(dim=1)
    grad_per_chunk = exclusive_scan(grad_before.view(rows, chunks, -1), reverse=True).view_as(grad_before)
    del grad_before
    grad_per_chunk += grad_total.unsqueeze(1)
    grad_scores = (grad_out @ c_c.transpose(-1, -2)).tril_()
    # d a = d out · beforeᵀ + masked d scores · b
    grad_a = grad_out @ before.transpose(-1, -2)
    grad_a.flatten(0, 1).baddbmm_(grad_scores.flatten(0, 1), b_c.flatten(0, 1))
    grad_b = c_c @ grad_per_chunk.transpose(-1, -2)
    grad_b.flatten(0, 1).baddbmm_(grad_scores.flatten(0, 1).transpose(-1, -2), a_c.flatten(0, 1))
    grad_c = b_c @ grad_per_chunk
    grad_c.flatten(0, 1).baddbmm_(scores.flatten(0, 1).transpose(-1, -2), grad_out.flatten(0, 1))
    return grad_a, grad_b, grad_c, grad_initial


class CausalChunkSums(torch.autograd.Function):
    """``out_t = a_t · (S_0 + Σ_{s <= t} b_s c_sᵀ)`` and ``total = Σ_s b_s c_sᵀ``, chunk by chunk.

    ``forward(a [B, H, T, F], b [B, H, T, F], c [B, H, T, Dc], initial [B, H, F, Dc] | None, chunk_size)`` returns
    ``out [B, H, T, Dc]`` and ``total [B, H, F, Dc]`` (the initial state not included). Saves the chunked inputs,
    the state before every chunk (``[B*H, N, F, Dc]``) and the masked intra-chunk scores (``[B*H, N, C, C]``).
    """

    @staticmethod
    def forward(ctx, a, b, c, initial, chunk_size):
        batch, heads, seq_len, features = a.shape
        value_dim = c.shape[-1]
        a_c, b_c, c_c = (chunked(x, chunk_size) for x in (a, b, c))
        rows = a_c.shape[0]
        start = None if initial is None else initial.reshape(rows, features, value_dim)
        out, total, before, scores = chunk_sums_forward(a_c, b_c, c_c, start)
        ctx.save_for_backward(a_c, b_c, c_c, before, scores)
        ctx.shape = (batch, heads, seq_len, initial is not None)
        ctx.inputs = (a, b, c, initial, chunk_size)
        out = out.reshape(batch, heads, -1, value_dim)[:, :, :seq_len]
        return out, total.reshape(batch, heads, features, value_dim)

    @staticmethod
    def backward(ctx, grad_out, grad_total):
        a_c, b_c, c_c, before, scores = ctx.saved_tensors
        batch, heads, seq_len, has_initial = ctx.shape
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formula
            a, b, c, initial, _ = ctx.inputs
            grads = reference_vjp(reference_causal_sums, (a, b, c, initial), (grad_out, grad_total))
            return (*grads, None)
        rows, _, chunk_size, features = a_c.shape
        value_dim = c_c.shape[-1]
        grad_total = grad_total.reshape(rows, features, value_dim)
        grad_a, grad_b, grad_c, grad_initial = chunk_sums_backward(
            a_c, b_c, c_c, before, scores, chunked(grad_out, chunk_size), grad_total
        )

        def unchunk(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, heads, -1, x.shape[-1])[:, :, :seq_len]

        grad_initial = grad_initial.reshape(batch, heads, features, value_dim) if has_initial else None
        return unchunk(grad_a), unchunk(grad_b), unchunk(grad_c), grad_initial, None
