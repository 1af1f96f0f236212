"""Query-norm and entropy diagnostics of any model containing nalaformer mixers."""

import torch

from nalaformer.diagnostics import diagnose
from nalaformer.models import nalaformer_nano

model = nalaformer_nano().eval()
images = torch.randn(4, 3, 32, 32)
report = diagnose(model, images, "diag/", max_queries=32, temperatures=(), plots=False)
print(sorted(report))
