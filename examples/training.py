"""One training engine for any model: a loss function, a dataset, a TrainConfig."""

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nalaformer.models import nalaformer_nano
from nalaformer.train import TrainConfig, train

images, labels = torch.randn(96, 3, 16, 16), torch.randint(0, 10, (96,))  # use real data here
train_set, val_set = TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])
model = nalaformer_nano()


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"accuracy": (logits.argmax(-1) == y).float().mean()}


config = TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=2, run_dir="runs/mine", progress=False)
result = train(model, train_set, loss_fn, config, val_data=val_set)
print(result.metrics["val_accuracy"])  # also result.model, result.ema_model, result.history
