"""Tiny stand-in models for the engine and recipe tests (the recipes build them by ``module:callable`` name)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class TinyConvNet(nn.Module):
    """Conv → BatchNorm → GELU → pool → dropout → linear; for 8×8 to 32×32 images."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.GELU(), nn.AdaptiveAvgPool2d(2)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images).flatten(1)))


class TinyCausalLM(nn.Module):
    """Embedding → causal depthwise conv (kernel 4) → GELU → dropout → tied head; takes NaLaConfig-style keywords."""

    def __init__(self, vocab_size: int, hidden_size: int = 16, dropout: float = 0.1, **unused) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.conv = nn.Conv1d(hidden_size, hidden_size, 4, groups=hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)
        x = self.conv(nn.functional.pad(x, (3, 0))).transpose(1, 2)
        return self.head(self.dropout(self.norm(nn.functional.gelu(x))))


def mlp(in_features: int = 6, hidden: int = 12, out_features: int = 3, dropout: float = 0.2, seed: int = 0):
    """A seeded two-layer MLP with dropout (dropout makes exact-resume depend on the restored RNG)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
        nn.Linear(hidden, out_features)
    )  # fmt: skip


def toy_data(n: int = 48, seed: int = 0) -> TensorDataset:
    """``n`` samples of 6 features with 3 linearly separable classes."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x @ torch.randn(6, 3, generator=generator)).argmax(-1)
    return TensorDataset(x, y)


class NoisyToyData(Dataset):
    """Toy data whose training noise is seeded by (epoch, index), like the image datasets' augmentation."""

    accepts_epoch_index = True

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        x, y = self.base[index]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 * epoch + index))
        return x + 0.1 * noise, y


def classification_loss(model, batch):
    """Cross-entropy and accuracy of ``(features, labels)`` batches."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"accuracy": (logits.argmax(-1) == y).float().mean()}
