"""nalaformer.models: the NaLaFormer vision backbone (timm-style) and the causal language model."""

# Vision backbone (timm-style entrypoints and API).
from nalaformer.models.vision import (
    NaLaFormer,
    checkpoint_filter_fn,
    nalaformer_b,
    nalaformer_l,
    nalaformer_nano,
    nalaformer_s,
    nalaformer_t,
    nalaformer_xt,
)

__all__ = [
    # vision
    "NaLaFormer",
    "checkpoint_filter_fn",
    "nalaformer_b",
    "nalaformer_l",
    "nalaformer_nano",
    "nalaformer_s",
    "nalaformer_t",
    "nalaformer_xt",
]

# Causal language model (Hugging Face API). It needs the `lm` extra (transformers), so it is imported on first use:
# `from nalaformer.models import NaLaForCausalLM` works, and vision users never import transformers.
_LANGUAGE_MODEL_EXPORTS = ("NaLaCache", "NaLaConfig", "NaLaForCausalLM", "NaLaModel")
__all__ += list(_LANGUAGE_MODEL_EXPORTS)


def __getattr__(name: str):
    if name in _LANGUAGE_MODEL_EXPORTS:
        import importlib

        return getattr(importlib.import_module("nalaformer.models.lm"), name)
    raise AttributeError(f"module 'nalaformer.models' has no attribute {name!r}")
