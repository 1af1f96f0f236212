"""Token mixers from the registry: a 2-D NaLa mixer on an image, a causal one decoding with a state."""

import torch

from nalaformer.layers import build_attention, list_attentions

print(list_attentions())  # every registered mixer
mixer = build_attention("nala", dim=256, num_heads=4, layout="2d")  # images: [B, C, H, W] or tokens + size
y = mixer(torch.randn(8, 256, 14, 20))

lm_mixer = build_attention("nala", dim=256, num_heads=4, causal=True)  # sequences with a decoding state
y, state = lm_mixer(torch.randn(2, 16, 256), use_cache=True)
y_next, state = lm_mixer(torch.randn(2, 1, 256), state=state, use_cache=True)
