"""Normalised linear attention over precomputed features: non-causal, causal chunked / recurrent / naive."""

from nalaformer.ops.linear_attn.api import linear_attention
from nalaformer.ops.linear_attn.state import LinearAttentionState

__all__ = ["LinearAttentionState", "linear_attention"]
