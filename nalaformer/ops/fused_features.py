"""NaLa's sign-split power features in a few passes, with a backward that recomputes instead of saving.

The reference maps in :mod:`nalaformer.ops.feature_maps` are written for clarity: ``safe_pow`` (two ``where`` and a
``pow``), ``_split`` (two ``where`` and a ``cat``), and autograd saves every intermediate (about ten tensors of the
input's size per map). On CPU every such pass over a ``[B, T, H, D]`` tensor costs as much as a small matmul, so the
maps dominated NaLa's run time. Here one autograd function computes

    phi(x) = [relu(x / n)^p, relu(-x / n)^p]

(``n = max(||x||, eps)`` and ``p = lam * (tau + tanh(n / temperature))`` for queries; ``n = 1`` and ``p = lam`` for
keys) with ``|x / n|^p = exp2(p * log2|x| - p * log2 n)`` (vectorised, where ``pow`` with a tensor exponent is a
scalar loop), writes both halves without ``cat`` (``relu(-s) = relu(s) - s`` for the signed magnitude ``s``), saves
its input, the ``[..., 1]`` norm and the features it returns (no new memory: the attention keeps them anyway), and
gets the gradient from them in a few passes, without a comparison or a ``where`` (slow on CPU).

It covers exponents ``p > 1`` (the released defaults give ``p`` in ``[1.5, 4.5)`` and ``lam = 3`` for keys), where
``0^(p - 1) = 0`` keeps every gradient finite at exact zeros; other settings use the reference formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _signed_magnitude(
    x: torch.Tensor, p: torch.Tensor | float, log2_norm: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """``sign(x) |x / n|^p`` written into ``out``, as ``2^(p log2|x| - p log2 n)`` (``x^3`` directly for keys)."""
    if log2_norm is None and p == 3.0:
        return torch.pow(x, 3, out=out)
    log2_x = torch.abs(x, out=out).log2_()
    if log2_norm is None:
        scaled = log2_x.mul_(p)
    elif isinstance(p, torch.Tensor):
        # p log2|x| - p log2 n in one pass
        scaled = torch.addcmul(-(p * log2_norm), log2_x, p, out=out)
    else:
        scaled = log2_x.mul_(p).sub_(p * log2_norm)
    return scaled.exp2_().copysign_(x)


def _head_major(x: torch.Tensor, copy: bool = True) -> torch.Tensor:
    """``[B, T, H, D]`` -> a contiguous ``[B, H, T, D]`` copy (a view with ``copy=False``; other ranks: ``x``).

    The attention forms multiply per head (``[B, H, T, F]`` matrices). Working in that order from the first pass
    means one strided read here instead of mixed-layout passes (slow) or a transposing copy of every feature tensor
    in each matmul that reads it.
    """
    if x.dim() != 4:
        return x
    return x.transpose(1, 2).contiguous() if copy else x.transpose(1, 2)


def _exponent(norm: torch.Tensor, lam: float, tau: float, temperature: float) -> torch.Tensor:
    return lam * (tau + torch.tanh(norm / temperature))


@dataclass(frozen=True)
class SignSplitOptions:
    """The map's settings: ``normalise`` (query map: ``n = ||x||``, norm-aware ``p`` unless ``power``) or key map
    (``n = 1``, ``p = lam``); ``lam``, ``tau``, ``temperature``, ``power``, ``eps`` as in :func:`nala_query_map`."""

    normalise: bool
    lam: float = 3.0
    tau: float = 0.5
    temperature: float = 1.0
    power: float | None = None
    eps: float = 1e-6

    def exponent(self, norm: torch.Tensor | None) -> torch.Tensor | float:
        if not self.normalise:
            return self.lam
        return _exponent(norm, self.lam, self.tau, self.temperature) if self.power is None else self.power


def sign_split_forward(x: torch.Tensor, options: SignSplitOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x [..., D]`` -> ``(features [..., 2D], norm [..., 1] or None)``, no autograd; contiguous ``x`` is fastest."""
    if torch.compiler.is_compiling():
        # graph capture (torch.compile): writes into the halves of one tensor (``out=``) break the graph, and the
        # plain formula fuses into one loop under the compiler anyway
        norm = None
        if options.normalise:
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(options.eps)
        return reference_features(x, options), norm
    norm = log2_norm = None
    if options.normalise:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(options.eps)
        log2_norm = norm.log2()
    dim = x.shape[-1]
    features = x.new_empty(*x.shape[:-1], 2 * dim)
    positive, negative = features[..., :dim], features[..., dim:]
    # the signed magnitude s is built in the second half (no temporary), then split: relu(s), and relu(-s) = relu(s) - s
    signed = _signed_magnitude(x, options.exponent(norm), log2_norm, out=negative)
    torch.clamp(signed, min=0.0, out=positive)
    torch.sub(positive, signed, out=negative)
    return features, norm


def sign_split_backward(
    x: torch.Tensor, norm: torch.Tensor | None, features: torch.Tensor, grad: torch.Tensor, options: SignSplitOptions
) -> torch.Tensor:
    """The gradient with respect to ``x`` of ``<grad, features>``, from the saved ``x``, ``norm`` and ``features``."""
    dim = x.shape[-1]
    positive, negative = features[..., :dim], features[..., dim:]
    # one half is zero: w = dL/dphi_active * |x/n|^p, without a comparison
    weighted = torch.mul(grad[..., :dim], positive).addcmul_(grad[..., dim:], negative)
    p = options.exponent(norm)
    grad_norm = None
    if options.normalise:
        # dL/dn through |x/n|^p: -p/n * sum(w)
        grad_norm = -p * weighted.sum(dim=-1, keepdim=True) / norm
        if options.power is None:
            # dL/dp = sum(w ln|x/n|) = ln2 / p * sum(w log2|x/n|^p), then dp/dn = lam (1 - tanh^2) / temperature
            magnitude = torch.add(positive, negative).log2_().mul_(weighted).nan_to_num_(nan=0.0)
            grad_p = (_LN2 / p) * magnitude.sum(dim=-1, keepdim=True)
            slope = options.lam * (1.0 - torch.tanh(norm / options.temperature).square()) / options.temperature
            grad_norm = grad_norm + grad_p * slope
        # n = max(||x||, eps): dn/dx = x / ||x|| above the floor, 0 on it
        grad_norm = torch.where(norm > options.eps, grad_norm / norm, torch.zeros_like(norm))
    # d|x/n|^p / dx (n fixed) = p |x/n|^p / x; x = 0 gives 0 / 0 where the true value is 0 (p > 1); in place on w
    grad_x = weighted.div_(x).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf).mul_(p)
    return grad_x if grad_norm is None else grad_x.addcmul_(x, grad_norm)


def safe_pow(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """``x ** p`` for ``x >= 0`` that is exactly 0 at ``x == 0`` with finite gradients (also w.r.t. ``p``)."""
    positive = x > 0
    base = torch.where(positive, x, torch.ones_like(x))
    return torch.where(positive, base.pow(p), torch.zeros_like(x))


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``||x||_2`` over the last dimension, ``[..., 1]``, floored at ``eps`` so that zero vectors stay finite."""
    return (x * x).sum(dim=-1, keepdim=True).clamp_min(eps * eps).sqrt()


def reference_features(x: torch.Tensor, options: SignSplitOptions) -> torch.Tensor:
    """The map written out with autograd-tracked ops (``where``, ``pow``, ``cat``): the oracle of the fused passes,
    and what their double backward differentiates. ``x [..., D]`` fp32 or fp64; returns ``[..., 2D]``."""
    direction, norm = x, None
    if options.normalise:
        norm = l2_norm(x, options.eps)
        direction = x / norm
    magnitude = safe_pow(direction.abs(), options.exponent(norm))
    zero = torch.zeros_like(magnitude)
    return torch.cat([torch.where(direction > 0, magnitude, zero), torch.where(direction < 0, magnitude, zero)], -1)


class SignSplitPower(torch.autograd.Function):
    """``x [..., D] -> [relu(x/n)^p, relu(-x/n)^p] [..., 2D]``; see the module docstring.

    ``forward(x, options: SignSplitOptions)``. Saves ``x``, the ``[..., 1]`` norm and the features (by reference: the
    attention saves them too); ``[B, T, H, D]`` inputs give features stored head-major.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, options: SignSplitOptions) -> torch.Tensor:
        features, norm = sign_split_forward(_head_major(x), options)
        ctx.save_for_backward(x, norm, features)
        ctx.options = options
        return _token_major(features, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        x, norm, features = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference formula so that higher derivatives exist
            (grad_x,) = reference_vjp(lambda x: reference_features(x, ctx.options), (x,), grad)
            return grad_x, None
        grad_x = sign_split_backward(_head_major(x), norm, features, _head_major(grad, copy=False), ctx.options)
        return _token_major(grad_x, x), None


def sign_split_features(x: torch.Tensor, options: SignSplitOptions) -> torch.Tensor:
    """:class:`SignSplitPower` when a gradient is wanted, else its forward alone (no autograd bookkeeping: decoding)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return SignSplitPower.apply(x, options)
    return _token_major(sign_split_forward(_head_major(x), options)[0], x)


def _token_major(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A tensor computed head-major, as a ``[B, T, H, ...]`` view when ``like`` is 4-D."""
    return x.transpose(1, 2) if like.dim() == 4 else x
