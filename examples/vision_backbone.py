"""The NaLaFormer backbone: layouts, dense features of any input size, a features-only model, checkpoint loading."""

import torch

from nalaformer.models import checkpoint_filter_fn, nalaformer_t

model = nalaformer_t()  # released hybrid layout, 1000 classes
linear = nalaformer_t(mixers="nala")  # all-NaLa
mixed = nalaformer_t(mixers=["nala", "elu", "softmax", "softmax"], num_classes=10, drop_path_rate=0.0)
final, feats = model.forward_intermediates(torch.randn(1, 3, 120, 160))  # strides 4/8/16/32, any H, W
backbone = nalaformer_t(features_only=True, out_indices=(1, 2, 3))  # a list of stage outputs
print(backbone.feature_info.channels(), [f.shape for f in backbone(torch.randn(1, 3, 120, 160))])

# checkpoints in the official naming (ZacharyMeng/NaLaFormer) or ours load through checkpoint_filter_fn
torch.save({"model": model.state_dict()}, "checkpoint.pth")
linear.load_state_dict(checkpoint_filter_fn(torch.load("checkpoint.pth", map_location="cpu"), linear))
