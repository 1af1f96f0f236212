"""Configuration of the NaLa causal language model (a Hugging Face ``PretrainedConfig``) and its named presets."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from transformers import PretrainedConfig

from nalaformer.layers import list_attentions, mixer_names
from nalaformer.layers.delta import NALA_DELTA_LAM, NALA_DELTA_LAM_BEFORE, NALA_DELTA_MIXERS

# Named sizes. "tiny" is for unit tests; "small" for CPU experiments (11.5 M parameters without the embedding);
# "340m" follows the flash-linear-attention 340M lineage the paper's LM table uses (hidden 1024, 24 layers, 16 heads of
# 64, SwiGLU 2816, a 32k vocabulary, 2048 context).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 96,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
    },
    "small": {
        "vocab_size": 50257,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
        "intermediate_size": 1024,
        "max_position_embeddings": 1024,
    },
    "340m": {
        "vocab_size": 32000,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 2816,
        "max_position_embeddings": 2048,
    },
}


# The versions of the mixers' defaults (``NaLaConfig.mixer_defaults``): the options a config fills in for the mixers
# it uses when ``mixer_options`` leaves them unset. 1: before NaLa+DN / NaLa+GDN defaulted to lambda = 1 (they had the
# released lambda = 3); 2: now. A config saved without ``mixer_defaults`` (written before it existed) is version 1.
MIXER_DEFAULTS = 2
_DEFAULT_OPTIONS: dict[int, dict[str, dict[str, Any]]] = {
    1: {name: {"lam": NALA_DELTA_LAM_BEFORE} for name in NALA_DELTA_MIXERS},
    2: {name: {"lam": NALA_DELTA_LAM} for name in NALA_DELTA_MIXERS},
}


def _swiglu_width(hidden_size: int) -> int:
    """SwiGLU width ``8/3 * C`` rounded up to a multiple of 256 (64 for small widths), as LLaMA-style models do."""
    multiple = 256 if hidden_size >= 512 else 64
    width = int(8 * hidden_size / 3)
    return multiple * ((width + multiple - 1) // multiple)


class NaLaConfig(PretrainedConfig):
    """Configuration of :class:`NaLaModel` / :class:`NaLaForCausalLM`.

    Every layer is ``x + mixer(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``; the token mixer comes from the
    ``nalaformer.layers`` registry, so any registered causal mixer (NaLa, softmax, the linear baselines, the delta-rule
    family) can be used, alone or in a hybrid pattern.

    Args:
        vocab_size (int): token vocabulary. Default: 32000.
        hidden_size (int): model width ``C``. Default: 1024.
        num_hidden_layers (int): number of blocks. Default: 24.
        num_attention_heads (int): heads per mixer (must divide ``hidden_size``). Default: 16.
        intermediate_size (int, optional): SwiGLU width. Default: None (``8/3 * C`` rounded up to 64 or 256).
        mixer (str): the registered mixer of every layer. Default: ``"nala"``.
        hybrid_every (int): if ``k > 0``, every ``k``-th layer (layers ``k-1, 2k-1, ...``) uses ``hybrid_mixer``
            instead. Default: 0 (off).
        hybrid_mixer (str): the mixer of the hybrid layers. Default: ``"softmax"``.
        layer_mixers (list[str], optional): one mixer name per layer; overrides ``mixer`` / ``hybrid_every``.
            Default: None.
        mixer_options (dict, optional): ``build_attention`` keyword options per mixer name, e.g.
            ``{"nala": {"lam": 3.0}, "softmax": {"rope": False}}``; JSON-serialisable. Default: None (the mixers'
            defaults). The config records the options that ``mixer_defaults`` fills in (NaLa+DN / NaLa+GDN's
            ``lam``) for the mixers it uses, so a saved config rebuilds the same mixers whatever the defaults become.
        mixer_defaults (int): which defaults fill the options ``mixer_options`` leaves unset: 2, the current ones
            (NaLa+DN / NaLa+GDN at ``lam = 1``), or 1, those before (``lam = 3``). :meth:`from_dict` and
            ``from_pretrained`` read a saved config without this field (written before it existed) as 1, so a model
            trained then keeps its map. Default: 2 (:data:`MIXER_DEFAULTS`).
        max_position_embeddings (int): the longest context (prompt plus generated tokens, padding included) that
            softmax layers accept; linear layers have no limit. Default: 2048.
        rms_norm_eps (float): RMSNorm epsilon. Default: 1e-6.
        initializer_range (float): std of the normal init of embeddings and projections; the projections that
            write into the residual stream use ``initializer_range / sqrt(2 * num_hidden_layers)``. Default: 0.02.
        use_cache (bool): return a :class:`NaLaCache` by default. Default: True.
        tie_word_embeddings (bool): share the input embedding with the output head. Default: True.
        pad_token_id, bos_token_id, eos_token_id (int, optional): special tokens. Default: None.
        **kwargs: passed to ``PretrainedConfig``.
    """

    model_type = "nala"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache", "past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        intermediate_size: int | None = None,
        mixer: str = "nala",
        hybrid_every: int = 0,
        hybrid_mixer: str = "softmax",
        layer_mixers: list[str] | None = None,
        mixer_options: dict[str, Any] | None = None,
        mixer_defaults: int = MIXER_DEFAULTS,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        intermediate_size = _checked_sizes(
            vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings
        )
        layer_mixers, mixer_options = _checked_mixers(
            mixer, hybrid_every, hybrid_mixer, layer_mixers, mixer_options, num_hidden_layers
        )
        if isinstance(mixer_defaults, bool) or mixer_defaults not in _DEFAULT_OPTIONS:
            raise ValueError(
                f"mixer_defaults must be one of {sorted(_DEFAULT_OPTIONS)} (1: NaLa+DN / NaLa+GDN at lam = 3, as "
                f"before lam = 1 became their default; 2: the current defaults), got {mixer_defaults!r}"
            )
        for name, value in (("rms_norm_eps", rms_norm_eps), ("initializer_range", initializer_range)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.mixer = mixer
        self.hybrid_every = hybrid_every
        self.hybrid_mixer = hybrid_mixer
        self.layer_mixers = layer_mixers
        self.mixer_defaults = mixer_defaults
        self.mixer_options = mixer_options
        # record the filled-in options of the mixers used (and of any named in mixer_options)
        for name in (set(self.mixer_per_layer) | set(mixer_options)) & set(_DEFAULT_OPTIONS[mixer_defaults]):
            mixer_options[name] = self.options_for(name)
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = float(rms_norm_eps)
        self.initializer_range = float(initializer_range)
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def mixer_per_layer(self) -> list[str]:
        """The mixer name of each layer, after ``layer_mixers`` / ``hybrid_every`` are applied."""
        if self.layer_mixers is not None:
            return list(self.layer_mixers)
        every = self.hybrid_every
        return [
            self.hybrid_mixer if every and (index + 1) % every == 0 else self.mixer
            for index in range(self.num_hidden_layers)
        ]

    def options_for(self, name: str) -> dict[str, Any]:
        """The ``build_attention`` options of mixer ``name``: ``mixer_options[name]`` over the defaults of
        ``mixer_defaults``."""
        defaults = _DEFAULT_OPTIONS[getattr(self, "mixer_defaults", MIXER_DEFAULTS)].get(name, {})
        return {**defaults, **self.mixer_options.get(name, {})}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> NaLaConfig:
        """A config from a saved dict (``from_pretrained`` reads ``config.json`` through this); a dict without
        ``mixer_defaults`` was saved before the field existed and is read with the defaults of then (1)."""
        config_dict = dict(config_dict)
        if "mixer_defaults" in kwargs:
            config_dict["mixer_defaults"] = kwargs.pop("mixer_defaults")
        config_dict.setdefault("mixer_defaults", 1)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class: Any = "AutoConfig") -> None:
        """No-op: transformers would copy this module's source into every saved folder; the model's
        ``save_pretrained`` writes an ``auto_map`` module that imports the installed package instead."""

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> NaLaConfig:
        """A config from a named size (``"tiny"``, ``"small"``, ``"340m"``), with any field overridden.

        Args:
            name (str): a key of :data:`PRESETS`.
            **overrides: config fields replacing the preset's (e.g. ``vocab_size=65``, ``mixer="softmax"``).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})


def _checked_sizes(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int | None,
    max_position_embeddings: int,
) -> int:
    """Check the sizes; return the SwiGLU width (``intermediate_size``, or the default for ``hidden_size``)."""
    for name, value in (
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
        ("max_position_embeddings", max_position_embeddings),
    ):
        _check_positive_int(name, value)
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} must divide hidden_size={hidden_size} "
            f"(head_dim = hidden_size / num_attention_heads)"
        )
    if intermediate_size is None:
        intermediate_size = _swiglu_width(hidden_size)
    _check_positive_int("intermediate_size", intermediate_size)
    return intermediate_size


def _checked_mixers(
    mixer: str,
    hybrid_every: int,
    hybrid_mixer: str,
    layer_mixers: list[str] | None,
    mixer_options: dict[str, Any] | None,
    num_hidden_layers: int,
) -> tuple[list[str] | None, dict[str, dict[str, Any]]]:
    """Check the mixer arguments; return ``layer_mixers`` resolved and a copy of ``mixer_options``."""
    if not isinstance(hybrid_every, int) or hybrid_every < 0:
        raise ValueError(f"hybrid_every must be an int >= 0 (0 = no hybrid layers), got {hybrid_every!r}")
    if mixer_options is not None and not isinstance(mixer_options, dict):
        raise TypeError(f"mixer_options must be a dict (mixer name -> options), got {type(mixer_options).__name__}")
    mixer_options = dict(mixer_options or {})
    for key, options in mixer_options.items():
        if not isinstance(options, dict):
            raise TypeError(
                f"mixer_options must map a mixer name to a dict of build_attention options, got {key!r}: {options!r}"
            )
    if layer_mixers is not None:
        layer_mixers = mixer_names(layer_mixers, num_hidden_layers, "layer_mixers", unit="layer")
    known = list_attentions()
    for name, value in [("mixer", mixer), ("hybrid_mixer", hybrid_mixer)] + [
        (f"mixer_options key {key!r}", key) for key in mixer_options
    ]:
        if value not in known:
            raise ValueError(f"{name}={value!r} is not a registered mixer; known: {', '.join(known)}")
    return layer_mixers, {key: dict(options) for key, options in mixer_options.items()}


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
