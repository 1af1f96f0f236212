"""The decoding cache of the NaLa language model: one ``MixerState`` per layer.

A linear mixer's entry is fixed-size (its ``LinearAttentionState`` per stream, the short-conv tail and the per-row
position), so the memory held per layer does not grow with the context; only softmax layers keep a growing KV cache.
The class subclasses ``transformers.Cache`` so ``generate`` treats it as a cache, and overrides every method
``generate`` calls, so its behaviour does not depend on the base class's per-layer objects (which change between
transformers releases).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from nalaformer.layers import MixerState


class NaLaCacheLayer:
    """Read-only view of one layer's entry, ``cache.layers[i]``, under the attribute names of transformers' cache
    layers: a softmax layer has ``keys [B, H, L, D]`` / ``values [B, H, L, Dv]`` (RoPE-rotated keys, padding
    included, ``L`` = columns consumed); a linear layer has ``recurrent_states`` (its ``[B, H, F, Dv]`` running sum,
    a tuple of one per stream for multi-stream feature maps such as NaLa's sign split) and ``conv_states`` (the
    short-conv tail ``[B, C, K - 1]``). Every layer has ``state``, its ``MixerState`` (``None`` until the layer has
    run). Writing goes through the model, never through these views.
    """

    def __init__(self, state: MixerState | None) -> None:
        self.state = state

    def __repr__(self) -> str:
        kind = None if self.state is None else type(self.state.attention).__name__
        return f"NaLaCacheLayer(state={kind})"

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    def _attention(self, name: str) -> torch.Tensor | None:
        return None if self.state is None else getattr(self.state.attention, name, None)

    @property
    def keys(self) -> torch.Tensor | None:
        return self._attention("keys")

    @property
    def values(self) -> torch.Tensor | None:
        return self._attention("values")

    @property
    def recurrent_states(self) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
        # LinearAttentionState calls it kv, DeltaRuleState recurrent; a feature map with several streams (NaLa's
        # sign split) keeps one state per stream, returned as a tuple
        if self.state is None:
            return None
        attention = self.state.attention
        parts = attention if isinstance(attention, tuple) else (attention,)
        tensors = tuple(getattr(part, "kv", getattr(part, "recurrent", None)) for part in parts)
        if any(t is None for t in tensors):
            return None
        return tensors if isinstance(attention, tuple) else tensors[0]

    @property
    def conv_states(self) -> torch.Tensor | None:
        return None if self.state is None else self.state.conv


class NaLaCache(Cache):
    """Per-layer ``MixerState`` s of a :class:`NaLaForCausalLM`, updated in place by each forward call; read them as
    ``cache.states[i]`` or, under transformers' names, ``cache.layers[i]`` (a :class:`NaLaCacheLayer` view).

    Args:
        num_layers (int): number of decoder layers (one entry each; ``None`` until the layer has run).

    Attributes:
        states (list[MixerState | None]): the state of each layer.
        seen_tokens (int): columns consumed so far, padding included (the length of the attention mask that the next
            call's mask must extend).
    """

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        super().__init__(layers=[])
        self.states: list[MixerState | None] = [None] * num_layers
        self.seen_tokens = 0

    def __len__(self) -> int:
        return len(self.states)

    @property
    def layers(self) -> list[NaLaCacheLayer]:
        """One read-only :class:`NaLaCacheLayer` view per decoder layer (transformers' ``Cache.layers``)."""
        return [NaLaCacheLayer(state) for state in self.states]

    @layers.setter
    def layers(self, value: list) -> None:
        # transformers' Cache.__init__ assigns its own (empty) list; the states are the storage here
        if value:
            raise AttributeError("NaLaCache.layers is a read-only view of NaLaCache.states")

    def __repr__(self) -> str:
        return f"NaLaCache(num_layers={len(self)}, seen_tokens={self.seen_tokens}, nbytes={self.nbytes()})"

    def update_layer(self, layer_idx: int, state: MixerState) -> None:
        """Store the state ``layer_idx`` returned (the model calls this; ``seen_tokens`` is advanced separately)."""
        if not isinstance(state, MixerState):
            raise TypeError(f"state must be a MixerState, got {type(state).__name__}")
        self.states[layer_idx] = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns consumed so far (padding included); ``generate`` slices this many tokens off a resumed prompt."""
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        """No preallocated maximum (-1): linear layers are fixed-size, softmax layers grow."""
        return -1

    @property
    def batch_size(self) -> int:
        """Rows held, or -1 before the first call."""
        for state in self.states:
            if state is not None:
                return int(state.position.shape[0])
        return -1

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return all(state is not None for state in self.states)

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * len(self)

    @property
    def is_linear(self) -> list[bool]:
        # Reported False for every layer on purpose: generate() then uses get_seq_length() to drop the tokens this
        # cache has already consumed when a prompt is resumed; for transformers' own linear layers it does not.
        return [False] * len(self)

    @property
    def is_dummy(self) -> list[bool]:
        return [False] * len(self)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep rows ``beam_idx`` (beam search): ``MixerState.index_select`` on every layer."""
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` ``[B']`` (long) of every layer's state."""
        self.states = [None if state is None else state.index_select(indices) for state in self.states]

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each row ``repeats`` times in place (row ``i`` becomes rows ``i*repeats .. i*repeats+repeats-1``)."""
        if self.batch_size < 0:
            return
        device = next(state.position.device for state in self.states if state is not None)
        index = torch.arange(self.batch_size, device=device).repeat_interleave(repeats)
        self.batch_select_indices(index)

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` is supported: a recurrent state cannot be rolled back to an earlier token."""
        if tokens_to_remove != 0:
            raise ValueError(
                f"NaLaCache cannot remove {tokens_to_remove} token(s): linear-attention states are running sums that "
                "cannot be rolled back (assisted / speculative decoding is not supported)"
            )

    def activate_past_recording(self) -> None:
        """No-op: past states are never recorded (see :meth:`crop`)."""

    def reset(self) -> None:
        """Forget every state (start a new sequence)."""
        self.states = [None] * len(self)
        self.seen_tokens = 0

    def layer_nbytes(self) -> list[int]:
        """Bytes held by each layer's state (0 for a layer that has not run)."""
        return [0 if state is None else state.nbytes() for state in self.states]

    def nbytes(self) -> int:
        """Bytes held by the whole cache."""
        return sum(self.layer_nbytes())
