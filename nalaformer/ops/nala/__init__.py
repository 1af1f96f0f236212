"""Norm-aware linear attention from ``q, k, v`` in one call: the fast path (features, RoPE and attention a block of
tokens at a time; non-causal, causal chunked, a decoding step) and the generic reference route."""

from nalaformer.ops.nala.api import nala_attention, reference_nala_attention

__all__ = ["nala_attention", "reference_nala_attention"]
