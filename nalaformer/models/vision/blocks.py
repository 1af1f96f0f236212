"""Building blocks of the NaLaFormer vision backbone: stem, block, patch merging, stage and classifier head.

Every block keeps the residual stream in ``[B, C, H, W]`` (the convolutions need it) and runs the per-token layers
(LayerNorm, token mixer, FFN linears, LayerScale) on channels-last views. The token mixer comes from
``nalaformer.layers.build_attention``; nothing here defines attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nalaformer.layers import build_attention


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``.

    Args:
        x: ``[B, ...]`` residual-branch output, any float dtype.
        drop_prob: probability of dropping a sample's branch, in ``[0, 1)``; default 0.
        training: drop only when True; default False (identity).

    Returns:
        ``x`` with dropped samples zeroed and kept ones scaled by ``1 / (1 - drop_prob)``; same shape and dtype.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; ``drop_prob`` in ``[0, 1)``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch, on channels-last input ``[..., C]``.

    Args:
        dim: number of channels ``C``.
        init_value: initial value of every scale (the released models use 1 or 1e-6).
    """

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ConvStem(nn.Sequential):
    """Convolutional patch embedding: four 3×3 convs with BatchNorm (GELU between), overall stride 2 or 4.

    ``[B, in_chans, H, W] -> [B, embed_dim, ceil(H / stride), ceil(W / stride)]``. The released stem (stride 4) has
    stride 2 in the first and last conv; ``stride=2`` (for 28×28 / 32×32 inputs) makes the first conv stride 1.

    Args:
        in_chans: input channels.
        embed_dim: output channels (the hidden convs use ``embed_dim // 2``).
        stride: total stride, 2 or 4; default 4.
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: int = 4) -> None:
        if stride not in (2, 4):
            raise ValueError(f"ConvStem: stride must be 2 or 4, got {stride!r}")
        hidden = embed_dim // 2
        super().__init__(
            nn.Conv2d(in_chans, hidden, 3, stride // 2, 1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, embed_dim, 3, 2, 1),
            nn.BatchNorm2d(embed_dim),
        )


class ConvFeedForward(nn.Module):
    """FFN with a depthwise-conv residual: ``fc2(h + dwconv(h))`` with ``h = GELU(fc1(x))``.

    Input and output are channels-last ``[B, H, W, C]``; the 3×3 depthwise conv runs on ``[B, hidden, H, W]``.

    Args:
        dim: channels ``C``.
        hidden_dim: FFN width (``int(mlp_ratio * dim)`` in the released models).
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        h = h + self.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(h)


class NaLaFormerBlock(nn.Module):
    """One NaLaFormer block on ``[B, C, H, W]``::

        x = x + cpe1(x);  x = x + drop_path(ls1 * mixer(norm1(x)))
        x = x + cpe2(x);  x = x + drop_path(ls2 * ffn(norm2(x)))

    where ``cpe1`` / ``cpe2`` are 3×3 depthwise convs (conditional positional encoding) and the mixer is any 2-D
    token mixer of the registry, called on tokens ``[B, H*W, C]`` with ``size=(H, W)`` so its RoPE and LePE follow
    the runtime grid.

    Args:
        dim: channels ``C``.
        num_heads: attention heads of the mixer (must divide ``dim``).
        mixer: registry name of the token mixer (``"nala"``, ``"softmax"`` or a linear baseline).
        mlp_ratio: FFN width over ``dim``; default 4.
        drop_path: stochastic-depth probability of both branches; default 0.
        layer_scale_init: initial LayerScale value, or None for no LayerScale; default 1.
        mixer_options: extra keywords for ``build_attention``; default none.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1.0,
        mixer_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.mixer_name = mixer
        self.cpe1 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = build_attention(mixer, dim, num_heads, causal=False, layout="2d", **dict(mixer_options or {}))
        self.layer_scale1 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)
        self.drop_path1 = DropPath(drop_path)
        self.cpe2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFeedForward(dim, int(mlp_ratio * dim))
        self.layer_scale2 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # indexed, not unpacked: under torch.fx the shape is a Proxy, which cannot be iterated
        batch, channels, height, width = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        x = x + self.cpe1(x)
        tokens = self.norm1(x.permute(0, 2, 3, 1)).reshape(batch, height * width, channels)
        h = self.attn(tokens, size=(height, width)).reshape(batch, height, width, channels)
        x = x + self.drop_path1(self.layer_scale1(h)).permute(0, 3, 1, 2)
        x = x + self.cpe2(x)
        h = self.ffn(self.norm2(x.permute(0, 2, 3, 1)))
        return x + self.drop_path2(self.layer_scale2(h)).permute(0, 3, 1, 2)


class PatchMerging(nn.Module):
    """Downsampling between stages: 3×3 stride-2 conv (padding 1) then BatchNorm.

    ``[B, dim, H, W] -> [B, out_dim, ceil(H / 2), ceil(W / 2)]`` (odd sizes round up).
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x))


class NaLaFormerStage(nn.Module):
    """Optional patch merging followed by ``len(mixers)`` blocks at one resolution.

    Args:
        in_dim: channels entering the stage; a :class:`PatchMerging` to ``dim`` runs first when ``downsample``.
        dim: channels of the blocks.
        num_heads: mixer heads.
        mixers: one registry name per block.
        mlp_ratio: FFN width over ``dim``.
        drop_paths: one stochastic-depth probability per block.
        layer_scale_init: initial LayerScale value, or None.
        downsample: whether the stage starts with a stride-2 patch merging.
        mixer_options: extra keywords for ``build_attention``.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        num_heads: int,
        mixers: list[str],
        mlp_ratio: float,
        drop_paths: list[float],
        layer_scale_init: float | None,
        downsample: bool,
        mixer_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            NaLaFormerBlock(dim, num_heads, name, mlp_ratio, rate, layer_scale_init, mixer_options)
            for name, rate in zip(mixers, drop_paths, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class NaLaFormerHead(nn.Module):
    """Classifier head: per-position ``Linear(in_dim -> hidden_dim)``, BatchNorm, Swish (SiLU), pooling, classifier.

    ``[B, in_dim, h, w] -> [B, num_classes]`` (``global_pool="avg"``), or ``[B, num_classes, h, w]``
    (``global_pool=""``, no pooling). ``pre_logits=True`` stops before the classifier (width ``hidden_dim``).

    Args:
        in_dim: channels of the last stage.
        hidden_dim: projection width (1024 in the released models).
        num_classes: classifier outputs; 0 makes ``fc`` an identity.
        global_pool: ``"avg"`` or ``""``; default ``"avg"``.
        drop_rate: dropout before the classifier; default 0.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.BatchNorm2d(hidden_dim)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(drop_rate)
        self.hidden_dim = hidden_dim
        self.reset(num_classes, global_pool)

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs; change pooling if given."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.hidden_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prune(self) -> None:
        """Drop projection, norm and classifier, so the head returns its input (pooled if pooling is on)."""
        self.proj, self.norm, self.act = nn.Identity(), nn.Identity(), nn.Identity()
        self.reset(0, "")

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(self.norm(x))
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        else:
            x = x.permute(0, 2, 3, 1)
        x = self.drop(x)
        if not pre_logits:
            x = self.fc(x)
        return x if self.global_pool == "avg" else x.permute(0, 3, 1, 2)
