"""NaLaFormer hierarchical vision backbone with the timm model API (no timm dependency).

The released models (ZacharyMeng/NaLaFormer) are hybrids: NaLa linear attention in stages 1-2 and softmax attention in
stages 3-4. ``mixers`` picks the token mixer per stage (or per block) from the ``nalaformer.layers`` registry, so the
all-NaLa model and every baseline comparison are one argument away.

Input sizes: any ``H, W >= 1``. The stem and each patch merging are stride-2 3×3 convs with padding 1, which round
up, so stage ``i`` sees ``ceil(H / 2**(i + 2)) x ceil(W / 2**(i + 2))`` (stride-4 stem). The mixers compute RoPE and
LePE from that runtime grid, so nothing is tied to 224². ``feature_info`` reports the nominal strides 4/8/16/32.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nalaformer.layers import mixer_names
from nalaformer.layers.tracing import is_fx_tracing, register_timm_leaf_modules
from nalaformer.models.vision.blocks import ConvStem, NaLaFormerHead, NaLaFormerStage
from nalaformer.models.vision.features import build_features_model

__all__ = [
    "NaLaFormer",
    "checkpoint_filter_fn",
    "nalaformer_b",
    "nalaformer_l",
    "nalaformer_nano",
    "nalaformer_s",
    "nalaformer_t",
    "nalaformer_xt",
    "register_timm_models",
    "resolve_mixers",
]

# Layout presets; any other string is a registry name used in every block.
RELEASED_LAYOUT = "released"
LAYOUT_ALIASES = {"hybrid": RELEASED_LAYOUT}


def resolve_mixers(mixers: str | Sequence[str | Sequence[str]], depths: Sequence[int]) -> list[list[str]]:
    """Expand a mixer layout into one registry name per block.

    Args:
        mixers: ``"released"`` (alias ``"hybrid"``: NaLa in the first two stages, softmax after, as in the official
            code); any other string (a registry name, e.g. ``"nala"``, ``"softmax"``) for every block; or one entry
            per stage, each a name for the whole stage or a sequence of one name per block.
        depths: blocks per stage.

    Returns:
        ``[[name per block] per stage]``.
    """
    if isinstance(mixers, str):
        mixers = LAYOUT_ALIASES.get(mixers, mixers)
        if mixers == RELEASED_LAYOUT:
            mixers = ["nala" if i < 2 else "softmax" for i in range(len(depths))]
        else:
            mixers = [mixers] * len(depths)
    mixers = list(mixers)
    if len(mixers) != len(depths):
        raise ValueError(f"mixers must give one entry per stage ({len(depths)}), got {len(mixers)}: {mixers!r}")
    return [mixer_names(entry, depth, f"mixers[{stage}]") for stage, (entry, depth) in enumerate(zip(mixers, depths))]


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's index rule: None = all, int n = the last n, a sequence = those (negative counts from the end)."""
    if indices is None:
        take = list(range(num_features))
    elif isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices as an int must be in [1, {num_features}], got {indices}")
        take = list(range(num_features - indices, num_features))
    else:
        take = [i + num_features if i < 0 else i for i in indices]
        if not take or not all(0 <= i < num_features for i in take):
            raise ValueError(f"indices must lie in [-{num_features}, {num_features - 1}], got {list(indices)!r}")
    return take, max(take)


class NaLaFormer(nn.Module):
    """NaLaFormer: conv stem, stages of (CPE, token mixer, CPE, conv FFN) blocks with patch merging, classifier head.

    Args:
        in_chans: input image channels; default 3.
        num_classes: classifier outputs (0: no classifier); default 1000.
        embed_dims: channels per stage; default the T variant ``(64, 128, 256, 512)``.
        depths: blocks per stage; default ``(2, 2, 6, 2)``.
        num_heads: mixer heads per stage; default ``(1, 2, 4, 8)``.
        mlp_ratios: FFN width over channels, a float or one per stage; default 4.
        mixers: per-stage (or per-block) token mixers, see :func:`resolve_mixers`; default ``"released"``.
        mixer_options: extra keywords for ``build_attention`` (e.g. ``{"rope": False}``); default none.
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks); default 0.1.
        layer_scale_init: initial LayerScale, a float / None or one per stage; default 1.
        head_hidden_size: width of the head projection before pooling; default 1024.
        stem_stride: 4 (released) or 2 (small inputs such as 28×28); default 4.
        global_pool: ``"avg"`` or ``""``; default ``"avg"``.
        drop_rate: dropout before the classifier; default 0.

    Inputs are ``[B, in_chans, H, W]`` float tensors of any size; outputs follow the input dtype.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        mlp_ratios: float | Sequence[float] = 4.0,
        mixers: str | Sequence[str | Sequence[str]] = RELEASED_LAYOUT,
        mixer_options: Mapping[str, Any] | None = None,
        drop_path_rate: float = 0.1,
        layer_scale_init: float | Sequence[float | None] | None = 1.0,
        head_hidden_size: int = 1024,
        stem_stride: int = 4,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if num_stages == 0 or len(embed_dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(
                f"embed_dims, depths and num_heads must have one entry per stage (>= 1), got "
                f"{list(embed_dims)!r}, {list(depths)!r}, {list(num_heads)!r}"
            )
        mlp_ratios = self._per_stage(mlp_ratios, num_stages, "mlp_ratios")
        layer_scale_init = self._per_stage(layer_scale_init, num_stages, "layer_scale_init")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.mixer_layout = resolve_mixers(mixers, depths)
        self.num_features = self.embed_dims[-1]
        self.head_hidden_size = head_hidden_size

        self.stem = ConvStem(in_chans, self.embed_dims[0], stem_stride)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.Sequential()
        self.feature_info = []
        start = 0
        for i in range(num_stages):
            self.stages.append(
                NaLaFormerStage(
                    in_dim=self.embed_dims[max(i - 1, 0)],
                    dim=self.embed_dims[i],
                    num_heads=num_heads[i],
                    mixers=self.mixer_layout[i],
                    mlp_ratio=mlp_ratios[i],
                    drop_paths=rates[start : start + depths[i]],
                    layer_scale_init=layer_scale_init[i],
                    downsample=i > 0,
                    mixer_options=mixer_options,
                )
            )
            start += depths[i]
            reduction = stem_stride * 2**i
            self.feature_info.append(dict(num_chs=self.embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.head = NaLaFormerHead(self.num_features, head_hidden_size, num_classes, global_pool, drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _per_stage(value: Any, num_stages: int, name: str) -> list:
        if isinstance(value, (int, float)) or value is None:
            return [value] * num_stages
        value = list(value)
        if len(value) != num_stages:
            raise ValueError(f"{name} must be a number or {num_stages} values (one per stage), got {value!r}")
        return value

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # As released: truncated-normal convs (std 0.02), unit LayerNorms; Linear layers keep PyTorch's default.
        if isinstance(module, nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # timm model API ---------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of the LayerScale parameters, which optimizers should not decay toward zero."""
        return {name for name, _ in self.named_parameters() if name.endswith(".gamma")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``group_matcher`` format)."""
        if coarse:
            blocks = r"^stages\.(\d+)"
        else:
            blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)]
        return dict(stem=r"^stem", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (``torch.utils.checkpoint``, non-reentrant)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier with ``num_classes`` outputs (0: none); ``global_pool`` ``"avg"`` or ``""`` if given."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def __prepare_scriptable__(self) -> NaLaFormer:
        # torch.jit.script calls this first: refuse with a clear message instead of a compiler error deep inside
        raise RuntimeError(
            "NaLaFormer does not support TorchScript (torch.jit.script, deprecated upstream): the token mixers take "
            "keyword-only arguments and optional states. Use torch.compile, torch.export or torch.fx "
            "(nalaformer.layers.tracing.LeafTracer) instead"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if is_fx_tracing():  # x is a torch.fx Proxy: its type and shape are not known while tracing
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor [B, {self.in_chans}, H, W], got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x must have shape [B, {self.in_chans}, H, W], got {list(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W] -> [B, num_features, ceil(H/32), ceil(W/32)]`` (stride-4 stem), before the head."""
        self._check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Head on ``forward_features`` output: ``[B, num_classes]``, or ``[B, head_hidden_size]`` if ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs for dense prediction (timm semantics).

        Args:
            x: ``[B, in_chans, H, W]``.
            indices: stages to return: None = all, int n = the last n, or a list (negative from the end).
            norm: accepted for API compatibility; this model has no norm on the final features (its BatchNorm
                sits after the head projection), so it changes nothing.
            stop_early: stop after the last requested stage (the returned final features are then that stage's).
            output_fmt: ``"NCHW"`` or ``"NHWC"``.
            intermediates_only: return only the list of stage outputs.

        Returns:
            The stage outputs (stage ``i``: ``[B, embed_dims[i], ceil(H / 2**(i+2)), ceil(W / 2**(i+2))]``), or
            ``(final_features, intermediates)``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self._check_input(x)
        take, last = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: last + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x if output_fmt == "NCHW" else x.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove the stages after the last of ``indices`` and, if ``prune_head``, the head; returns the indices."""
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: last + 1]
        self.num_features = self.embed_dims[last]
        if prune_head:
            self.head.prune()
            self.num_classes = 0
            self.head_hidden_size = self.num_features
        return take


# Official checkpoints -----------------------------------------------------------------------------------------------

# Renames from the official NALA.py state dict to this module's (applied in order, first match per rule).
_OFFICIAL_RENAMES = [
    (r"^patch_embed\.proj\.", "stem."),
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"\.norm([12])\.norm\.", r".norm\1."),
    (r"\.gamma_([12])$", r".layer_scale\1.gamma"),
    (r"\.attn\.qkvg\.", ".attn.in_proj."),
    (r"\.attn\.ln\.", ".attn.out_norm."),
    (r"^proj\.", "head.proj."),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def _is_official(state_dict: Mapping[str, Any]) -> bool:
    return any(name.startswith(("patch_embed.", "layers.")) for name in state_dict)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: NaLaFormer | None = None) -> dict[str, torch.Tensor]:
    """Convert an official NaLaFormer checkpoint (ZacharyMeng/NaLaFormer ``NALA.py`` names) to this model's names.

    Handles the ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and a ``module.`` (DDP) prefix; drops the
    persistent RoPE ``angle`` buffers (our mixers compute RoPE at run time); reshapes the LayerScale ``gamma_*``
    ``[1, C, 1, 1] -> [C]`` and the 1×1-conv classifier ``[K, D, 1, 1] -> [K, D]``; moves each stage's trailing
    ``downsample`` to the start of the next stage. A state dict already in this module's naming passes through.

    Args:
        state_dict: mapping of names to tensors (any dtype; values are not copied).
        model: if given and its classifier differs in shape (another ``num_classes``, or none), the checkpoint's
            classifier is dropped so the rest loads with ``strict=False`` for the ``head.fc`` keys only.

    Returns:
        A new ``dict`` in this module's naming.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    state_dict = {name.removeprefix("module."): value for name, value in state_dict.items()}
    if _is_official(state_dict):
        converted = {}
        for name, value in state_dict.items():
            if re.fullmatch(r"layers\.\d+\.RoPE\.angle", name):
                continue
            merge = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", name)
            if merge:
                name = f"stages.{int(merge.group(1)) + 1}.downsample.{merge.group(2)}"
            for pattern, replacement in _OFFICIAL_RENAMES:
                name = re.sub(pattern, replacement, name)
            if name.endswith(".gamma") or name == "head.fc.weight":
                value = value.flatten(1) if name == "head.fc.weight" else value.flatten()
            converted[name] = value
        state_dict = converted
    if model is not None:
        own = model.state_dict()
        for name in ("head.fc.weight", "head.fc.bias"):
            if name in state_dict and (name not in own or own[name].shape != state_dict[name].shape):
                del state_dict[name]
    return state_dict


def load_checkpoint(model: NaLaFormer, path: str | os.PathLike) -> NaLaFormer:
    """Load a ``.safetensors`` or ``torch.save`` checkpoint (official or our naming) into ``model``, in place.

    Every key must match except a classifier dropped by :func:`checkpoint_filter_fn` for a different ``num_classes``.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint_filter_fn(state_dict, model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if not name.startswith("head.fc.")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {path!r} does not fit the model: missing {missing}, unexpected {unexpected}")
    return model


# Configurations and builder ---------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The released configurations (NALA.py builders, including their hard-coded drop_path_rate), plus a small CPU model.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "nalaformer_xt": dict(
        embed_dims=(32, 64, 128, 384), depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 12), mlp_ratios=3.5,
        drop_path_rate=0.1, layer_scale_init=1.0,
    ),
    "nalaformer_t": dict(
        embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), mlp_ratios=4.0,
        drop_path_rate=0.1, layer_scale_init=1.0,
    ),
    "nalaformer_s": dict(
        embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8), mlp_ratios=3.5,
        drop_path_rate=0.15, layer_scale_init=1.0,
    ),
    "nalaformer_b": dict(
        embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8), mlp_ratios=4.0,
        drop_path_rate=0.4, layer_scale_init=(1.0, 1.0, 1e-6, 1e-6),
    ),
    "nalaformer_l": dict(
        embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10), mlp_ratios=3.5,
        drop_path_rate=0.55, layer_scale_init=1e-6,
    ),
    # Three stages at stride 2/4/8 so 28×28 and 32×32 images keep 14×14 / 16×16 tokens in stage 1.
    "nalaformer_nano": dict(
        embed_dims=(32, 64, 128), depths=(1, 2, 1), num_heads=(1, 2, 4), mlp_ratios=3.0,
        drop_path_rate=0.0, layer_scale_init=1.0, head_hidden_size=256, stem_stride=2, num_classes=10,
    ),
}  # fmt: skip


def _pretrained_cfg(variant: str, **overrides: Any) -> dict[str, Any]:
    cfg = dict(
        architecture=variant,
        url="",
        file=None,
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.9,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        first_conv="stem.0",
        classifier="head.fc",
        paper_ids="arXiv:2506.21137",
    )
    cfg.update(overrides)
    return cfg


PRETRAINED_CFGS = {name: _pretrained_cfg(name) for name in MODEL_CONFIGS}
PRETRAINED_CFGS["nalaformer_nano"] = _pretrained_cfg(
    "nalaformer_nano", num_classes=10, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0
)
# timm's register_model reads the module-level `default_cfgs` of the entrypoints' module (no weights: url is empty).
default_cfgs = PRETRAINED_CFGS


def _create_nalaformer(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    # timm's create_model passes these; a local weights file comes as pretrained_cfg_overlay=dict(file=...).
    cfg = dict(PRETRAINED_CFGS[variant])
    for key in ("pretrained_cfg", "pretrained_cfg_overlay"):
        extra = kwargs.pop(key, None)
        if isinstance(extra, Mapping):
            cfg.update(extra)
        elif extra is not None and hasattr(extra, "to_dict"):
            cfg.update(extra.to_dict())
    kwargs.pop("cache_dir", None)
    # features_only as timm's builder reads it: out_indices / feature_cls beside it, or inside feature_cfg
    features_only = kwargs.pop("features_only", False)
    feature_cfg = dict(kwargs.pop("feature_cfg", None) or {})
    for key in ("out_indices", "feature_cls", "output_fmt"):
        if key in kwargs:
            feature_cfg[key] = kwargs.pop(key)
    if feature_cfg and not features_only:
        raise ValueError(f"{variant}: {sorted(feature_cfg)} only apply with features_only=True")
    model = NaLaFormer(**{**MODEL_CONFIGS[variant], **kwargs})
    model.pretrained_cfg = model.default_cfg = cfg
    if pretrained:
        if not cfg.get("file"):
            raise ValueError(
                f"{variant}: pretrained=True but no weights are published yet; pass a local file with "
                f"pretrained_cfg_overlay=dict(file='path/to/checkpoint.pth') (official or nalaformer naming)"
            )
        load_checkpoint(model, cfg["file"])
    if features_only:
        return build_features_model(model, **feature_cfg)
    return model


def nalaformer_xt(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """NaLaFormer-XT (released config: about 6.1 M parameters, see README); keywords override :class:`NaLaFormer`."""
    return _create_nalaformer("nalaformer_xt", pretrained, **kwargs)


def nalaformer_t(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """NaLaFormer-T (15 M, 2.7 GMACs at 224²); keywords override :class:`NaLaFormer`."""
    return _create_nalaformer("nalaformer_t", pretrained, **kwargs)


def nalaformer_s(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """NaLaFormer-S (26 M, 5.1 GMACs at 224²); keywords override :class:`NaLaFormer`."""
    return _create_nalaformer("nalaformer_s", pretrained, **kwargs)


def nalaformer_b(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """NaLaFormer-B (52 M, 11.8 GMACs at 224²); keywords override :class:`NaLaFormer`."""
    return _create_nalaformer("nalaformer_b", pretrained, **kwargs)


def nalaformer_l(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """NaLaFormer-L (95 M, 17.7 GMACs at 224²); keywords override :class:`NaLaFormer`."""
    return _create_nalaformer("nalaformer_l", pretrained, **kwargs)


def nalaformer_nano(pretrained: bool = False, **kwargs: Any) -> NaLaFormer:
    """Small three-stage CPU model for 28×28 / 32×32 inputs (stem stride 2, 10 classes); keywords override."""
    return _create_nalaformer("nalaformer_nano", pretrained, **kwargs)


ENTRYPOINTS = {
    fn.__name__: fn for fn in (nalaformer_xt, nalaformer_t, nalaformer_s, nalaformer_b, nalaformer_l, nalaformer_nano)
}


def register_timm_models() -> bool:
    """Register the entrypoints and their ``default_cfgs`` with timm's model registry, and the token mixers as
    leaf modules of timm's FX helpers. Returns False (nothing done) if timm is not installed or cannot be imported.

    Runs when this module is imported (``import nalaformer.models`` does it), the way timm's own model modules
    register themselves; timm has no plugin entry points, so ``timm.create_model("nalaformer_t")`` needs that import
    first. Calling it again is a no-op.
    """
    import importlib.util

    # Importing timm costs seconds and pulls torchvision, so only try when it is installed.
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        from timm.models import is_model, model_entrypoint, register_model
    except (ImportError, RuntimeError):
        # timm imports torchvision, which fails (RuntimeError) beside CPU-only torch builds.
        return False
    for name, fn in ENTRYPOINTS.items():
        if not (is_model(name) and model_entrypoint(name) is fn):
            register_model(fn)
    register_timm_leaf_modules()
    return True


register_timm_models()
