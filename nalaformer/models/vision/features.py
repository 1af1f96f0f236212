"""Feature-extraction form of the backbone (``features_only=True``), with or without timm.

timm builds a features-only model around ``forward_intermediates`` with its ``FeatureGetterNet`` (prune the stages
after the last one requested, then return the requested stage outputs as a list). When timm is importable the
entrypoints use exactly that class, so a timm user gets what timm's own models give; without timm,
:class:`StageFeatures` does the same with the same attribute names (``model``, ``out_indices``, ``feature_info``
with ``channels()`` / ``reduction()`` / ``module_name()``), so code written for one runs on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["StageFeatureInfo", "StageFeatures", "build_features_model"]


class StageFeatureInfo:
    """The stages a features-only model returns: ``channels()``, ``reduction()``, ``module_name()`` (one entry per
    returned stage, as in timm's ``FeatureInfo``), ``get(key)``, and ``info`` / indexing for the per-stage dicts."""

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(entry, index=i) for i, entry in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str) -> list[Any]:
        return [self.info[i][key] for i in self.out_indices]

    def channels(self) -> list[int]:
        return self.get("num_chs")

    def reduction(self) -> list[int]:
        return self.get("reduction")

    def module_name(self) -> list[str]:
        return self.get("module")

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[self.out_indices[item]]

    def __len__(self) -> int:
        return len(self.out_indices)


class StageFeatures(nn.Module):
    """A backbone cut after its last requested stage, returning ``[stage outputs]`` (no head).

    Args:
        model: a ``NaLaFormer``; pruned in place (stages after the last requested one and the head are removed).
        out_indices: stages to return (negative counts from the end); default all.
        output_fmt: ``"NCHW"`` or ``"NHWC"``.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None, output_fmt: str = "NCHW"):
        super().__init__()
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        if out_indices is None:
            out_indices = len(model.stages)
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_head=True)
        self.feature_info = StageFeatureInfo(model.feature_info, self.out_indices)
        self.model = model
        self.output_fmt = output_fmt

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.out_indices, output_fmt=self.output_fmt, intermediates_only=True
        )


def build_features_model(
    model: nn.Module,
    out_indices: int | Sequence[int] | None = None,
    feature_cls: str = "getter",
    output_fmt: str = "NCHW",
) -> nn.Module:
    """Wrap ``model`` for ``features_only``: timm's ``FeatureGetterNet`` if timm imports, else :class:`StageFeatures`.

    ``feature_cls`` must be ``"getter"`` (the only form that keeps the token mixers whole; timm's hook / FX
    wrappers rewrite the module tree). The ``pretrained_cfg`` loses its classifier entries, as timm does.
    """
    if feature_cls != "getter":
        raise ValueError(f"feature_cls={feature_cls!r} is not supported by NaLaFormer; use 'getter' (the default)")
    if out_indices is None:
        out_indices = tuple(range(len(model.stages)))
    cfg = {k: v for k, v in getattr(model, "pretrained_cfg", {}).items() if k not in ("num_classes", "classifier")}
    try:
        from timm.models._features import FeatureGetterNet  # listed in its __all__, not re-exported by timm.models
    except (ImportError, RuntimeError):  # no timm, or timm whose torchvision cannot load beside this torch
        features = StageFeatures(model, out_indices, output_fmt)
    else:
        features = FeatureGetterNet(model, out_indices=out_indices, output_fmt=output_fmt)
    features.pretrained_cfg = features.default_cfg = cfg
    return features
