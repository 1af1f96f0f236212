"""Pathfinder generator: deterministic by seed, balanced labels, labels equal to the connectivity of the markers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalaformer.data.pathfinder import (
    MARKER_VALUE,
    PathfinderDataset,
    endpoints_connected,
    pathfinder_example,
)


def test_same_seed_same_images():
    a, b = (
        PathfinderDataset(6, size=16, path_length=6, distractors=0, seed=1),
        PathfinderDataset(6, size=16, path_length=6, distractors=0, seed=1),
    )
    c = PathfinderDataset(6, size=16, path_length=6, distractors=0, seed=2)
    assert torch.equal(a._examples()[0], b._examples()[0]) and torch.equal(a._examples()[1], b._examples()[1])
    assert not torch.equal(a._examples()[0], c._examples()[0])
    pixels, label = a[0]
    assert pixels.shape == (256,) and pixels.dtype == torch.int64 and int(label) in (0, 1)


@pytest.mark.parametrize(("size", "length", "distractors"), [(12, 4, 0), (20, 6, 1), (32, 14, 2)])
def test_label_is_the_connectivity_of_the_two_markers(size, length, distractors):
    labels = []
    for index in range(60):
        image, label, (a, b) = pathfinder_example(
            np.random.default_rng([size, index]), size=size, path_length=length, distractors=distractors
        )
        assert image[a] == MARKER_VALUE and image[b] == MARKER_VALUE and a != b
        assert endpoints_connected(image, a, b) == bool(label)
        labels.append(label)
    assert 0 < sum(labels) < len(labels)


def test_labels_are_balanced():
    labels = PathfinderDataset(400, size=16, path_length=6, distractors=0, seed=0)._examples()[1].float()
    assert abs(float(labels.mean()) - 0.5) < 0.08  # 400 fair draws: 3 standard deviations is 0.075


def test_reference_connectivity_on_hand_drawn_images():
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1, 1:4] = 1  # a dash
    image[1, 5:7] = 1  # the next dash, one pixel gap
    assert endpoints_connected(image, (1, 1), (1, 6))
    image[1, 5:7] = 0
    image[5, 6] = 1  # far away: another curve
    assert not endpoints_connected(image, (1, 1), (5, 6))
    with pytest.raises(ValueError, match="must both be drawn"):
        endpoints_connected(image, (1, 1), (7, 7))


def test_bad_arguments():
    with pytest.raises(ValueError, match="size >= 12"):
        pathfinder_example(np.random.default_rng(0), size=8)
    with pytest.raises(RuntimeError, match="could not place"):
        pathfinder_example(np.random.default_rng(0), size=12, path_length=30, distractors=6)
