"""One linear-attention mixer for every feature map, and the named NaLa layers."""

from __future__ import annotations

from typing import Any

import torch

from nalaformer.layers.block import AttentionBlock
from nalaformer.layers.feature_maps import FeatureMap, NaLaFeatureMap
from nalaformer.ops import apply_rope, linear_attention
from nalaformer.ops.feature_maps import NALA_ALPHA, NALA_INHIBIT, NALA_LAM, NALA_TAU, NALA_TEMPERATURE


class LinearAttention(AttentionBlock):
    """Normalised linear attention in the shared block; the feature map is the only method-specific part.

    RoPE (when on) rotates the features in the numerator only; the denominator uses the un-rotated ones, as the
    released NaLaFormer code does. Causal mixers carry a ``LinearAttentionState`` per stream for decoding. NaLa's map
    runs the fused op :func:`~nalaformer.ops.nala_attention` (features, RoPE and attention a block of tokens at a
    time; a few small ops per decoding step); the other maps compute their features and call
    :func:`~nalaformer.ops.linear_attention` (:meth:`attend_streams`).

    Args:
        dim (int), num_heads (int): channels and heads.
        feature_map (FeatureMap): maps per-head ``q, k`` to feature streams.
        causal (bool), layout (str), rope, lepe, gate, ...: see :class:`AttentionBlock`.
        eps (float): added to the mean denominator. Default: 1e-6.
        chunk_size (int): chunk length of the causal chunked form. Default: 64.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        feature_map: FeatureMap,
        causal: bool = False,
        layout: str = "1d",
        eps: float = 1e-6,
        chunk_size: int = 64,
        **block_options: Any,
    ) -> None:
        super().__init__(dim, num_heads, causal=causal, layout=layout, **block_options)
        if self.head_dim % feature_map.streams:
            raise ValueError(f"head_dim={self.head_dim} must be divisible by the {feature_map.streams} streams")
        self.feature_map = feature_map
        self.eps = eps
        self.chunk_size = chunk_size

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
        if isinstance(self.feature_map, NaLaFeatureMap):
            # features, RoPE and attention in one fast op that never holds the features of the whole sequence
            initial = None if state is None else state[0]
            result = self.feature_map.attention(
                q,
                k,
                v,
                causal=self.causal,
                rope=rope,
                eps=self.eps,
                attention_mask=attention_mask,
                initial_state=initial,
                output_final_state=use_cache,
                chunk_size=self.chunk_size,
            )
            return (result[0], (result[1],)) if use_cache else (result, None)
        return self.attend_streams(
            q, k, v, rope=rope, positions=positions, attention_mask=attention_mask, state=state, use_cache=use_cache
        )

    def attend_streams(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        state: Any,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Any]:
        """The generic route: the feature map's streams, RoPE on the numerator's features, then
        :func:`~nalaformer.ops.linear_attention` per stream (every map but NaLa's; NaLa's reference)."""
        streams = self.feature_map(q, k, positions)
        values = v.chunk(len(streams), dim=-1)
        outputs, states = [], []
        for index, ((phi_q, phi_k), value) in enumerate(zip(streams, values)):
            phi_q_num = phi_k_num = None
            if rope is not None:
                cos, sin = rope[0].to(phi_q.dtype), rope[1].to(phi_q.dtype)
                phi_q_num, phi_k_num = apply_rope(phi_q, cos, sin), apply_rope(phi_k, cos, sin)
            result = linear_attention(
                phi_q,
                phi_k,
                value,
                causal=self.causal,
                phi_q_num=phi_q_num,
                phi_k_num=phi_k_num,
                eps=self.eps,
                attention_mask=attention_mask,
                initial_state=None if state is None else state[index],
                output_final_state=use_cache,
                chunk_size=self.chunk_size,
            )
            if use_cache:
                result, new_state = result
                states.append(new_state)
            outputs.append(result)
        return torch.cat(outputs, dim=-1), tuple(states) if use_cache else None


class NaLaAttention(LinearAttention):
    """Norm-aware linear attention for sequences (causal or not), the released block with NaLa's feature map.

    Args:
        dim (int), num_heads (int): channels and heads.
        causal (bool): causal attention with decoding state. Default: False.
        lam, tau, temperature, inhibit, alpha, power: NaLa feature-map options (see :class:`NaLaFeatureMap`;
            ``temperature`` may be a float, ``"learned"``, ``"running"`` or ``"sqrt_d"``).
        **options: block options (``rope``, ``lepe``, ``gate``, ``eps``, ``chunk_size``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        causal: bool = False,
        lam: float = NALA_LAM,
        tau: float = NALA_TAU,
        temperature: float | str = NALA_TEMPERATURE,
        inhibit: str = NALA_INHIBIT,
        alpha: float = NALA_ALPHA,
        power: float | None = None,
        layout: str = "1d",
        **options: Any,
    ) -> None:
        feature_map = NaLaFeatureMap(
            lam, tau, temperature, inhibit, alpha, power, num_heads=num_heads, head_dim=dim // max(num_heads, 1)
        )
        super().__init__(dim, num_heads, feature_map=feature_map, causal=causal, layout=layout, **options)


class NaLaAttention2d(NaLaAttention):
    """Norm-aware linear attention for images: tokens on an ``H x W`` grid (any H, W), 2-D axial RoPE, 5x5 LePE."""

    def __init__(self, dim: int, num_heads: int, **options: Any) -> None:
        options.pop("layout", None)
        if options.pop("causal", False):
            raise ValueError("NaLaAttention2d cannot be causal")
        super().__init__(dim, num_heads, layout="2d", **options)
