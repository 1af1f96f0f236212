"""Find a pretrained model's softmax self-attention modules and swap them for converted ones.

Every check runs before the first module is replaced, so a model that cannot be converted is left as it was and the
error names the module and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nalaformer.convert.attention import LinearizedAttention, build_feature_map
from nalaformer.convert.families import (
    FAMILIES,
    ConvertedBlockMixer,
    family_of,
    is_cross_attention,
    module_causal,
    module_heads,
)
from nalaformer.layers import NaLaFeatureMap, TokenMixer, attention_spec

SUPPORTED = (
    "BERT-style self-attention (query/key/value: BERT, MiniLM, RoBERTa), GPT-2 attention (c_attn/c_proj), "
    "Llama-style attention (q/k/v/o_proj with RoPE: Llama, Mistral, Qwen2), NaLaForCausalLM softmax mixers"
)


class ConversionError(ValueError):
    """A model or option the converter cannot take; the message names the module and the reason."""


@dataclass
class ConversionSpec:
    """How to convert: the registered linear mixer, its options, the softmax window, the denominator epsilon.

    Attributes:
        mixer (str): a registered feature-map mixer (``nala``, ``nala_cosine``, ``elu``, ``relu``, ``hedgehog``,
            ``cosformer``, ...). Default: ``"nala"``.
        options (dict): ``build_attention`` options of the mixer (e.g. ``{"lam": 3.0}``). Default: none.
        window (int): keep softmax attention over the ``window`` nearest keys and linear attention beyond (the
            sliding-window hybrid); 0 = fully linear. Default: 0.
        eps (float): added to the mean denominator. Default: 1e-6.
    """

    mixer: str = "nala"
    options: dict[str, Any] = field(default_factory=dict)
    window: int = 0
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 0:
            raise ConversionError(f"window must be an int >= 0, got {self.window!r}")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ConversionError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if not isinstance(self.options, dict):
            raise ConversionError(f"options must be a dict of build_attention options, got {self.options!r}")
        try:
            attention_spec(self.mixer)
        except ValueError as error:
            raise ConversionError(f"mixer: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversionSpec:
        known = {"mixer", "options", "window", "eps"}
        unknown = set(data) - known
        if unknown:
            raise ConversionError(f"unknown conversion fields {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)


ConvertedModule = LinearizedAttention | ConvertedBlockMixer


def _looks_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return "Attention" in name or "SelfAttn" in name or "MultiheadAttention" in name


def find_attention(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """The softmax self-attention modules of ``model``: ``(path, module, family)``.

    Raises :class:`ConversionError` for an attention module the converter does not know, a cross-attention, an
    already converted model, or a model with no attention at all.
    """
    found: list[tuple[str, nn.Module, str]] = []
    unknown: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if any(path.startswith(f"{done}.") for done, _, _ in found):
            continue
        if isinstance(module, (LinearizedAttention, ConvertedBlockMixer)):
            raise ConversionError(f"module {path!r} ({type(module).__name__}) is already converted")
        family = family_of(module)
        if family is not None:
            if is_cross_attention(module):
                raise ConversionError(
                    f"module {path!r} ({type(module).__name__}) is cross-attention; only self-attention is converted"
                )
            found.append((path, module, family))
        elif _looks_like_attention(module) and not isinstance(module, TokenMixer):
            unknown.append((path, module))
    for path, module in unknown:
        inside = [p for p, _, _ in found if p.startswith(f"{path}.") or not path]
        if not inside:
            raise ConversionError(
                f"module {path!r} ({type(module).__name__}) is an attention the converter does not know; "
                f"it converts: {SUPPORTED}"
            )
    if not found:
        raise ConversionError(
            f"{type(model).__name__} has no softmax self-attention module to convert; the converter knows: {SUPPORTED}"
        )
    return found


def _check(path: str, module: nn.Module, family: str, spec: ConversionSpec) -> None:
    where = f"module {path!r} ({type(module).__name__})"
    causal = module_causal(module, family)
    registered = attention_spec(spec.mixer)
    if not causal and not registered.noncausal:
        raise ConversionError(f"{where} is bidirectional (an encoder) but mixer {spec.mixer!r} is causal only")
    if causal and not registered.causal:
        raise ConversionError(f"{where} is causal (a decoder) but mixer {spec.mixer!r} has no causal form")
    if spec.window and family == "nala_block":
        raise ConversionError(f"{where}: the softmax window (window={spec.window}) is only available for the "
                              "Hugging Face families")  # fmt: skip
    heads, head_dim = module_heads(module, family)
    try:
        build_feature_map(spec.mixer, heads, head_dim, causal, spec.options)
    except ValueError as error:
        raise ConversionError(
            f"{where} with {heads} heads of width {head_dim}: mixer {spec.mixer!r}: {error}"
        ) from None


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def linearize(model: nn.Module, spec: ConversionSpec | None = None, **fields: Any) -> nn.Module:
    """Replace every softmax self-attention of ``model`` (in place) by the converted attention of ``spec``.

    Args:
        model: a ``transformers`` model of a known family, or a ``NaLaForCausalLM`` with softmax mixers.
        spec: the conversion (default :class:`ConversionSpec`); or pass its fields as keywords
            (``linearize(model, mixer="elu")``).

    Returns:
        ``model``, its attention modules replaced, the pretrained weights shared (not copied), the new parameters
        (adapters, feature-map weights) added; ``model.nalaformer_conversion`` holds ``spec.to_dict()``.
    """
    if spec is None:
        spec = ConversionSpec(**fields)
    elif fields:
        raise ConversionError(f"pass either spec or its fields, not both (got spec and {sorted(fields)})")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = find_attention(model)
    for path, module, family in targets:
        _check(path, module, family, spec)
    for path, module, family in targets:
        converted = FAMILIES[family](module, spec.mixer, spec.options, spec.window, spec.eps)
        _set_submodule(model, path, converted)
    inner = getattr(model, "model", None)
    if hasattr(inner, "has_bounded_context"):
        # NaLaModel limits the context only while a softmax layer is left
        inner.has_bounded_context = False
    model.nalaformer_conversion = spec.to_dict()
    return model


def converted_modules(model: nn.Module) -> Iterator[tuple[str, ConvertedModule]]:
    """``(path, module)`` of every converted attention in ``model``."""
    for path, module in model.named_modules():
        if isinstance(module, (LinearizedAttention, ConvertedBlockMixer)):
            yield path, module


def set_mode(model: nn.Module, mode: str) -> None:
    """``"linear"`` (the converted model), ``"softmax"`` (the teacher) or ``"transfer"`` for every converted layer."""
    modules = list(converted_modules(model))
    if not modules:
        raise ConversionError(f"{type(model).__name__} has no converted attention; call linearize() first")
    for _, module in modules:
        module.set_mode(mode)


def new_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters the conversion added (adapters, feature-map weights, window weights), by name."""
    params: dict[int, tuple[str, nn.Parameter]] = {}
    for path, module in converted_modules(model):
        owned = [("adapter", module.adapter), ("feature_map", module.feature_map)]
        for prefix, child in owned:
            for name, param in child.named_parameters():
                params.setdefault(id(param), (f"{path}.{prefix}.{name}", param))
        weight = getattr(module, "window_weight", None)
        if isinstance(weight, nn.Parameter):
            params.setdefault(id(weight), (f"{path}.window_weight", weight))
    return list(params.values())


def _query_heads(module: ConvertedModule, hidden: torch.Tensor) -> torch.Tensor:
    """The pretrained queries ``[B, T, H, D]`` of a converted layer (RoPE would not change their norms)."""
    shape = (*hidden.shape[:-1], module.num_heads, module.head_dim)
    family = module.family
    if family == "bert":
        return module.query(hidden).view(shape)
    if family == "gpt2":
        return module.c_attn(hidden).split(module.split_size, dim=2)[0].reshape(shape)
    if family == "llama":
        return module.q_proj(hidden).view(shape)
    return module.teacher_block.in_proj(hidden)[..., : module.dim].reshape(shape)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, list[float]]:
    """Start each NaLa layer's temperature at its heads' median pretrained query norm (see ``QueryKeyAdapter``).

    Layers whose NaLa map has its own per-head temperature (``temperature="learned"`` or ``"running"``, which start
    from the data themselves) are left alone.

    Runs ``model`` in teacher mode on ``batches`` (keyword inputs of the model) and sets the query log-scale of the
    converted layers whose map is NaLa's norm-aware one to ``-log(median ||q||)`` per head. Other maps keep scale 1.

    Returns:
        ``{layer path: per-head median query norm}`` of the NaLa layers.
    """
    layers = {
        path: module
        for path, module in converted_modules(model)
        if isinstance(module.feature_map, NaLaFeatureMap)
        and module.feature_map.power is None
        and getattr(module.feature_map, "temperature_mode", None) is None  # a learned / running T is the map's own
    }
    if not layers:
        return {}
    norms: dict[str, list[torch.Tensor]] = {path: [] for path in layers}
    hooks = []
    for path, module in layers.items():

        def hook(mod: nn.Module, args: tuple, kwargs: dict, path: str = path) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
            norms[path].append(_query_heads(mod, hidden).float().norm(dim=-1).flatten(0, 1))

        hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    set_mode(model, "softmax")
    try:
        for batch in batches:
            model(**batch)
    finally:
        for handle in hooks:
            handle.remove()
        set_mode(model, "linear")
        model.train(was_training)
    medians = {}
    for path, module in layers.items():
        if not norms[path]:
            raise ConversionError("calibrate: no batch reached the model (empty batches)")
        median = torch.cat(norms[path]).median(dim=0).values.clamp_min(1e-3)
        module.adapter.query_log_scale.copy_(-median.log())
        medians[path] = [round(float(m), 4) for m in median]
    return medians
