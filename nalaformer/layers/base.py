"""The token-mixer interface every attention layer implements, and its decoding state."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn


def _map_tensors(obj: Any, fn) -> Any:
    """Apply ``fn`` to every tensor inside a (possibly nested) dataclass / tuple / list."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return type(obj)(**{f.name: _map_tensors(getattr(obj, f.name), fn) for f in fields(obj)})
    return obj


@dataclass
class MixerState:
    """Decoding state of one causal 1-D token mixer.

    Attributes:
        attention: the op-level state (a ``LinearAttentionState``, a softmax KV cache or a delta-rule state).
        conv: the last ``K - 1`` inputs of the causal short convolution, ``[B, C, K - 1]``, or ``None``.
        position: ``[B]`` long, the number of real (unpadded) tokens seen so far; the next token's RoPE position.
    """

    attention: Any
    conv: torch.Tensor | None
    position: torch.Tensor

    def index_select(self, index: torch.Tensor) -> MixerState:
        """Reorder / select batch rows (beam search, dropping finished rows)."""
        return _map_tensors(self, lambda t: t.index_select(0, index.to(t.device)))

    def to(self, *args, **kwargs) -> MixerState:
        return _map_tensors(self, lambda t: t.to(*args, **kwargs))

    def nbytes(self) -> int:
        """Memory held by the state, in bytes."""
        total = 0

        def count(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        _map_tensors(self, count)
        return total


def check_form(what: str, causal: bool, layout: str, *, causal_ok: bool, noncausal_ok: bool, image_ok: bool) -> None:
    """Raise a ValueError naming ``what`` (a mixer class or a registered name) when it is asked for a form it lacks:
    causal, non-causal, or 2-D (``layout="2d"``)."""
    if causal and not causal_ok:
        raise ValueError(f"{what} cannot be causal; build it with causal=False")
    if not causal and not noncausal_ok:
        raise ValueError(f"{what} is causal only; build it with causal=True")
    if layout == "2d" and not image_ok:
        raise ValueError(f"{what} has no 2-D (image) form; build it with layout='1d'")


class TokenMixer(nn.Module):
    """Base class of every token mixer (NaLa, softmax, linear baselines, delta rule).

    Subclasses set the class attributes ``supports_causal`` / ``supports_2d`` / ``supports_noncausal`` and implement
    ``forward(x, *, size=None, attention_mask=None, state=None, use_cache=False)``:

    - 1-D: ``x [B, T, C]``; ``attention_mask [B, T]`` (1 / True = real token).
    - 2-D: ``x [B, N, C]`` with ``size=(H, W)``, ``N == H * W``; or ``x [B, C, H, W]`` (returned in that layout).
    - Returns ``y`` with the shape and dtype of ``x``, or ``(y, new_state)`` when ``use_cache=True``
      (causal 1-D mixers only); ``state`` is the ``MixerState`` a previous call returned.
    """

    supports_causal: bool = True
    supports_noncausal: bool = True
    supports_2d: bool = True

    def __init__(self, dim: int, num_heads: int, *, causal: bool = False, layout: str = "1d") -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"{name}: dim must be a positive int, got {dim!r}")
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"{name}: num_heads must be a positive int, got {num_heads!r}")
        if dim % num_heads != 0:
            raise ValueError(f"{name}: num_heads={num_heads} must divide dim={dim}")
        if layout not in ("1d", "2d"):
            raise ValueError(f"{name}: layout must be '1d' or '2d', got {layout!r}")
        check_form(
            name,
            causal,
            layout,
            causal_ok=self.supports_causal,
            noncausal_ok=self.supports_noncausal,
            image_ok=self.supports_2d,
        )
        if layout == "2d" and causal:
            raise ValueError(f"{name}: a 2-D (image) mixer cannot be causal; use causal=False with layout='2d'")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.layout = layout

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}, layout={self.layout!r}"
