"""The NaLa causal language model with the Hugging Face API: ``NaLaModel`` and ``NaLaForCausalLM``.

Block: ``x + mixer(RMSNorm(x))``, then ``x + SwiGLU(RMSNorm(x))``; the mixer of each layer comes from the
``nalaformer.layers`` registry (NaLa by default). Generation carries a :class:`NaLaCache` of per-layer
``MixerState`` s: a prefill runs each mixer's chunked form, every later single-token step its recurrent form.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from nalaformer.layers import MixerState, SoftmaxAttention, TokenMixer, build_attention
from nalaformer.layers.tracing import is_graph_capture
from nalaformer.models.lm.auto_code import write_auto_code
from nalaformer.models.lm.cache import NaLaCache
from nalaformer.models.lm.compat import CACHE_FIELD
from nalaformer.models.lm.configuration_nala import NaLaConfig


@dataclass
class NaLaModelOutput(BaseModelOutputWithPast):
    """``BaseModelOutputWithPast``; the cache is readable as ``.cache`` on every supported transformers version."""

    if CACHE_FIELD != "cache":
        cache = property(lambda self: self.past_key_values, doc="The NaLaCache (stored as ``past_key_values``).")


@dataclass
class NaLaCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast``; the cache is readable as ``.cache`` on every supported transformers version."""

    if CACHE_FIELD != "cache":
        cache = property(lambda self: self.past_key_values, doc="The NaLaCache (stored as ``past_key_values``).")


# Marks the linear layers whose output is added to the residual stream (their init std is scaled down).
RESIDUAL_PROJECTION = "_nala_residual_projection"


class NaLaRMSNorm(nn.Module):
    """RMSNorm over the last dimension, computed in fp32 and returned in the input dtype.

    Args:
        hidden_size (int): normalised width ``C``.
        eps (float): added to the mean square. Default: 1e-6.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., C]`` -> ``[..., C]`` in ``x``'s dtype."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class NaLaMLP(nn.Module):
    """SwiGLU feed-forward: ``down(SiLU(gate(x)) * up(x))``, no biases.

    Args:
        hidden_size (int): width ``C``.
        intermediate_size (int): inner width.
    """

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, C]`` -> ``[B, T, C]``."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class NaLaDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: ``x + mixer(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``.

    A transformers ``GradientCheckpointingLayer``: ``model.gradient_checkpointing_enable()`` recomputes it in the
    backward pass (the hidden states go in positionally, as that class requires).

    Args:
        config (NaLaConfig): the model config.
        layer_idx (int): this layer's index (selects its mixer from ``config.mixer_per_layer``).
    """

    def __init__(self, config: NaLaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mixer_name = config.mixer_per_layer[layer_idx]
        self.attn_norm = NaLaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer: TokenMixer = build_attention(
            self.mixer_name,
            config.hidden_size,
            config.num_attention_heads,
            causal=True,
            layout="1d",
            **config.options_for(self.mixer_name),
        )
        self.mlp_norm = NaLaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = NaLaMLP(config.hidden_size, config.intermediate_size)
        # every mixer built on the shared block ends in out_proj; a mixer without one keeps the plain init
        for projection in (getattr(self.mixer, "out_proj", None), self.mlp.down_proj):
            if isinstance(projection, nn.Linear):
                setattr(projection, RESIDUAL_PROJECTION, True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: MixerState | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, MixerState | None]:
        """``hidden_states [B, T, C]``, ``attention_mask [B, T]`` (1 = real token) -> ``(hidden [B, T, C], state)``.

        ``state`` is this layer's entry of the cache (``None`` at the start); the new one is returned when
        ``use_cache`` (else ``None``).
        """
        mixed = self.mixer(
            self.attn_norm(hidden_states), attention_mask=attention_mask, state=state, use_cache=use_cache
        )
        new_state = None
        if use_cache:
            mixed, new_state = mixed
        hidden_states = hidden_states + mixed
        hidden_states = hidden_states + self.mlp(self.mlp_norm(hidden_states))
        return hidden_states, new_state


class NaLaPreTrainedModel(PreTrainedModel):
    """Weight init and the Hugging Face class attributes shared by :class:`NaLaModel` and :class:`NaLaForCausalLM`."""

    config_class = NaLaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["NaLaDecoderLayer"]
    # The state is a running sum: it cannot be rolled back, so assisted / speculative decoding is refused by generate.
    _is_stateful = True

    @classmethod
    def register_for_auto_class(cls, auto_class: Any = "AutoModel") -> None:
        """No-op: :meth:`save_pretrained` writes its own ``auto_map`` module (``auto_code``), which imports the
        installed package instead of carrying a copy of this source."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``save_pretrained``, plus an ``auto_map`` so that ``AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=True)`` loads the folder in a process that has not imported nalaformer."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_auto_code(save_directory)
        return result

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not create a DynamicCache: the first forward creates the NaLaCache and returns it.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, ``initializer_range``) embeddings and linear layers, except the two projections per block that
        write into the residual stream (the mixer's ``out_proj``, the MLP's ``down_proj``), which get
        std / sqrt(2 * layers) as in GPT-2; norms start at one. transformers calls this on every module, leaves
        first; the mixers' short convolutions and feature-map parameters keep the layers' own initialisation. Only
        ``nn.init`` functions are used, so weights loaded by ``from_pretrained`` are never overwritten."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, RESIDUAL_PROJECTION, False):
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, NaLaRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class NaLaModel(NaLaPreTrainedModel):
    """The decoder stack: token embedding, ``num_hidden_layers`` blocks, final RMSNorm.

    Args:
        config (NaLaConfig): sizes, the mixer of each layer and its options.
    """

    def __init__(self, config: NaLaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(NaLaDecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm = NaLaRMSNorm(config.hidden_size, config.rms_norm_eps)
        # Only softmax layers have a maximum context (their KV cache grows); linear layers have none.
        self.has_bounded_context = any(isinstance(layer.mixer, SoftmaxAttention) for layer in self.layers)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: NaLaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: NaLaCache | None = None,
        cache_position: torch.Tensor | None = None,
    ) -> NaLaModelOutput | tuple:
        """Run the decoder.

        Args:
            input_ids (torch.LongTensor, optional): ``[B, T]`` token ids in ``[0, vocab_size)``, ``T >= 1``; give
                either this or ``inputs_embeds``.
            attention_mask (torch.Tensor, optional): ``[B, T]`` or, with a cache, ``[B, past + T]`` (bool or 0/1
                ints; 1 = real token). Padded tokens never enter any state; left or right padding both work.
                Default: None (all real).
            cache (NaLaCache, optional): the cache a previous call returned; it is read and updated in place.
                Default: None.
            inputs_embeds (torch.Tensor, optional): ``[B, T, C]`` floating embeddings instead of ``input_ids``.
            use_cache (bool, optional): return the updated cache (a new one if none was given). Default: None
                (``config.use_cache`` in eval mode, False in training mode); always True when ``cache`` is given.
            output_attentions (bool, optional): must be falsy: linear attention has no attention matrix.
            output_hidden_states (bool, optional): also return the input of every layer and the final output.
                Default: ``config.output_hidden_states``.
            return_dict (bool, optional): return a :class:`NaLaModelOutput` (else a tuple). Default:
                ``config.return_dict``.
            past_key_values (NaLaCache, optional): the older name of ``cache``; pass one of the two.
            cache_position (torch.Tensor, optional): accepted for the transformers releases whose ``generate`` passes
                it, and ignored: positions come from the attention mask (real tokens counted per row).

        Returns:
            :class:`NaLaModelOutput` with ``last_hidden_state [B, T, C]``, ``cache`` (stored in the field the
            installed transformers defines: ``cache``, or ``past_key_values`` before its rename) and optional
            ``hidden_states``.
        """
        cache = _resolve_cache(cache, past_key_values)
        if output_attentions:
            raise ValueError("output_attentions=True is not supported: linear attention forms no attention matrix")
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else bool(output_hidden_states)
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        use_cache = self._resolve_use_cache(use_cache, cache)

        hidden_states = self._embed(input_ids, inputs_embeds)
        batch, seq_len = hidden_states.shape[:2]
        past = 0
        if cache is not None:
            _check_cache(cache, len(self.layers), batch)
            past = cache.seen_tokens
        mask = _current_mask(attention_mask, batch, seq_len, past)
        if self.has_bounded_context and past + seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"the context would reach {past + seq_len} tokens ({past} cached + {seq_len} new, padding included) "
                f"but this model has softmax layers and max_position_embeddings={self.config.max_position_embeddings}"
            )
        if use_cache and cache is None:
            cache = NaLaCache(len(self.layers))

        all_hidden: tuple[torch.Tensor, ...] = ()
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            state = None if cache is None else cache.states[index]
            # positional hidden states and mask: GradientCheckpointingLayer checkpoints over the positional ones
            hidden_states, new_state = layer(hidden_states, mask, state=state, use_cache=use_cache)
            if use_cache:
                cache.update_layer(index, new_state)
        if cache is not None:
            cache.seen_tokens = past + seq_len
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)

        output = NaLaModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden if output_hidden_states else None,
            **{CACHE_FIELD: cache if use_cache else None},
        )
        return output if return_dict else output.to_tuple()

    def _resolve_use_cache(self, use_cache: bool | None, cache: NaLaCache | None) -> bool:
        """Whether this call returns a cache: ``use_cache``, by default ``config.use_cache`` in eval mode; always
        when a cache is passed; never while gradient checkpointing trains."""
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        use_cache = bool(use_cache) or cache is not None
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # a recomputed layer would write its state twice; as transformers' models do, training drops the cache
            if cache is not None:
                raise ValueError(
                    "a cache cannot be carried through gradient checkpointing in training mode; pass cache=None, or "
                    "call model.eval() / model.gradient_checkpointing_disable()"
                )
            # stacklevel 3: the caller of forward, as when the warning was raised in forward itself
            warnings.warn(
                "use_cache=True is incompatible with gradient checkpointing; using use_cache=False", stacklevel=3
            )
            use_cache = False
        return use_cache

    def _embed(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids [B, T] and inputs_embeds [B, T, C]")
        if inputs_embeds is not None:
            if not isinstance(inputs_embeds, torch.Tensor) or not inputs_embeds.is_floating_point():
                raise TypeError(f"inputs_embeds must be a floating-point tensor, got {_describe(inputs_embeds)}")
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must have shape [B, T, C={self.config.hidden_size}], got "
                    f"{tuple(inputs_embeds.shape)}"
                )
            if inputs_embeds.shape[1] == 0:
                raise ValueError("inputs_embeds holds no token (T = 0): give at least one token")
            return inputs_embeds
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
            raise TypeError(f"input_ids must be an integer tensor [B, T], got {_describe(input_ids)}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [B, T], got {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError(f"input_ids holds no token (an empty prompt, shape {tuple(input_ids.shape)})")
        # a value check: skipped while torch.export / torch.compile / torch.fx capture the graph (it would be
        # data-dependent control flow); the embedding lookup itself still fails on an out-of-range id
        if not is_graph_capture():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"input_ids contains token id {bad}, outside the vocabulary [0, {self.config.vocab_size})"
                )
        return self.embed_tokens(input_ids)


class NaLaForCausalLM(NaLaPreTrainedModel, GenerationMixin):
    """:class:`NaLaModel` with a language-modelling head (tied to the embedding when ``config.tie_word_embeddings``).

    ``generate`` works with greedy search, sampling and beam search (the cache reorders rows with
    ``MixerState.index_select``); assisted decoding is refused because a state cannot be rolled back.

    Args:
        config (NaLaConfig): the model config.
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: NaLaConfig) -> None:
        super().__init__(config)
        self.model = NaLaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def generate(self, inputs: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        """``GenerationMixin.generate``, refusing an empty prompt ``[B, 0]`` with a clear error first (some
        transformers releases fail on it with an IndexError). With no prompt at all it starts from
        ``bos_token_id``, as transformers does."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and prompt.shape[1] == 0:
            raise ValueError(f"input_ids holds no token (an empty prompt, shape {tuple(prompt.shape)})")
        return super().generate(inputs, *args, **kwargs)

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: NaLaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: NaLaCache | None = None,
        cache_position: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> NaLaCausalLMOutput | tuple:
        """Logits (and the loss when ``labels`` are given).

        Args:
            input_ids, attention_mask, cache, inputs_embeds, use_cache, output_attentions, output_hidden_states,
            return_dict, past_key_values, cache_position: see :meth:`NaLaModel.forward`.
            labels (torch.LongTensor, optional): ``[B, T]`` targets aligned with ``input_ids`` (shifted inside:
                position ``t`` predicts ``labels[t + 1]``); -100 is ignored. Default: None.
            logits_to_keep (int): compute logits for the last ``n`` positions only (0 = all). Default: 0.
            **kwargs: the loss keywords transformers' ``Trainer`` passes (:data:`LOSS_KEYWORDS`):
                ``num_items_in_batch`` (the targets in the whole accumulated batch: the loss is then the summed
                cross-entropy divided by it, so micro-batch losses add up to the token mean), ``shift_labels``
                (targets already shifted, ``[B, T]``, used as given) and ``ignore_index`` (default -100). Any other
                keyword raises ``TypeError``.

        Returns:
            :class:`NaLaCausalLMOutput` with ``logits [B, T or n, vocab_size]``, ``loss`` (cross-entropy over the
            non-ignored targets, fp32: their mean, or their sum over ``num_items_in_batch``) and the cache.
        """
        unknown = sorted(set(kwargs) - set(LOSS_KEYWORDS))
        if unknown:
            raise TypeError(
                f"NaLaForCausalLM.forward got unexpected keyword arguments {unknown}; besides its named arguments it "
                f"takes the loss keywords {list(LOSS_KEYWORDS)}"
            )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=_resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0 (0 = all positions), got {logits_to_keep!r}")
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None or kwargs.get("shift_labels") is not None:
            inputs = input_ids if input_ids is not None else inputs_embeds
            loss = self._loss(logits, labels, inputs, logits_to_keep, **kwargs)
        output = NaLaCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()

    def _loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        inputs: torch.Tensor,
        logits_to_keep: int,
        **loss_kwargs: Any,
    ) -> torch.Tensor:
        if logits_to_keep:
            raise ValueError("labels need the logits of every position; pass logits_to_keep=0 with labels")
        for name in ("labels", "shift_labels"):
            value = labels if name == "labels" else loss_kwargs.get(name)
            if value is not None and (not isinstance(value, torch.Tensor) or value.shape != inputs.shape[:2]):
                raise ValueError(
                    f"{name} must have the shape of the inputs [B, T] = {tuple(inputs.shape[:2])}, got "
                    f"{_describe(value)}"
                )
        # transformers' causal-LM loss (ForCausalLMLoss): fp32 logits, labels shifted inside unless shift_labels are
        # given, summed and divided by num_items_in_batch when the Trainer passes it (gradient accumulation)
        return self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs)


# The keywords NaLaForCausalLM.forward takes besides its named arguments (transformers' loss keywords).
LOSS_KEYWORDS = ("num_items_in_batch", "shift_labels", "ignore_index")


def _resolve_cache(cache: Any, past_key_values: Any) -> NaLaCache | None:
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


def _check_cache(cache: Any, num_layers: int, batch: int) -> None:
    if not isinstance(cache, NaLaCache):
        raise TypeError(
            f"cache must be the NaLaCache a previous call returned (or None), got {type(cache).__name__}; "
            "transformers' DynamicCache / StaticCache cannot hold linear-attention states"
        )
    if len(cache) != num_layers:
        raise ValueError(f"cache has {len(cache)} layers but the model has {num_layers}")
    if cache.batch_size not in (-1, batch):
        raise ValueError(f"cache holds {cache.batch_size} rows but the inputs have batch size {batch}")


def _current_mask(attention_mask: Any, batch: int, seq_len: int, past: int) -> torch.Tensor | None:
    """The ``[B, T]`` bool mask of the new tokens (``None`` when all are real), from a ``[B, T]`` or
    ``[B, past + T]`` mask."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor [B, T], got {_describe(attention_mask)}")
    allowed = (seq_len,) if past == 0 else (seq_len, past + seq_len)
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] not in allowed:
        expected = " or ".join(f"[{batch}, {n}]" for n in allowed)
        raise ValueError(
            f"attention_mask must have shape {expected} ({past} cached + {seq_len} new tokens), "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool:
        if attention_mask.is_floating_point() or attention_mask.is_complex():
            raise TypeError(f"attention_mask must be bool or integer 0/1, got dtype {attention_mask.dtype}")
        if not is_graph_capture() and bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    mask = attention_mask[:, -seq_len:].bool()
    if is_graph_capture():
        # a captured graph keeps the mask (same result: an all-ones mask masks nothing) rather than branch on values
        return mask
    return None if bool(mask.all()) else mask


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
