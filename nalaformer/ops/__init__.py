"""Pure tensor operators: NaLa and baseline feature maps, RoPE, and every attention form.

Layout ``[B, T, H, D]`` (sequence first). See CONTRIBUTING.md for the contract.
"""

from nalaformer.ops.feature_maps import (
    cosformer_feature_map,
    elu_feature_map,
    focused_feature_map,
    hedgehog_feature_map,
    l2_norm,
    nala_exponent,
    nala_key_map,
    nala_query_map,
    polarity_feature_maps,
    relu_feature_map,
    safe_pow,
)
from nalaformer.ops.linear_attention import LinearAttentionState, linear_attention
from nalaformer.ops.nala import nala_attention
from nalaformer.ops.rope import apply_rope, rope_angles_1d, rope_angles_2d
from nalaformer.ops.softmax import softmax_attention

__all__ = [
    "LinearAttentionState",
    "apply_rope",
    "cosformer_feature_map",
    "elu_feature_map",
    "focused_feature_map",
    "hedgehog_feature_map",
    "l2_norm",
    "linear_attention",
    "nala_attention",
    "nala_exponent",
    "nala_key_map",
    "nala_query_map",
    "polarity_feature_maps",
    "relu_feature_map",
    "rope_angles_1d",
    "rope_angles_2d",
    "safe_pow",
    "softmax_attention",
]
