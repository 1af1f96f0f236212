"""The block every token mixer shares, so methods differ only in how the heads attend.

Released NaLaFormer block (docs/method.md §5.1): one fused projection to ``q, k, v`` and a gate ``g``; per-head
attention (RoPE on the numerator for linear attention, on ``q, k`` for softmax); LePE (a depthwise conv of ``v``, 5x5
for images, a short 1-D conv for sequences, causal when the mixer is) added to the attention output; LayerNorm; times
``SiLU(g)``; output projection.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.layers.base import MixerState, TokenMixer
from nalaformer.layers.short_conv import ShortConvolution
from nalaformer.layers.tracing import is_fx_tracing, is_graph_capture
from nalaformer.ops import rope_angles_2d
from nalaformer.ops.validation import check_attention_mask


@functools.lru_cache(maxsize=32)
def _cached_grid_rope(
    height: int, width: int, dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_angles_2d(height, width, dim, base, device=device)


def _grid_rope(
    height: int, width: int, dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D RoPE tables of a grid, shared by every model. They are always built as normal tensors: a table first built
    under ``torch.inference_mode()`` would be an inference tensor, which autograd refuses to save, so every later
    training step at that grid size would fail. Under graph capture the tables are not cached: torch.export's
    tensors are fakes, which would then poison every later eager call."""
    if is_graph_capture():
        return rope_angles_2d(height, width, dim, base, device=device)
    with torch.inference_mode(False):
        return _cached_grid_rope(height, width, dim, base, device)


@functools.lru_cache(maxsize=32)
def _cached_rope_frequencies(dim: int, base: float, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        freqs = base ** (-torch.arange(0, dim // 2, device=device, dtype=torch.float32) / (dim // 2))
        return freqs.repeat_interleave(2)


def _rope_1d(positions: torch.Tensor, dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``rope_angles_1d(positions, dim, base)`` with the frequencies computed once per (dim, base, device): the same
    fp32 products and the same tables, but four small ops instead of a dozen, which matters in a one-token decoding
    step where every layer builds its tables again. The cached frequencies are built outside inference mode, so a
    table built first under ``torch.inference_mode()`` still serves later training steps."""
    if is_graph_capture():  # uncached: a cache filled while torch.export traces would hold fake tensors
        freqs = _cached_rope_frequencies.__wrapped__(dim, base, positions.device)
    else:
        freqs = _cached_rope_frequencies(dim, base, positions.device)
    angles = positions.float().unsqueeze(-1) * freqs
    return angles.cos(), angles.sin()


class AttentionBlock(TokenMixer):
    """Shared block: ``in_proj -> attend -> (+ LePE) -> out_norm -> (* SiLU(g)) -> out_proj``.

    Subclasses implement :meth:`attend`.

    Args:
        dim (int): channels ``C``.
        num_heads (int): heads ``H`` (must divide ``C``).
        causal (bool): causal attention (1-D only). Default: False.
        layout (str): ``"1d"`` (sequences) or ``"2d"`` (images). Default: "1d".
        rope (bool): rotary position embedding (1-D, or 2-D axial from the runtime grid). Default: True.
        lepe (bool): add a depthwise conv of ``v`` to the attention output. Default: True.
        gate (bool): multiply the normalised output by ``SiLU(g)`` (``in_proj`` then produces ``4C``, else ``3C``).
            Default: True.
        lepe_kernel_size (int, optional): Default: 5 (2-D: 5x5; 1-D non-causal: 5), 4 for causal 1-D.
        rope_base (float): RoPE frequency base. Default: 10000.0.
        qkv_bias (bool): bias of ``in_proj``. Default: True.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        causal: bool = False,
        layout: str = "1d",
        rope: bool = True,
        lepe: bool = True,
        gate: bool = True,
        lepe_kernel_size: int | None = None,
        rope_base: float = 10000.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads, causal=causal, layout=layout)
        multiple = 4 if layout == "2d" else 2
        if rope and self.head_dim % multiple:
            raise ValueError(
                f"{type(self).__name__}: {layout} RoPE needs head_dim (dim / num_heads = {self.head_dim}) to be a "
                f"multiple of {multiple}; change dim/num_heads or pass rope=False"
            )
        self.use_rope, self.use_lepe, self.use_gate = rope, lepe, gate
        self.rope_base = rope_base
        self.in_proj = nn.Linear(dim, dim * (4 if gate else 3), bias=qkv_bias)
        self.lepe: nn.Module | None = None
        if lepe:
            kernel = lepe_kernel_size or (4 if causal else 5)
            if layout == "2d":
                self.lepe = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
            else:
                self.lepe = ShortConvolution(dim, kernel, causal=causal)
        self.out_norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        inputs: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        state: Any,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Any]:
        """Per-head attention: ``q, k, v [B, T, H, D]`` -> ``(o [B, T, H, D], new attention state or None)``.

        ``inputs`` is the block input ``[B, T, C]`` (for mixers with extra per-token projections, e.g. the delta
        rule's write strength); ``rope`` holds ``(cos, sin)`` tables (``[T, D]`` or ``[B, T, D]``) or ``None``;
        ``positions`` the token positions ``[T]`` or ``[B, T]`` (1-D: offset by the decoding state, counting real
        tokens only; 2-D: the row-major grid index); ``state`` the attention part of the incoming ``MixerState``.
        """
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        *,
        size: tuple[int, int] | None = None,
        attention_mask: torch.Tensor | None = None,
        state: MixerState | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, MixerState]:
        image_layout = x.dim() == 4
        tokens, size = self._as_tokens(x, size)
        batch, seq_len, _ = tokens.shape
        if (state is not None or use_cache) and not self.causal:
            raise ValueError(f"{type(self).__name__}: state/use_cache need a causal 1-D mixer (causal=True)")
        if attention_mask is not None and self.layout == "2d":
            raise ValueError(f"{type(self).__name__}: attention_mask is only supported for 1-D sequences")
        mask = check_attention_mask(attention_mask, batch, seq_len)
        if state is not None and not isinstance(state, MixerState):
            raise TypeError(f"state must be a MixerState returned by a previous call, got {type(state).__name__}")

        q, k, v, g = self._project(tokens)
        if mask is not None:
            v = v * mask.unsqueeze(-1).to(v.dtype)
        local, conv_state = self._lepe(v, size, state)
        positions, position = self._positions(batch, seq_len, mask, state, tokens.device)
        rope = self._rope_tables(size, positions, tokens.device)
        heads = (batch, seq_len, self.num_heads, self.head_dim)
        o, attention_state = self.attend(
            q.reshape(heads),
            k.reshape(heads),
            v.reshape(heads),
            inputs=tokens,
            rope=rope,
            positions=positions,
            attention_mask=mask,
            state=None if state is None else state.attention,
            use_cache=use_cache,
        )
        o = o.reshape(batch, seq_len, self.dim)
        if local is not None:
            o = o + local
        o = self.out_norm(o)
        if g is not None:
            o = o * F.silu(g)
        y = self.out_proj(o)
        if image_layout:
            y = y.transpose(1, 2).reshape(batch, self.dim, *size)
        if use_cache:
            return y, MixerState(attention=attention_state, conv=conv_state, position=position)
        return y

    def _as_tokens(self, x: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int] | None]:
        name = type(self).__name__
        if is_fx_tracing():  # shapes are Proxies, so nothing can be checked (mixers are FX leaves: see layers.tracing)
            return x, size
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating-point tensor")
        if self.layout == "1d":
            if x.dim() != 3 or x.shape[-1] != self.dim:
                raise ValueError(f"{name}: x must be [B, T, C={self.dim}] tokens, got shape {tuple(x.shape)}")
            if x.shape[1] == 0:
                raise ValueError(f"{name}: x must hold at least one token, got shape {tuple(x.shape)}")
            return x, None
        if x.dim() == 4:
            if x.shape[1] != self.dim:
                raise ValueError(f"{name}: x [B, C, H, W] must have C={self.dim} channels, got {tuple(x.shape)}")
            if size is not None and tuple(size) != tuple(x.shape[2:]):
                raise ValueError(f"{name}: size={size} disagrees with the image x of shape {tuple(x.shape)}")
            return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"{name}: x must be [B, H*W, C={self.dim}] or [B, C, H, W], got shape {tuple(x.shape)}")
        if size is None or len(size) != 2:
            raise ValueError(f"{name}: 2-D tokens [B, N, C] need size=(H, W), got size={size!r}")
        if size[0] * size[1] != x.shape[1]:
            raise ValueError(f"{name}: size={tuple(size)} gives {size[0] * size[1]} tokens but x has {x.shape[1]}")
        return x, (int(size[0]), int(size[1]))

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        parts = self.in_proj(x).split(self.dim, dim=-1)
        return parts[0], parts[1], parts[2], parts[3] if self.use_gate else None

    def _lepe(
        self, v: torch.Tensor, size: tuple[int, int] | None, state: MixerState | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.lepe is None:
            return None, None
        if self.layout == "2d":
            batch, _, channels = v.shape
            image = v.transpose(1, 2).reshape(batch, channels, *size)
            return self.lepe(image).flatten(2).transpose(1, 2), None
        return self.lepe(v, None if state is None else state.conv)

    def _positions(
        self, batch: int, seq_len: int, mask: torch.Tensor | None, state: MixerState | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token positions of this call (``[T]`` or ``[B, T]``) and, for 1-D, each row's position after it."""
        if self.layout == "2d":
            return torch.arange(seq_len, device=device), None
        if state is not None and mask is None and seq_len == 1:
            # the decoding step: one token per row, at each row's own position
            return state.position[:, None], state.position + 1
        offset = torch.zeros(batch, dtype=torch.long, device=device) if state is None else state.position
        if mask is None:
            if state is None:
                return torch.arange(seq_len, device=device), offset + seq_len
            return offset[:, None] + torch.arange(seq_len, device=device), offset + seq_len
        # padding: real tokens are numbered 0, 1, ... from the first real one of each row
        positions = (offset[:, None] + mask.long().cumsum(dim=1) - 1).clamp_min(0)
        return positions, offset + mask.long().sum(dim=1)

    def _rope_tables(
        self, size: tuple[int, int] | None, positions: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.use_rope:
            return None
        if self.layout == "2d":
            return _grid_rope(size[0], size[1], self.head_dim, self.rope_base, device)
        return _rope_1d(positions, self.head_dim, self.rope_base)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rope={self.use_rope}, lepe={self.use_lepe}, gate={self.use_gate}"
