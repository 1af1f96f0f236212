"""Converted attention layers for each architecture family the converter knows.

Each wrapper takes the pretrained module, keeps its projections under their original attribute names (so state-dict
keys and LoRA target names are unchanged), and reproduces the original ``forward`` signature and return convention of
the installed ``transformers`` (checked against 5.x): ``(attn_output, attn_weights)``. Only the per-head attention is
replaced, by :meth:`LinearizedAttention.attend`.

Families:

- ``bert``: BERT-style encoder self-attention (``query / key / value`` linears; MiniLM and RoBERTa share it);
  bidirectional unless the module is causal (a BERT decoder).
- ``gpt2``: GPT-2's fused ``c_attn`` / ``c_proj`` (``Conv1D``), causal.
- ``llama``: ``q_proj / k_proj / v_proj / o_proj`` with RoPE from ``position_embeddings`` and grouped-query heads
  (Llama, Mistral, Qwen2 and their kin), causal.
- ``nala_block``: this library's own softmax mixer (``NaLaForCausalLM`` with ``mixer="softmax"``); see
  :class:`ConvertedBlockMixer`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nalaformer.convert.attention import (
    LinearizedAttention,
    QueryKeyAdapter,
    expand_heads,
    key_mask_from,
    relative_mse,
)
from nalaformer.layers import (
    FeatureMap,
    LinearAttention,
    NaLaFeatureMap,
    SoftmaxAttention,
    TokenMixer,
    build_attention,
)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Hugging Face's half-split rotary embedding on ``[B, H, T, D]`` with ``cos, sin [B, T, D]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def _past_keys_values(
    cache: Any, layer_idx: int, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``[B, H, T, D]`` keys and values to a Hugging Face cache as the original module would, so
    ``generate``'s bookkeeping (positions, lengths) stays right; returns every cached key and value."""
    if cache is None:
        return k, v
    return cache.update(k, v, layer_idx)


def _cached(cache: Any, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_past_keys_values` for ``[B, T, H, D]`` tensors."""
    if cache is None:
        return k, v
    k, v = _past_keys_values(cache, layer_idx, k.transpose(1, 2), v.transpose(1, 2))
    return k.transpose(1, 2), v.transpose(1, 2)


def _state_of(cache: Any, layer_idx: int | None, attention_mask: torch.Tensor | None, k: torch.Tensor) -> tuple:
    """``(state layer, key mask)`` for :meth:`LinearizedAttention.recurrent` with new keys ``k [B, T, H, D]``."""
    from nalaformer.convert.cache import state_layer

    if layer_idx is None:
        raise ValueError("a converted layer without layer_idx cannot keep a decoding state in a cache")
    return state_layer(cache, layer_idx), key_mask_from(attention_mask, k.shape[1])


def _attend_with_cache(
    layer: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: Any, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, T, H, D]`` heads through ``layer``: one recurrent step on its linear state when it decodes with one,
    else attention over the cached and new keys (the teacher's key/value cache in softmax and transfer modes)."""
    if layer.decodes_with_state(cache):
        state, key_mask = _state_of(cache, layer.layer_idx, attention_mask, k)
        return layer.recurrent(q, k, v, state, key_mask=key_mask), None
    k, v = _cached(cache, layer.layer_idx, k, v)
    return layer.attend(q, k, v, scaling=layer.scaling, key_mask=key_mask_from(attention_mask, k.shape[1]))


class BertLinearized(LinearizedAttention):
    """BERT-family self-attention with the attention replaced (``query``, ``key``, ``value`` reused)."""

    family = "bert"

    def __init__(self, original: nn.Module, mixer: str, options: dict[str, Any], window: int, eps: float) -> None:
        causal = bool(getattr(original, "is_causal", False) or getattr(original, "is_decoder", False))
        heads, head_dim = original.num_attention_heads, original.attention_head_size
        super().__init__(mixer, options, heads, head_dim, causal, window, eps)
        self.query, self.key, self.value = original.query, original.key, original.value
        self.scaling = float(getattr(original, "scaling", head_dim**-0.5))
        self.layer_idx = getattr(original, "layer_idx", None)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kwargs.pop("past_key_values", None)
        shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        q = self.query(hidden_states).view(shape)
        k = self.key(hidden_states).view(shape)
        v = self.value(hidden_states).view(shape)
        o, weights = _attend_with_cache(self, q, k, v, cache, attention_mask)
        return o.reshape(*hidden_states.shape[:-1], -1), weights


class GPT2Linearized(LinearizedAttention):
    """GPT-2 attention with the attention replaced (``c_attn``, ``c_proj`` and the dropouts reused)."""

    family = "gpt2"

    def __init__(self, original: nn.Module, mixer: str, options: dict[str, Any], window: int, eps: float) -> None:
        super().__init__(mixer, options, original.num_heads, original.head_dim, True, window, eps)
        self.c_attn, self.c_proj = original.c_attn, original.c_proj
        self.resid_dropout = original.resid_dropout
        self.split_size = original.split_size
        self.scaling = float(original.scaling)
        self.layer_idx = original.layer_idx

    def forward(
        self,
        hidden_states: torch.Tensor,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if encoder_hidden_states is not None:
            raise ValueError("a converted GPT-2 layer has no cross-attention (encoder_hidden_states was given)")
        cache = kwargs.pop("past_key_values", cache)
        q, k, v = self.c_attn(hidden_states).split(self.split_size, dim=2)
        shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        q, k, v = q.view(shape), k.view(shape), v.view(shape)
        o, weights = _attend_with_cache(self, q, k, v, cache, attention_mask)
        o = self.resid_dropout(self.c_proj(o.reshape(*hidden_states.shape[:-1], -1)))
        return o, weights


class LlamaLinearized(LinearizedAttention):
    """Llama-style attention (RoPE, grouped-query heads) with the attention replaced (``q/k/v/o_proj`` reused).

    The feature map acts on the rotated queries and keys, the inputs of the original softmax.
    """

    family = "llama"

    def __init__(self, original: nn.Module, mixer: str, options: dict[str, Any], window: int, eps: float) -> None:
        heads = original.config.num_attention_heads
        super().__init__(mixer, options, heads, original.head_dim, True, window, eps)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            original.q_proj, original.k_proj, original.v_proj, original.o_proj
        )  # fmt: skip
        self.groups = int(original.num_key_value_groups)
        self.scaling = float(original.scaling)
        self.layer_idx = original.layer_idx

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = kwargs.pop("past_key_values", cache)
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        stateful = self.decodes_with_state(cache)
        if not stateful:
            k, v = _past_keys_values(cache, self.layer_idx, k, v)
        q = q.transpose(1, 2)
        k, v = expand_heads(k.transpose(1, 2), self.groups), expand_heads(v.transpose(1, 2), self.groups)
        if stateful:
            layer, key_mask = _state_of(cache, self.layer_idx, attention_mask, k)
            o, weights = self.recurrent(q, k, v, layer, key_mask=key_mask), None
        else:
            key_mask = key_mask_from(attention_mask, k.shape[1])
            o, weights = self.attend(q, k, v, scaling=self.scaling, key_mask=key_mask)
        return self.o_proj(o.reshape(*hidden_states.shape[:-1], -1)), weights


class AdaptedFeatureMap(FeatureMap):
    """A registered feature map behind a :class:`QueryKeyAdapter` (the library's block calls it like any map)."""

    def __init__(self, inner: FeatureMap, adapter: QueryKeyAdapter) -> None:
        super().__init__()
        self.inner, self.adapter = inner, adapter
        self.streams = inner.streams

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> list:
        q, k = self.adapter(q, k)
        return self.inner(q, k, positions)


class AdaptedNaLaFeatureMap(NaLaFeatureMap):
    """NaLa's map behind a :class:`QueryKeyAdapter` that stays a ``NaLaFeatureMap``, so the library's block keeps
    running it through the fast op (:func:`~nalaformer.ops.nala_attention`) in training, prefill and decoding."""

    adapter: QueryKeyAdapter

    @classmethod
    def wrap(cls, feature_map: NaLaFeatureMap, adapter: QueryKeyAdapter) -> AdaptedNaLaFeatureMap:
        """``feature_map`` itself (its parameters and options kept), now applying ``adapter`` first."""
        feature_map.__class__ = cls
        feature_map.adapter = adapter
        return feature_map

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> list:
        q, k = self.adapter(q, k)
        return super().forward(q, k, positions)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options: Any) -> Any:
        q, k = self.adapter(q, k)
        return super().attention(q, k, v, **options)


class ConvertedBlockMixer(TokenMixer):
    """This library's softmax mixer converted: a :class:`LinearAttention` sharing every module of the softmax block.

    The student reuses the block's ``in_proj`` (q, k, v and gate), short convolution, output norm and ``out_proj``;
    its feature map sits behind a :class:`QueryKeyAdapter`. It keeps the block's mixer interface (``state`` /
    ``use_cache``), so the converted ``NaLaForCausalLM`` decodes through its own constant-size cache. Attention
    transfer compares whole block outputs (the KL term needs the Hugging Face families' explicit weights).
    """

    family = "nala_block"

    def __init__(
        self, original: SoftmaxAttention, mixer: str, options: dict[str, Any], window: int, eps: float
    ) -> None:
        if window:
            raise ValueError("the softmax sliding window is not available for this library's own blocks")
        super().__init__(original.dim, original.num_heads, causal=original.causal, layout=original.layout)
        kernel = original.lepe.kernel_size if original.use_lepe and hasattr(original.lepe, "kernel_size") else None
        student = build_attention(
            mixer, original.dim, original.num_heads, causal=original.causal, layout=original.layout,
            rope=original.use_rope, lepe=original.use_lepe, gate=original.use_gate, rope_base=original.rope_base,
            qkv_bias=original.in_proj.bias is not None, eps=eps,
            **({"lepe_kernel_size": kernel} if kernel else {}), **options,
        )  # fmt: skip
        if not isinstance(student, LinearAttention):
            raise ValueError(f"mixer {mixer!r} is not a feature-map linear attention ({type(student).__name__})")
        for name in ("in_proj", "lepe", "out_norm", "out_proj"):
            setattr(student, name, getattr(original, name))
        adapter = QueryKeyAdapter(original.num_heads, original.head_dim)
        if type(student.feature_map) is NaLaFeatureMap:
            student.feature_map = AdaptedNaLaFeatureMap.wrap(student.feature_map, adapter)
        else:
            student.feature_map = AdaptedFeatureMap(student.feature_map, adapter)
        self.student_block = student
        self.teacher_block = original
        self.mixer, self.mixer_options, self.window, self.eps = mixer, dict(options), 0, eps
        self.mode = "linear"
        self.record = None

    @property
    def feature_map(self) -> FeatureMap:
        fm = self.student_block.feature_map
        return fm.inner if isinstance(fm, AdaptedFeatureMap) else fm

    @property
    def adapter(self) -> QueryKeyAdapter:
        return self.student_block.feature_map.adapter

    def set_mode(self, mode: str) -> None:
        LinearizedAttention.set_mode(self, mode)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        if self.mode == "softmax":
            return self.teacher_block(x, **kwargs)
        if self.mode == "linear":
            return self.student_block(x, **kwargs)
        teacher = self.teacher_block(x, **kwargs)
        student = self.student_block(x, **kwargs)
        if self.record is not None:
            mask = kwargs.get("attention_mask")
            valid = None if mask is None else mask.bool()
            self.record.mse.append(relative_mse(student, teacher.detach(), valid))
        return teacher


FAMILIES: dict[str, type[nn.Module]] = {
    "bert": BertLinearized,
    "gpt2": GPT2Linearized,
    "llama": LlamaLinearized,
    "nala_block": ConvertedBlockMixer,
}


def family_of(module: nn.Module) -> str | None:
    """The family of a pretrained attention module, or ``None`` when the converter does not know it."""
    if isinstance(module, SoftmaxAttention):
        return "nala_block"
    names = set(dict(module.named_children()))
    if {"query", "key", "value"} <= names and hasattr(module, "attention_head_size"):
        return "bert"
    if {"c_attn", "c_proj"} <= names and hasattr(module, "split_size"):
        return "gpt2"
    if {"q_proj", "k_proj", "v_proj", "o_proj"} <= names and hasattr(module, "num_key_value_groups"):
        return "llama"
    return None


def is_cross_attention(module: nn.Module) -> bool:
    """Encoder-decoder attention (not converted: its keys come from another sequence)."""
    return bool(getattr(module, "is_cross_attention", False)) or "Cross" in type(module).__name__


def module_causal(module: nn.Module, family: str) -> bool:
    """Whether the pretrained module attends causally."""
    if family == "bert":
        return bool(getattr(module, "is_causal", False) or getattr(module, "is_decoder", False))
    if family == "nala_block":
        return bool(module.causal)
    return True


def module_heads(module: nn.Module, family: str) -> tuple[int, int]:
    """``(query heads, head width)`` of the pretrained module."""
    if family == "bert":
        return int(module.num_attention_heads), int(module.attention_head_size)
    if family == "gpt2":
        return int(module.num_heads), int(module.head_dim)
    if family == "llama":
        return int(module.config.num_attention_heads), int(module.head_dim)
    return int(module.num_heads), int(module.head_dim)
