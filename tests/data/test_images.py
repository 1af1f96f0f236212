"""Image datasets: idx / CIFAR-10 / image-folder readers on tiny files written here, the embedded MNIST-5k and
digits, deterministic splits, normalisation and seeded augmentation against plain references."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nalaformer.data import (
    ImageDataset,
    ImageTransform,
    build_image_datasets,
    load_cifar10,
    load_idx_directory,
    load_image_folder,
    load_image_source,
    read_idx,
    split_indices,
)
from nalaformer.data.image_sources import FASHION_MNIST_DEBIAN_DIR, ImageSplit


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: two zero bytes, element type 0x08, ndim, big-endian uint32 sizes, then the bytes."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def tiny_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["plain", "gzip"])
@pytest.mark.parametrize("shape", [(7,), (5, 3, 4)], ids=["labels", "images"])
def test_read_idx_round_trips(tmp_path, suffix, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / f"file-idx{len(shape)}-ubyte{suffix}"
    write_idx(path, array)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, tiny_images(4, 3, 3))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)
    path.write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match="idx magic number"):
        read_idx(path)


def _idx_directory(root: Path, *, test: bool = True) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    images, labels = tiny_images(12, 5, 6), np.arange(12) % 4
    write_idx(root / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    if test:
        write_idx(root / "t10k-images-idx3-ubyte", images[:3])
        write_idx(root / "t10k-labels-idx1-ubyte", labels[:3])
    return images, labels


def test_idx_directory_gives_train_and_test_splits(tmp_path):
    images, labels = _idx_directory(tmp_path / "idx")
    source = load_idx_directory(tmp_path / "idx", name="mine")
    assert source.image_size == (5, 6) and source.channels == 1 and source.classes == ["0", "1", "2", "3"]
    assert torch.equal(source.train.images[:, 0], torch.from_numpy(images))
    assert torch.equal(source.train.labels, torch.from_numpy(labels))
    assert len(source.test) == 3
    assert load_idx_directory(tmp_path / "idx").classes[:2] == ["T-shirt/top", "Trouser"]


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as info:
        load_idx_directory(tmp_path / "absent")
    assert "absent" in str(info.value) and "--data.root" in str(info.value)


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    source = load_idx_directory()
    assert (len(source.train), len(source.test), source.image_size) == (60_000, 10_000, (28, 28))
    assert torch.bincount(source.train.labels).tolist() == [6000] * 10


def _cifar_directory(root: Path) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {}
    for name, count in (("data_batch_1", 4), ("data_batch_2", 3), ("test_batch", 2)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        batch = {b"data": data, b"labels": list(range(count)), b"batch_label": name.encode()}
        (root / name).write_bytes(pickle.dumps(batch))
        written[name] = data
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return written


def test_cifar10_python_batches(tmp_path):
    written = _cifar_directory(tmp_path / "cifar-10-batches-py")
    source = load_cifar10(tmp_path)
    expected = np.concatenate([written["data_batch_1"], written["data_batch_2"]]).reshape(-1, 3, 32, 32)
    assert torch.equal(source.train.images, torch.from_numpy(expected))
    assert source.train.labels.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert len(source.test) == 2 and source.classes[:2] == ["c0", "c1"]
    with pytest.raises(FileNotFoundError, match="does not ship offline"):
        load_cifar10(tmp_path / "nothing")


class _Planted:
    """A pickled object that, when unpickled by a plain ``pickle.load``, creates the file ``marker`` (code runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batches_load_with_every_pickle_protocol(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=protocol))
    source = load_cifar10(tmp_path)
    assert torch.equal(source.train.images.flatten(1), torch.from_numpy(data))
    assert source.train.labels.tolist() == [3, 4]


def test_a_tampered_cifar10_batch_is_rejected_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    batch = {b"data": np.zeros((1, 3072), dtype=np.uint8), b"labels": [0], b"extra": _Planted(marker)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"data_batch_1.*names io\.open.*tampered"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def _image_folder(root: Path) -> None:
    from PIL import Image

    for label, (name, shade) in enumerate((("cat", 40), ("dog", 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            size = (8, 6) if i else (4, 4)
            Image.new("RGB", size, (shade, shade + label, shade)).save(root / name / f"{i}.png")


def test_image_folder_decodes_resizes_and_labels_by_sorted_folder(tmp_path):
    _image_folder(tmp_path / "pets")
    source = load_image_folder(tmp_path / "pets", channels=1, image_size=(6, 5))
    assert source.classes == ["cat", "dog"] and source.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    dataset = ImageDataset(source.train, None, ImageTransform((0.0,), (1.0,)), channels=1, image_size=(6, 5))
    image, label = dataset[4]
    assert image.shape == (1, 6, 5) and int(label) == 1
    # Grey conversion of a flat (200, 201, 200) colour stays flat, whatever the resize.
    assert (
        torch.allclose(image, torch.full_like(image, image.flatten()[0])) and abs(float(image[0, 0, 0]) - 0.79) < 0.01
    )
    with pytest.raises(FileNotFoundError, match="no class sub-directories"):
        load_image_folder(tmp_path / "pets" / "cat")


def test_image_folder_with_train_and_test_folders(tmp_path):
    _image_folder(tmp_path / "pets" / "train")
    _image_folder(tmp_path / "pets" / "test")
    datasets = build_image_datasets("folder", tmp_path / "pets", val_fraction=0.5, augment=False)
    assert datasets.classes == ["cat", "dog"] and datasets.image_size == (4, 4) and datasets.channels == 3
    assert (len(datasets.train), len(datasets.val), len(datasets.test)) == (3, 3, 6)
    image, _ = datasets.test[0]
    assert image.shape == (3, 4, 4) and image.dtype == torch.float32


def test_splits_are_deterministic_disjoint_and_complete():
    train, val = split_indices(101, 0.2, seed=4)
    again_train, again_val = split_indices(101, 0.2, seed=4)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 20 and sorted(torch.cat([train, val]).tolist()) == list(range(101))
    assert not torch.equal(split_indices(101, 0.2, seed=5)[1], val)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_indices(10, 1.0, seed=0)


def test_transform_normalises_crops_and_flips_like_the_plain_reference():
    image = torch.from_numpy(tiny_images(3, 5, 7)).reshape(3, 5, 7)
    transform = ImageTransform((0.2, 0.4, 0.6), (0.5, 0.25, 0.125), crop_padding=2, horizontal_flip=True)
    mean, std = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1), torch.tensor([0.5, 0.25, 0.125]).view(3, 1, 1)
    assert torch.allclose(transform(image), (image.float() / 255 - mean) / std)
    for seed in range(6):
        reference_rng = np.random.default_rng(seed)
        top, left = reference_rng.integers(0, 5, size=2)
        expected = F.pad(image, (2, 2, 2, 2))[:, top : top + 5, left : left + 7]
        if reference_rng.random() < 0.5:
            expected = expected.flip(-1)
        assert torch.allclose(transform(image, np.random.default_rng(seed)), (expected.float() / 255 - mean) / std)


def test_augmentation_is_seeded_by_epoch_and_index():
    split = ImageSplit(torch.from_numpy(tiny_images(6, 8, 8))[:, None], torch.arange(6))
    transform = ImageTransform((0.5,), (0.5,), crop_padding=2, horizontal_flip=True)
    dataset = ImageDataset(split, None, transform, channels=1, image_size=(8, 8), augment=True, seed=3)
    plain = ImageDataset(split, None, transform, channels=1, image_size=(8, 8))
    assert all(torch.equal(dataset[(1, i)][0], dataset[(1, i)][0]) for i in range(6))
    assert any(not torch.equal(dataset[(1, i)][0], dataset[(2, i)][0]) for i in range(6))
    assert all(torch.equal(plain[i][0], transform(split.images[i])) for i in range(6))


def test_digits_and_mnist_are_embedded_with_training_statistics():
    digits = build_image_datasets("digits", val_fraction=0.1, seed=0)
    assert (len(digits.train), len(digits.val), digits.test, digits.image_size) == (1617, 180, None, (8, 8))
    pixels = digits.train.split.images[digits.train.indices].double() / 255
    assert digits.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-6)
    assert digits.std[0] == pytest.approx(float(pixels.std()), abs=1e-6)
    mnist = load_image_source("mnist")
    assert tuple(mnist.train.images.shape) == (5000, 1, 28, 28) and mnist.train.images.dtype == torch.uint8
    assert torch.bincount(mnist.train.labels).tolist() == [500] * 10


@pytest.mark.parametrize(
    ("name", "root", "error", "message"),
    [
        pytest.param("imagenet", None, ValueError, "unknown dataset name 'imagenet'", id="unknown"),
        pytest.param("idx", None, ValueError, "needs a directory", id="idx-without-root"),
        pytest.param("folder", "/nonexistent/folder", FileNotFoundError, "not a directory", id="missing-folder"),
    ],
)
def test_bad_dataset_requests_are_explained(name, root, error, message):
    with pytest.raises(error, match=message):
        load_image_source(name, root)
