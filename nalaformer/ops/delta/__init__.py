"""Delta rule (DeltaNet) and gated delta rule (Gated DeltaNet): naive reference, chunked and recurrent forms.

Layout ``[B, T, H, D]``; the state is ``S [B, H, Dk, Dv]`` in fp32. ``delta_rule`` picks the form; the math is in
this folder's README.md.
"""

from nalaformer.ops.delta.chunk import chunk_delta_rule
from nalaformer.ops.delta.dispatch import delta_rule
from nalaformer.ops.delta.naive import naive_recurrent_delta_rule
from nalaformer.ops.delta.recurrent import recurrent_delta_rule

__all__ = ["chunk_delta_rule", "delta_rule", "naive_recurrent_delta_rule", "recurrent_delta_rule"]
