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
