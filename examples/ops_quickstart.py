"""NaLa attention as a function: non-causal, causal, RoPE on the numerator, a causal state carried across a split."""

import torch

from nalaformer.ops import nala_attention, rope_angles_1d

B, T, H, D = 2, 1024, 4, 64  # ops use the [B, T, H, D] layout (sequence first)
q, k, v = (torch.randn(B, T, H, D) for _ in range(3))

o = nala_attention(q, k, v)  # non-causal, O(T): the released code's mean form
o = nala_attention(q, k, v, causal=True)  # causal, chunked
o = nala_attention(q, k, v, causal=True, rope=rope_angles_1d(T, D))  # RoPE on the numerator only

# causal state: split a sequence anywhere and resume exactly
o1, state = nala_attention(q[:, :500], k[:, :500], v[:, :500], causal=True, output_final_state=True)
o2 = nala_attention(q[:, 500:], k[:, 500:], v[:, 500:], causal=True, initial_state=state)
print(torch.allclose(torch.cat([o1, o2], dim=1), nala_attention(q, k, v, causal=True), atol=1e-4))
