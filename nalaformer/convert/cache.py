"""Constant-size decoding state for converted Hugging Face decoders (GPT-2, Llama-style).

A converted layer in linear mode needs no keys and values of past tokens: its attention is a running sum
(``LinearAttentionState`` per feature stream: ``Σ phi(k) v^T``, ``Σ phi(k)`` and the count of real keys; see
docs/method.md §4.3, causal running mean). When such a layer receives a transformers cache (``generate`` makes a
``DynamicCache``; ``model(..., use_cache=True)`` returns one), it puts a :class:`LinearStateLayer` in its slot of that
cache instead of appending keys and values. The layer answers the cache queries transformers makes (sequence length
for positions, mask sizes) like a ``DynamicLayer`` of the same length, so ``generate``, masks and RoPE positions work
unchanged, while the memory it holds does not grow with the context.

Softmax and transfer modes and the softmax-window hybrid keep transformers' own growing key/value layers.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import CacheLayerMixin, DynamicLayer

from nalaformer.ops.linear_attn.state import LinearAttentionState


class LinearStateLayer(CacheLayerMixin):
    """One converted layer's decoding state in a transformers cache.

    Attributes:
        states (tuple[LinearAttentionState, ...] | None): one running state per feature stream (``None`` before the
            first call).
        length (int): columns consumed so far, padding included (what ``get_seq_length`` reports).
    """

    is_compileable = False
    is_croppable = False
    is_sliding = False

    def __init__(self) -> None:
        super().__init__()
        self.states: tuple[LinearAttentionState, ...] | None = None
        self.length = 0

    def __repr__(self) -> str:
        return f"LinearStateLayer(length={self.length}, nbytes={self.nbytes()})"

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this cache layer holds a converted layer's linear-attention state, not keys and values; a softmax "
            "attention cannot continue from it (decode the converted model in linear mode, or start a new cache)"
        )

    def advance(self, states: tuple[LinearAttentionState, ...], new_columns: int) -> None:
        """Store the states after ``new_columns`` more columns (the converted layer calls this)."""
        self.states = states
        self.length += new_columns
        self.is_initialized = True

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    @property
    def batch_size(self) -> int:
        return -1 if self.states is None else int(self.states[0].count.shape[0])

    def reset(self) -> None:
        self.states, self.length, self.is_initialized = None, 0, False

    def offload(self) -> None:
        """Nothing to offload: the state is small."""

    def prefetch(self) -> None:
        """Nothing to prefetch (see :meth:`offload`)."""

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove != 0:
            raise ValueError(
                f"cannot remove {tokens_to_remove} token(s): a linear-attention state is a running sum that cannot "
                "be rolled back (assisted / speculative decoding is not supported)"
            )

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.states is None:
            return
        self.states = tuple(
            LinearAttentionState(s.kv[indices], s.k_sum[indices], s.count[indices]) for s in self.states
        )

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.states is not None:
            self.batch_select_indices(beam_idx.to(self.states[0].kv.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.states is not None:
            index = torch.arange(self.batch_size, device=self.states[0].kv.device).repeat_interleave(repeats)
            self.batch_select_indices(index)

    def nbytes(self) -> int:
        """Bytes held (0 before the first call)."""
        if self.states is None:
            return 0
        return sum(t.numel() * t.element_size() for s in self.states for t in (s.kv, s.k_sum, s.count))


def self_attention_cache(cache: Any) -> Any:
    """The self-attention part of a transformers cache (an ``EncoderDecoderCache`` holds two)."""
    return getattr(cache, "self_attention_cache", cache)


def state_layer(cache: Any, layer_idx: int) -> LinearStateLayer:
    """The :class:`LinearStateLayer` of ``layer_idx`` in ``cache``, put in place of an empty key/value layer.

    Raises ``ValueError`` when that slot already holds keys (the cache was filled in softmax or transfer mode).
    """
    cache = self_attention_cache(cache)
    layers = cache.layers
    while len(layers) <= layer_idx:  # caches that create their layers lazily
        layers.append(DynamicLayer())
    layer = layers[layer_idx]
    if isinstance(layer, LinearStateLayer):
        return layer
    if layer.get_seq_length() > 0:
        raise ValueError(
            f"cache layer {layer_idx} already holds {layer.get_seq_length()} keys from softmax attention; a converted "
            "layer in linear mode cannot continue from them (start a new cache)"
        )
    layers[layer_idx] = LinearStateLayer()
    return layers[layer_idx]


def cache_nbytes(cache: Any) -> int:
    """Bytes held by a decoding cache: converted layers' states, softmax layers' keys and values, or a
    ``NaLaCache``'s mixer states. ``cache`` may also be the model output that carries it (under ``cache`` or, in
    older transformers releases, ``past_key_values``)."""
    if hasattr(cache, "logits"):
        cache = cache["cache"] if "cache" in cache else cache["past_key_values"]
    if hasattr(cache, "nbytes") and callable(cache.nbytes):
        return int(cache.nbytes())
    total = 0
    for layer in self_attention_cache(cache).layers:
        if isinstance(layer, LinearStateLayer):
            total += layer.nbytes()
        else:
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(tensor, torch.Tensor):
                    total += tensor.numel() * tensor.element_size()
    return total
