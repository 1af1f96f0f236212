"""Pure tensor operators: NaLa and baseline feature maps, RoPE, and every attention form.

Layout ``[B, T, H, D]`` (sequence first). See CONTRIBUTING.md for the contract. One folder per operator, each with
its forms side by side (the reference the tests compare against, and the fast ones):

- ``linear_attn/``: normalised linear attention over precomputed features (``linear_attention``): ``naive``
  (quadratic reference), ``parallel`` (non-causal), ``chunk`` and ``recurrent`` (causal), the ``state`` carried;
- ``nala/``: NaLa straight from ``q, k, v`` (``nala_attention``): ``noncausal`` and ``causal`` token-block forms,
  the decoding step, the shared ``common`` pieces, and ``api`` (with the generic reference route);
- ``delta/``: the delta rule (``delta_rule``): ``naive``, ``chunk``, ``recurrent``;
- beside them: ``feature_maps`` (every method's maps), ``fused_features`` (NaLa's sign-split map in a few passes),
  ``rope``, ``softmax``, ``validation``, ``higher_order``.

The folders are not named after the functions they export, so ``nalaformer.ops.linear_attention`` (a function) never
hides the module that defines it.
"""

from nalaformer.ops.delta import chunk_delta_rule, delta_rule, naive_recurrent_delta_rule, recurrent_delta_rule
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
from nalaformer.ops.linear_attn import LinearAttentionState, linear_attention
from nalaformer.ops.nala import nala_attention
from nalaformer.ops.rope import apply_rope, rope_angles_1d, rope_angles_2d
from nalaformer.ops.softmax import softmax_attention

__all__ = [
    "LinearAttentionState",
    "apply_rope",
    "chunk_delta_rule",
    "cosformer_feature_map",
    "delta_rule",
    "elu_feature_map",
    "focused_feature_map",
    "hedgehog_feature_map",
    "l2_norm",
    "linear_attention",
    "naive_recurrent_delta_rule",
    "nala_attention",
    "nala_exponent",
    "nala_key_map",
    "nala_query_map",
    "polarity_feature_maps",
    "recurrent_delta_rule",
    "relu_feature_map",
    "rope_angles_1d",
    "rope_angles_2d",
    "safe_pow",
    "softmax_attention",
]
