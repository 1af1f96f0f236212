"""Feature-map modules: the only thing that differs between the linear-attention mixers.

Each module maps per-head ``q, k [B, T, H, D]`` to a list of streams ``(phi_q, phi_k)``; the mixer splits the value
head evenly across the streams (PolaFormer uses two, every other method one). Learnable parameters of a method
(FLatten's scale, PolaFormer's power, Hedgehog's projection) live here; the math is in :mod:`nalaformer.ops`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nalaformer.ops import (
    cosformer_feature_map,
    elu_feature_map,
    focused_feature_map,
    hedgehog_feature_map,
    nala_attention,
    nala_key_map,
    nala_query_map,
    polarity_feature_maps,
    relu_feature_map,
)
from nalaformer.ops.feature_maps import INHIBIT_MODES

Streams = list[tuple[torch.Tensor, torch.Tensor]]


class FeatureMap(nn.Module):
    """Base class: ``forward(q, k, positions) -> [(phi_q, phi_k), ...]`` with ``len == self.streams``."""

    streams: int = 1

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        raise NotImplementedError


class NaLaFeatureMap(FeatureMap):
    """NaLa: norm-aware query power with a sign split (released code) or cosine inhibit (paper Eq. 16).

    Args:
        lam (float): exponent scale. Default: 3.0.
        tau (float): exponent offset. Default: 0.5.
        temperature (float): ``||q||`` temperature inside tanh. Default: 1.0.
        inhibit (str): ``"sign"``, ``"cosine"`` or ``"none"`` (keep positive parts only). Default: "sign".
        alpha (float): cosine-inhibit angle sharpness. Default: 20.0.
        power (float, optional): constant query exponent instead of the norm-aware one (ablations). Default: None.
        eps (float): floor of ``||q||``. Default: 1e-6.
    """

    def __init__(
        self,
        lam: float = 3.0,
        tau: float = 0.5,
        temperature: float = 1.0,
        inhibit: str = "sign",
        alpha: float = 20.0,
        power: float | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if inhibit not in INHIBIT_MODES:
            raise ValueError(f"inhibit must be one of {INHIBIT_MODES}, got {inhibit!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.lam, self.tau, self.temperature = lam, tau, temperature
        self.inhibit, self.alpha, self.power, self.eps = inhibit, alpha, power, eps

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        phi_q = nala_query_map(q, self.lam, self.tau, self.temperature, self.eps, self.inhibit, self.alpha, self.power)
        phi_k = nala_key_map(k, self.lam, self.inhibit, self.alpha, self.eps)
        return [(phi_q, phi_k)]

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options: Any) -> Any:
        """NaLa attention with this map's options: :func:`~nalaformer.ops.nala_attention` (the fast path) on
        ``q, k, v [B, T, H, D]``; ``options`` are the op's other arguments (``causal``, ``rope``, ``eps``, masks,
        state, ``chunk_size``)."""
        return nala_attention(
            q,
            k,
            v,
            lam=self.lam,
            tau=self.tau,
            temperature=self.temperature,
            inhibit=self.inhibit,
            alpha=self.alpha,
            power=self.power,
            feature_eps=self.eps,
            **options,
        )

    def extra_repr(self) -> str:
        power = "norm-aware" if self.power is None else self.power
        return (
            f"lam={self.lam}, tau={self.tau}, temperature={self.temperature}, inhibit={self.inhibit!r}, power={power}"
        )


class EluFeatureMap(FeatureMap):
    """``elu(x) + 1`` for queries and keys (Katharopoulos et al., 2020)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(elu_feature_map(q), elu_feature_map(k))]


class ReluFeatureMap(FeatureMap):
    """``relu(x)`` for queries and keys (EfficientViT's ReLU linear attention)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(relu_feature_map(q), relu_feature_map(k))]


class FocusedFeatureMap(FeatureMap):
    """FLatten's focused map with a learnable per-channel scale (``softplus``) and focusing power.

    Args:
        num_heads (int), head_dim (int): shape of the learnable scale ``[H, D]``.
        power (float): focusing power. Default: 3.0.
    """

    def __init__(self, num_heads: int, head_dim: int, power: float = 3.0) -> None:
        super().__init__()
        self.power = power
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(focused_feature_map(q, self.scale, self.power), focused_feature_map(k, self.scale, self.power))]


class PolarityFeatureMap(FeatureMap):
    """PolaFormer: same-sign and opposite-sign streams with a learnable power ``1 + alpha * sigmoid(w)``.

    Args:
        num_heads (int), head_dim (int): shape of the learnable scale and power ``[H, D]``.
        alpha (float): range of the learnable power. Default: 4.0 (power 3 at initialisation).
    """

    streams = 2

    def __init__(self, num_heads: int, head_dim: int, alpha: float = 4.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"PolaFormer splits each value head in two: head_dim must be even, got {head_dim}")
        self.alpha = alpha
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.power_logit = nn.Parameter(torch.zeros(num_heads, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        power = 1.0 + self.alpha * torch.sigmoid(self.power_logit.float())
        phi_same, phi_opposite, phi_k = polarity_feature_maps(q, k, power, self.scale)
        return [(phi_same, phi_k), (phi_opposite, phi_k)]


class CosFormerFeatureMap(FeatureMap):
    """cosFormer: ReLU features re-weighted by ``cos(pi (i - j) / 2M)`` through sin/cos of the positions.

    Args:
        causal (bool): causal mixers use ``M = max_len``; non-causal ones ``M`` = the sequence length.
        max_len (int): ``M`` for causal use; positions must stay below it. Default: 4096.
    """

    def __init__(self, causal: bool, max_len: int = 4096) -> None:
        super().__init__()
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self.causal, self.max_len = causal, max_len

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        max_len = self.max_len if self.causal else q.shape[1]
        if self.causal and int(positions.max()) >= max_len:
            raise ValueError(f"cosFormer: position {int(positions.max())} reaches max_len={max_len}; raise max_len")
        return [(cosformer_feature_map(q, positions, max_len), cosformer_feature_map(k, positions, max_len))]


class HedgehogFeatureMap(FeatureMap):
    """Hedgehog: learnable per-head projection (identity at init), then ``[softmax(z), softmax(-z)]``.

    Queries and keys have separate projections, as in the original.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        eye = torch.eye(head_dim).expand(num_heads, head_dim, head_dim)
        self.query_weight = nn.Parameter(eye.clone())
        self.key_weight = nn.Parameter(eye.clone())

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(hedgehog_feature_map(q, self.query_weight), hedgehog_feature_map(k, self.key_weight))]
