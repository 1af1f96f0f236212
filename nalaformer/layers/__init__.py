"""Token mixers: NaLa attention for sequences and images, softmax attention and the linear baselines."""

from nalaformer.layers.base import MixerState, TokenMixer
from nalaformer.layers.block import AttentionBlock
from nalaformer.layers.delta import DeltaRuleAttention, DeltaRuleState, SiluL2FeatureMap
from nalaformer.layers.feature_maps import (
    CosFormerFeatureMap,
    EluFeatureMap,
    FeatureMap,
    FocusedFeatureMap,
    HedgehogFeatureMap,
    NaLaFeatureMap,
    PolarityFeatureMap,
    ReluFeatureMap,
)
from nalaformer.layers.linear import LinearAttention, NaLaAttention, NaLaAttention2d
from nalaformer.layers.registry import (
    AttentionSpec,
    attention_spec,
    build_attention,
    linear_builder,
    list_attentions,
    mixer_names,
    register_attention,
)
from nalaformer.layers.short_conv import ShortConvolution
from nalaformer.layers.softmax import KVCache, SoftmaxAttention

__all__ = [
    "AttentionBlock",
    "AttentionSpec",
    "CosFormerFeatureMap",
    "DeltaRuleAttention",
    "DeltaRuleState",
    "EluFeatureMap",
    "FeatureMap",
    "FocusedFeatureMap",
    "HedgehogFeatureMap",
    "KVCache",
    "LinearAttention",
    "MixerState",
    "NaLaAttention",
    "NaLaAttention2d",
    "NaLaFeatureMap",
    "PolarityFeatureMap",
    "ReluFeatureMap",
    "ShortConvolution",
    "SiluL2FeatureMap",
    "SoftmaxAttention",
    "TokenMixer",
    "attention_spec",
    "build_attention",
    "linear_builder",
    "list_attentions",
    "mixer_names",
    "register_attention",
]
