"""Pieces the fast NaLa forms share: NaLa's feature maps a block of tokens at a time, the RoPE rotation of features,
and the token blocks.

The forms never hold the ``[B, T, H, F]`` features of the whole sequence. They cut it into blocks small enough to stay
in cache, compute a block's features (head-major ``[B, H, t, F]``), use them, and recompute them in backward. RoPE is
a rotation of interleaved pairs, i.e. a multiplication by ``exp(i * angle)`` of the features viewed as complex numbers:
one vectorised pass (the real formulation with stacked halves takes about forty times longer on CPU), whose transpose
is the multiplication by the conjugate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nalaformer.ops.feature_maps import nala_key_map, nala_query_map, reference_sign_split_power
from nalaformer.ops.fused_features import SignSplitOptions, fused_path_applies, sign_split_backward, sign_split_forward

# Features per block: at most BLOCK_ELEMENTS (1 MiB of fp32 stays in cache) and, for mid-length sequences, a 16th of
# the sequence's features (at least MIN_BLOCK_ELEMENTS), so that the per-block working memory, a constant on top of the
# O(T) memory, stays small next to it; a sequence with at most SINGLE_BLOCK_ELEMENTS features is one block (and keeps
# its features for backward instead of recomputing them). SINGLE_BLOCK_ELEMENTS is 2M features (8 MiB of fp32 per
# feature tensor): the small LM's training batch (2 x 1024 tokens, 6 heads of 128 features) and a 4096-token sequence
# of 4 such heads are one block, which ran their causal forward+backward with RoPE 1.30x faster (16 blocks of 64
# tokens before) and their non-causal one 1.14-1.21x faster than at 1M (one thread, same-run ratios); at 4M the
# 8192-token case ran 0.88x, so the threshold stops at 2M.
BLOCK_ELEMENTS = 1 << 18
MIN_BLOCK_ELEMENTS = 1 << 17
SINGLE_BLOCK_ELEMENTS = 1 << 21


def block_length(batch: int, heads: int, features: int, seq_len: int) -> int:
    """Tokens per block: the whole sequence when its features are few, else what the module's constants describe
    (at least 64 tokens). Under graph capture (torch.compile) always the whole sequence: the loop over blocks would be
    unrolled into the graph, one copy of every kernel per block, so that its compilation grew with the length."""
    per_token = max(1, batch * heads * features)
    total = seq_len * per_token
    if total <= SINGLE_BLOCK_ELEMENTS or torch.compiler.is_compiling():
        return seq_len
    elements = min(BLOCK_ELEMENTS, max(MIN_BLOCK_ELEMENTS, total // 16))
    return max(64, elements // per_token)


def causal_block_length(batch: int, heads: int, features: int, seq_len: int, chunk_size: int) -> int:
    """:func:`block_length` rounded to whole chunks (at least one)."""
    length = block_length(batch, heads, features, seq_len)
    if length >= seq_len:
        return seq_len
    return max(chunk_size, length // chunk_size * chunk_size)


def token_blocks(seq_len: int, length: int) -> list[slice]:
    return [slice(start, min(seq_len, start + length)) for start in range(0, seq_len, length)]


def overflowed(x: torch.Tensor, nonnegative: bool = False) -> bool:
    """Whether the (small) sums ``x`` hold a NaN or an infinity: the after-the-fact trigger of the key-range check
    and of the containment of bad tokens. With ``nonnegative`` sums one reduction (their total) tells. False where
    values cannot be read: torch.compile / torch.export graphs and meta tensors (shape-only runs such as FLOP
    counting)."""
    if torch.compiler.is_compiling() or x.device.type == "meta":
        return False
    if nonnegative:
        return not math.isfinite(float(x.sum()))
    return not bool(x.isfinite().all())


def divide_into(out: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> None:
    """``out[...] = num / den`` with no temporary (``out`` may be a strided view, e.g. a block of the token-major
    output); under graph capture (torch.compile) an assignment, since ``out=`` into a strided view breaks the graph."""
    if torch.compiler.is_compiling():
        out.copy_(num / den)
    else:
        torch.div(num, den, out=out)


def head_major(x: torch.Tensor) -> torch.Tensor:
    """A ``[B, t, H, D]`` block as a contiguous ``[B, H, t, D]`` copy."""
    return x.transpose(1, 2).contiguous()


@dataclass(frozen=True)
class NaLaMap:
    """One of NaLa's feature maps, a block at a time: ``forward(x) -> (features, aux)`` and the matching
    ``backward(x, aux, features, grad) -> grad_x`` (no autograd; ``x`` head-major and contiguous).

    The sign split with an exponent ``> 1`` runs the fused passes of :mod:`~nalaformer.ops.fused_features`; every
    other setting (cosine inhibit, ``"none"``, exponents ``<= 1``) the reference formulas of
    :mod:`~nalaformer.ops.feature_maps`, differentiated by autograd on the block in backward.
    """

    query: bool
    lam: float
    tau: float
    temperature: float
    inhibit: str
    alpha: float
    power: float | None
    eps: float

    @property
    def fused(self) -> SignSplitOptions | None:
        if self.inhibit != "sign":
            return None
        if self.query:
            if not fused_path_applies(self.lam, self.tau, self.power, normalise=True):
                return None
            return SignSplitOptions(True, self.lam, self.tau, self.temperature, self.power, self.eps)
        if not fused_path_applies(self.lam, 0.0, None, normalise=False):
            return None
        return SignSplitOptions(False, self.lam, eps=self.eps)

    def width(self, dim: int) -> int:
        """Features per head for ``D = dim``."""
        return dim if self.inhibit == "none" else 2 * dim

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The map's formula with autograd-tracked ops."""
        if self.inhibit == "sign":
            return reference_sign_split_power(x, self.query, self.lam, self.tau, self.temperature, self.power, self.eps)
        if self.query:
            return nala_query_map(
                x, self.lam, self.tau, self.temperature, self.eps, self.inhibit, self.alpha, self.power
            ).reshape(*x.shape[:-1], -1)
        return nala_key_map(x, self.lam, self.inhibit, self.alpha, self.eps).reshape(*x.shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        options = self.fused
        if options is not None:
            return sign_split_forward(x, options)
        with torch.no_grad():
            return self.reference(x).contiguous(), None

    def backward(
        self, x: torch.Tensor, aux: torch.Tensor | None, features: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor:
        options = self.fused
        if options is not None:
            return sign_split_backward(x, aux, features, grad, options)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            (grad_x,) = torch.autograd.grad(self.reference(leaf), leaf, grad)
        return grad_x


def rotation_table(rope: tuple[torch.Tensor, torch.Tensor], dtype: torch.dtype, blocks: int = 1) -> torch.Tensor:
    """RoPE tables ``(cos, sin)`` ``[T, D]`` or ``[B, T, D]`` (interleaved pairs) -> ``exp(i * angle)`` as complex
    ``[1 or B, T, blocks * D/2]`` (complex64 for fp32 features, complex128 for fp64): the angles repeated for each of
    the ``blocks`` ``D``-sized blocks of the features (2 for the sign split), so that a rotation is one
    multiplication over contiguous rows (broadcasting the table over the blocks takes about twice as long)."""
    cos, sin = rope
    table = torch.complex(cos[..., 0::2].to(dtype), sin[..., 0::2].to(dtype))
    if blocks > 1:
        table = table.repeat(*([1] * (table.dim() - 1)), blocks)
    return table.unsqueeze(0) if table.dim() == 2 else table


def _complex_layout(x: torch.Tensor, table: torch.Tensor, conjugate: bool) -> tuple[tuple[int, ...], torch.Tensor]:
    """The shape that views ``x [B, H, t, F]`` as complex pairs per ``2 * half`` block, and ``table`` broadcast to it
    (conjugated for the transpose)."""
    batch, heads, length, features = x.shape
    half = table.shape[-1]
    factor = table[:, None, :, None, :]
    return (batch, heads, length, features // (2 * half), half, 2), factor.conj() if conjugate else factor


def rotate(x: torch.Tensor, table: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
    """Rotate the interleaved pairs of every ``2 * half``-sized block of contiguous ``x [B, H, t, F]`` by the angles
    of ``table [1 or B, t, half]`` (by their negatives with ``conjugate``: the transpose, for gradients); a new
    tensor. A table as wide as the features (``half = F / 2``: :func:`rotation_table` with ``blocks``) is fastest."""
    shape, factor = _complex_layout(x, table, conjugate)
    out = torch.empty_like(x)
    torch.mul(torch.view_as_complex(x.view(shape)), factor, out=torch.view_as_complex(out.view(shape)))
    return out


def add_rotated(out: torch.Tensor, x: torch.Tensor, table: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
    """``out += rotate(x, table, conjugate)`` in one complex multiply-add, for contiguous ``out`` and ``x`` ``[B, H,
    t, F]`` (no rotated temporary: the backward adds rotated numerator gradients to the denominator's); returns
    ``out``."""
    shape, factor = _complex_layout(x, table, conjugate)
    torch.view_as_complex(out.view(shape)).addcmul_(torch.view_as_complex(x.view(shape)), factor)
    return out


def reference_rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`rotate` with autograd-tracked ops on any ``x [B, H, T, F]`` (the references' version)."""
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, table.shape[-1], 2).contiguous())
    return torch.view_as_real(pairs * table[:, None, :, None, :]).flatten(-3)
