"""Non-causal normalised linear attention in O(T): the released code's mean form, with a hand-written backward.

Autograd through the plain formula records a ``[T, F]`` outer product for the denominator's gradient, a gradient
accumulation when the numerator and denominator share their features, and the division's own chain of passes. Here
the gradient is written out: when the numerator and the denominator use the same features (no RoPE), the sums
``Σ_j k_j v_jᵀ`` and ``Σ_j k_j`` sit side by side in one ``[F, Dv + 1]`` matrix (the "ones column": ``k`` times
``[v, 1]``), so one matmul gives the numerator and the denominator, and in backward one matmul gives the query's
gradient through both.
"""

from __future__ import annotations

import torch

from nalaformer.ops.higher_order import reference_vjp
from nalaformer.ops.linear_attn.naive import nonzero


def parallel_core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``o_i = qn_i · [(1/n) Σ_j kn_j v_jᵀ] / (q_i · mean_j k_j + eps)`` over the ``n`` valid keys of each row.

    fp32 (or fp64) ``[B, H, T, F]`` features with masked keys zeroed, ``valid [B, T]`` -> ``o [B, H, T, Dv]``.
    ``qn is q`` and ``kn is k`` (no separate numerator features) take the shared-features path.
    """
    # a fully padded row has no keys: kv = 0 and k_mean = 0 give o = 0 rather than 0 / 0
    inv_count = 1.0 / valid.sum(dim=1).clamp_min(1.0)
    if qn is q and kn is k:
        return SharedFeatureParallelAttention.apply(q, k, v, inv_count, eps)
    return SeparateFeatureParallelAttention.apply(q, k, qn, kn, v, inv_count, eps)


def reference_parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    v: torch.Tensor,
    inv_count: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The mean form written with autograd-tracked ops (the functions' double backward differentiates it)."""
    kv = torch.einsum("bhtf,bhtd->bhfd", kn, v) * inv_count[:, None, None, None]
    k_mean = k.sum(dim=2) * inv_count[:, None, None]
    den = nonzero((q @ k_mean.unsqueeze(-1)).squeeze(-1) + eps)
    return (qn @ kv) / den.unsqueeze(-1)


def _output_buffer(like: torch.Tensor, value_dim: int) -> torch.Tensor:
    """An output ``[B, H, T, Dv]`` stored as ``[B, T, H, Dv]``: the layout the caller transposes back to."""
    batch, heads, seq_len = like.shape[:3]
    return like.new_empty(batch, seq_len, heads, value_dim).transpose(1, 2)


class SharedFeatureParallelAttention(torch.autograd.Function):
    """Non-causal attention whose numerator and denominator use the same features ``q``, ``k``.

    ``forward(q [B, H, T, F], k [B, H, T, F], v [B, H, T, Dv], inv_count [B], eps) -> o [B, H, T, Dv]``.
    Saves the inputs, the ``[B, H, F, Dv + 1]`` sums, the ``[B, H, T]`` denominator and the output.
    """

    @staticmethod
    def forward(ctx, q, k, v, inv_count, eps):
        value_dim = v.shape[-1]
        scale = inv_count[:, None, None, None]
        # [Σ k vᵀ, Σ k] / n side by side: one matmul below gives numerator and denominator
        sums = torch.cat([k.transpose(-1, -2) @ v, k.sum(dim=2).unsqueeze(-1)], dim=-1).mul_(scale)
        num_den = q @ sums
        den = nonzero(num_den[..., value_dim] + eps)
        o = torch.div(num_den[..., :value_dim], den.unsqueeze(-1), out=_output_buffer(q, value_dim))
        ctx.save_for_backward(q, k, v, inv_count, sums, den, o)
        ctx.eps = eps
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, inv_count, sums, den, o = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: a differentiable gradient through the plain formula
            eps = ctx.eps
            grads = reference_vjp(lambda q, k, v: reference_parallel(q, k, q, k, v, inv_count, eps), (q, k, v), grad_o)
            return (*grads, None, None)
        value_dim = v.shape[-1]
        scale = inv_count[:, None, None, None]
        # d/dnum = do / den; d/dden = -(do · o) / den, side by side like the forward sums
        grad_num_den = torch.cat([grad_o, -(grad_o * o).sum(dim=-1, keepdim=True)], dim=-1).div_(den.unsqueeze(-1))
        grad_q = grad_num_den @ sums.transpose(-1, -2)
        grad_sums = (q.transpose(-1, -2) @ grad_num_den).mul_(scale)
        grad_kv, grad_k_sum = grad_sums[..., :value_dim], grad_sums[..., value_dim]
        grad_k = (v @ grad_kv.transpose(-1, -2)).add_(grad_k_sum.unsqueeze(2))
        grad_v = k @ grad_kv
        return grad_q, grad_k, grad_v, None, None


class SeparateFeatureParallelAttention(torch.autograd.Function):
    """Non-causal attention with numerator features ``qn``, ``kn`` (e.g. RoPE-rotated) and denominator ``q``, ``k``.

    ``forward(q, k, qn, kn [B, H, T, F], v [B, H, T, Dv], inv_count [B], eps) -> o [B, H, T, Dv]``.
    """

    @staticmethod
    def forward(ctx, q, k, qn, kn, v, inv_count, eps):
        value_dim = v.shape[-1]
        scale = inv_count[:, None, None, None]
        kv = (kn.transpose(-1, -2) @ v).mul_(scale)
        k_mean = k.sum(dim=2).mul_(scale[..., 0])
        den = nonzero((q @ k_mean.unsqueeze(-1)).squeeze(-1) + eps)
        o = torch.div(qn @ kv, den.unsqueeze(-1), out=_output_buffer(q, value_dim))
        ctx.save_for_backward(q, k, qn, kn, v, inv_count, kv, k_mean, den, o)
        ctx.eps = eps
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, qn, kn, v, inv_count, kv, k_mean, den, o = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = reference_vjp(lambda *x: reference_parallel(*x, inv_count, ctx.eps), (q, k, qn, kn, v), grad_o)
            return (*grads, None, None)
        scale = inv_count[:, None, None, None]
        grad_num = grad_o / den.unsqueeze(-1)
        grad_den = -(grad_num * o).sum(dim=-1)
        grad_qn = grad_num @ kv.transpose(-1, -2)
        grad_q = grad_den.unsqueeze(-1) * k_mean.unsqueeze(2)
        grad_kv = (qn.transpose(-1, -2) @ grad_num).mul_(scale)
        grad_k_mean = (q.transpose(-1, -2) @ grad_den.unsqueeze(-1)).mul_(scale)
        grad_kn = v @ grad_kv.transpose(-1, -2)
        grad_k = grad_k_mean.transpose(-1, -2).expand_as(k).clone()
        grad_v = kn @ grad_kv
        return grad_q, grad_k, grad_qn, grad_kn, grad_v, None, None
