"""Pathfinder, the long-range spatial task of Long Range Arena, generated: are the two marked dots joined by a path?

Each grey image (``size x size``, LRA: 32x32, read as a sequence of 1,024 pixels) holds several dashed curves. Two
curve ends carry an endpoint marker (a plus of brighter pixels). In a positive example both markers sit on the two
ends of one curve; in a negative example they sit on two different curves. The other curves are distractors. Curves
are random walks with a drifting heading, drawn dashed (two pixels on, one off), and kept apart (markers included),
so that joining pixels closer than :data:`LINK` (Chebyshev distance 2, which bridges a dash gap and never bridges two
curves) recovers exactly one connected component per curve: the label can be checked from the
pixels alone (:func:`endpoints_connected`).

Pixel values: 0 background, :data:`PATH_VALUE` curve, :data:`MARKER_VALUE` marker; as tokens, the pixel value itself
(vocabulary 256), like the pixel-level image tasks.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch.utils.data import Dataset

PATH_VALUE = 160
MARKER_VALUE = 255
LINK = 2  # Chebyshev distance that joins the dashes of one curve
# empty pixels kept around every curve and its markers: a later curve's pixels stay more than LINK + 1 away, so even
# its own markers' arms (one pixel out) stay farther than LINK from every earlier curve
_CLEARANCE = LINK + 1
_PLUS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def _walk(rng: np.random.Generator, blocked: np.ndarray, length: int, turn: float) -> list[tuple[int, int]] | None:
    """A curve of ``length`` 8-connected pixels avoiding ``blocked`` and its own recent pixels, or None."""
    size = blocked.shape[0]
    free = np.argwhere(~blocked)
    if len(free) == 0:
        return None
    y, x = (float(v) for v in free[int(rng.integers(len(free)))])
    heading = rng.uniform(0, 2 * np.pi)
    pixels = [(int(y), int(x))]
    for _ in range(4 * length):
        heading += rng.normal(0.0, turn)
        y, x = y + np.sin(heading), x + np.cos(heading)
        pixel = (round(y), round(x))
        if pixel == pixels[-1]:
            continue
        if not (0 <= pixel[0] < size and 0 <= pixel[1] < size) or blocked[pixel] or pixel in pixels:
            return None
        pixels.append(pixel)
        if len(pixels) == length:
            return pixels
    return None


def _footprint(pixels: list[tuple[int, int]], markers: list[tuple[int, int]], size: int) -> np.ndarray:
    """Every pixel within ``_CLEARANCE`` of the curve or its markers (where no other curve may go)."""
    mask = np.zeros((size, size), dtype=bool)
    points = list(pixels) + [(y + dy, x + dx) for y, x in markers for dy, dx in _PLUS]
    for y, x in points:
        mask[max(0, y - _CLEARANCE) : y + _CLEARANCE + 1, max(0, x - _CLEARANCE) : x + _CLEARANCE + 1] = True
    return mask


def pathfinder_example(
    rng: np.random.Generator, *, size: int = 32, path_length: int = 14, distractors: int = 1, turn: float = 0.35
) -> tuple[np.ndarray, int, tuple[tuple[int, int], tuple[int, int]]]:
    """One Pathfinder image drawn with ``rng``.

    Args:
        rng: the numpy generator that decides everything about this image.
        size: image side in pixels (>= 12).
        path_length: pixels per curve (>= 4) before dashing.
        distractors: unmarked curves beside the one or two marked ones (>= 0).
        turn: standard deviation of the heading change per pixel (radians); larger bends the curves more.

    Returns:
        ``(image uint8 [size, size], label, (marker_a, marker_b))``: label 1 when the markers are on one curve.
    """
    if size < 12 or path_length < 4 or distractors < 0:
        raise ValueError(
            f"pathfinder: need size >= 12, path_length >= 4 and distractors >= 0, got {size}, {path_length} and "
            f"{distractors}"
        )
    label = int(rng.integers(2))
    for _ in range(50):  # an image too crowded for the next curve restarts from scratch
        blocked = np.zeros((size, size), dtype=bool)
        blocked[[0, -1], :] = blocked[:, [0, -1]] = True  # room for the markers' arms
        curves: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]] = []
        marked = [[0, -1], []] if label == 1 else [[0], [0]]
        for index in range(2 + distractors):
            pixels = None
            for _ in range(30):  # a walk that runs into something is redrawn from a new start
                pixels = _walk(rng, blocked, path_length, turn)
                if pixels is not None:
                    break
            if pixels is None:
                break
            markers = [pixels[i] for i in (marked[index] if index < 2 else [])]
            curves.append((pixels, markers))
            blocked |= _footprint(pixels, markers, size)
        else:
            return _draw(curves, size), label, _marker_pair(curves)
    raise RuntimeError(
        f"pathfinder: could not place {2 + distractors} curves of {path_length} pixels in {size}x{size} after 50 "
        "tries; use fewer distractors or shorter curves"
    )


def _draw(curves: list, size: int) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.uint8)
    for pixels, markers in curves:
        for position, pixel in enumerate(pixels):
            # dashes: two pixels on, one off; the two ends always drawn
            if position % 3 != 2 or position == len(pixels) - 1:
                image[pixel] = PATH_VALUE
        for y, x in markers:
            for dy, dx in _PLUS:
                image[y + dy, x + dx] = MARKER_VALUE
    return image


def _marker_pair(curves: list) -> tuple[tuple[int, int], tuple[int, int]]:
    markers = [m for _, ms in curves for m in ms]
    return markers[0], markers[1]


def endpoints_connected(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], link: int = LINK) -> bool:
    """Whether pixels ``a`` and ``b`` are joined through non-zero pixels, each step at most ``link`` apart
    (Chebyshev distance), which bridges the dash gaps. A reference that reads only the image."""
    if not image[a] or not image[b]:
        raise ValueError(f"endpoints_connected: pixels {a} and {b} must both be drawn (non-zero)")
    size_y, size_x = image.shape
    seen = {a}
    queue = deque([a])
    while queue:
        y, x = queue.popleft()
        if (y, x) == b:
            return True
        for ny in range(max(0, y - link), min(size_y, y + link + 1)):
            for nx in range(max(0, x - link), min(size_x, x + link + 1)):
                if image[ny, nx] and (ny, nx) not in seen:
                    seen.add((ny, nx))
                    queue.append((ny, nx))
    return False


class PathfinderDataset(Dataset):
    """``num_examples`` Pathfinder images as pixel sequences; example ``i`` depends only on ``(seed, i)``.
    Yields ``(pixels int64 [size * size] in 0..255, label int64 [])``; the images are drawn once, on first use.

    Args:
        num_examples: dataset size (> 0).
        size, path_length, distractors, turn: see :func:`pathfinder_example`.
        seed: seed of the whole dataset; use different seeds for training and validation sets.
    """

    vocab_size = 256
    num_classes = 2

    def __init__(
        self,
        num_examples: int,
        *,
        size: int = 32,
        path_length: int = 14,
        distractors: int = 1,
        turn: float = 0.35,
        seed: int = 0,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"PathfinderDataset: num_examples must be >= 1, got {num_examples}")
        self.num_examples = num_examples
        self.options = {"size": size, "path_length": path_length, "distractors": distractors, "turn": turn}
        pathfinder_example(np.random.default_rng(0), **self.options)  # validates the options now
        self.seed = seed
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.num_examples

    def _examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            images, labels = [], []
            for index in range(self.num_examples):
                image, label, _ = pathfinder_example(np.random.default_rng([self.seed, index]), **self.options)
                images.append(image.reshape(-1))
                labels.append(label)
            self._cache = torch.from_numpy(np.stack(images).astype(np.int64)), torch.tensor(labels)
        return self._cache

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"PathfinderDataset: index {index} out of range for {self.num_examples} examples")
        pixels, labels = self._examples()
        return pixels[index], labels[index]
