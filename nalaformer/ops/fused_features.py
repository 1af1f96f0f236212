"""NaLa's sign-split power features in a few passes, with a backward that recomputes instead of saving.

The reference maps in :mod:`nalaformer.ops.feature_maps` are written for clarity: ``safe_pow`` (two ``where`` and a
``pow``), ``_split`` (two ``where`` and a ``cat``), and autograd saves every intermediate (about ten tensors of the
input's size per map). On CPU every such pass over a ``[B, T, H, D]`` tensor costs as much as a small matmul, so the
maps dominated NaLa's run time. Here one autograd function computes

    phi(x) = [relu(x / n)^p, relu(-x / n)^p]

(``n = max(||x||, eps)`` and ``p = lam * (tau + tanh(n / temperature))`` for queries; ``n = 1`` and ``p = lam`` for
keys) with ``|x / n|^p = exp2(p * log2|x| - p * log2 n)`` (vectorised, where ``pow`` with a tensor exponent is a
scalar loop), writes both halves without ``cat`` (``relu(-s) = relu(s) - s`` for the signed magnitude ``s``), saves
only its input and two ``[..., 1]`` tensors, and recomputes the magnitudes in backward.

It covers exponents ``p > 1`` (the released defaults give ``p`` in ``[1.5, 4.5)`` and ``lam = 3`` for keys), where
``0^(p - 1) = 0`` keeps every gradient finite at exact zeros; other settings use the reference formulas.
"""

from __future__ import annotations

import math

import torch

from nalaformer.ops.higher_order import reference_vjp

_LN2 = math.log(2.0)


def fused_path_applies(lam: float, tau: float, power: float | None, normalise: bool) -> bool:
    """Whether the exponent is guaranteed ``> 1`` (queries: ``p >= lam * tau`` with ``tanh >= 0``; keys: ``lam``)."""
    if not normalise:
        return lam > 1.0
    if power is not None:
        return power > 1.0
    return lam > 0.0 and lam * tau >= 1.0


def _signed_magnitude(x: torch.Tensor, p: torch.Tensor | float, log2_norm: torch.Tensor | None) -> torch.Tensor:
    """``sign(x) |x / n|^p`` in a fresh buffer, as ``2^(p log2|x| - p log2 n)`` (``x^3`` directly for keys)."""
    if log2_norm is None and p == 3.0:
        return x.pow(3)
    log2_x = torch.abs(x).log2_()
    if log2_norm is None:
        scaled = log2_x.mul_(p)
    elif isinstance(p, torch.Tensor):
        # p log2|x| - p log2 n in one pass
        scaled = torch.addcmul(-(p * log2_norm), log2_x, p)
    else:
        scaled = log2_x.mul_(p).sub_(p * log2_norm)
    return scaled.exp2_().copysign_(x)


def _feature_buffer(x: torch.Tensor) -> torch.Tensor:
    """An empty ``[..., 2D]`` result; for ``[B, T, H, D]`` inputs stored head-major (``[B, H, T, 2D]`` memory).

    The attention forms multiply per head (``[B, H, T, F]`` matrices); writing the features in that order costs
    nothing here and saves a transposing copy of every feature tensor in each matmul that reads it.
    """
    if x.dim() != 4:
        return x.new_empty(*x.shape[:-1], 2 * x.shape[-1])
    batch, seq_len, heads, dim = x.shape
    return x.new_empty(batch, heads, seq_len, 2 * dim).transpose(1, 2)


def _exponent(norm: torch.Tensor, lam: float, tau: float, temperature: float) -> torch.Tensor:
    return lam * (tau + torch.tanh(norm / temperature))


class SignSplitPower(torch.autograd.Function):
    """``x [..., D] -> [relu(x/n)^p, relu(-x/n)^p] [..., 2D]``; see the module docstring.

    ``forward(x, normalise, lam, tau, temperature, power, eps)``: ``normalise`` selects the query map (``n = ||x||``,
    norm-aware ``p`` unless ``power`` is given) or the key map (``n = 1``, ``p = lam``).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        normalise: bool,
        lam: float,
        tau: float,
        temperature: float,
        power: float | None,
        eps: float,
    ) -> torch.Tensor:
        norm = log2_norm = None
        p: torch.Tensor | float = lam
        if normalise:
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(eps)
            log2_norm = norm.log2()
            p = _exponent(norm, lam, tau, temperature) if power is None else power
        signed = _signed_magnitude(x, p, log2_norm)
        dim = x.shape[-1]
        features = _feature_buffer(x)
        positive, negative = features[..., :dim], features[..., dim:]
        torch.clamp(signed, min=0.0, out=positive)
        # relu(-s) = relu(s) - s: the second half without another comparison
        torch.sub(positive, signed, out=negative)
        # the features are saved by reference (the attention saves them too): no extra memory
        ctx.save_for_backward(x, norm, features)
        ctx.options = (normalise, lam, tau, temperature, power, eps)
        return features

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, norm, features = ctx.saved_tensors
        normalise, lam, tau, temperature, power, eps = ctx.options
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference formula so that higher derivatives exist
            # (imported here: feature_maps imports this module)
            from nalaformer.ops.feature_maps import reference_sign_split_power

            (grad_x,) = reference_vjp(lambda x: reference_sign_split_power(x, *ctx.options), (x,), grad)
            return (grad_x, *([None] * 6))
        dim = x.shape[-1]
        positive, negative = features[..., :dim], features[..., dim:]
        # one half is zero: w = dL/dphi_active * |x/n|^p, without a comparison
        weighted = torch.mul(grad[..., :dim], positive).addcmul_(grad[..., dim:], negative)
        p = lam if not normalise else (power if power is not None else _exponent(norm, lam, tau, temperature))
        # d|x/n|^p / dx (n fixed) = p |x/n|^p / x; x = 0 gives 0 / 0 where the true value is 0 (p > 1)
        grad_x = torch.div(weighted, x).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf).mul_(p)
        if not normalise:
            return (grad_x, *([None] * 6))
        weighted_sum = weighted.sum(dim=-1, keepdim=True)
        # dL/dn through |x/n|^p: -p/n * sum(w)
        grad_norm = -p * weighted_sum / norm
        if power is None:
            # dL/dp = sum(w ln|x/n|) = ln2 / p * sum(w log2|x/n|^p), then dp/dn = lam (1 - tanh^2) / temperature
            magnitude = torch.add(positive, negative).log2_().mul_(weighted).nan_to_num_(nan=0.0)
            grad_p = (_LN2 / p) * magnitude.sum(dim=-1, keepdim=True)
            grad_norm = grad_norm + grad_p * lam * (1.0 - torch.tanh(norm / temperature).square()) / temperature
        # n = max(||x||, eps): dn/dx = x / ||x|| above the floor, 0 on it
        grad_norm = torch.where(norm > eps, grad_norm / norm, torch.zeros_like(norm))
        return (grad_x.addcmul_(x, grad_norm), *([None] * 6))
