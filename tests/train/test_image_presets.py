"""Image presets (MNIST-5k quick, full Fashion-MNIST) and the per-mixer comparison, on tiny idx files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from nalaformer.train.config import to_dict
from nalaformer.train.recipes import image, image_fashion, load_recipe
from nalaformer.train.recipes.image_presets import PRESETS, compare_mixers, main, preset_config


def write_idx(path: Path, array: np.ndarray) -> None:
    """An MNIST-format idx file (unsigned bytes, big-endian sizes), gzipped when the name ends in .gz."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


@pytest.fixture
def tiny_fashion(tmp_path: Path) -> Path:
    """40 training and 10 test 28×28 images of 10 classes (a class-dependent bright square on noise)."""
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 10
        pictures = rng.integers(0, 60, size=(count, 28, 28))
        for picture, label in zip(pictures, labels):
            picture[2 * label : 2 * label + 8, 4:12] = 255
        return pictures, labels

    train_images, train_labels = make(40)
    test_images, test_labels = make(10)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_labels)
    return tmp_path


def test_presets_and_their_recipes() -> None:
    # `nalaformer train image` defaults are the quick MNIST preset, and image-fashion's are the Fashion preset
    assert to_dict(preset_config("mnist-quick")) == to_dict(image.default_config())
    fashion = preset_config("fashion-mnist")
    assert to_dict(image_fashion.default_config()) == to_dict(fashion)
    assert load_recipe("image-fashion") is image_fashion
    assert (fashion.data.name, fashion.train.steps, fashion.train.batch_size) == ("fashion-mnist", 2000, 128)
    assert fashion.model.name == "nalaformer_nano" and fashion.model.mixer == ""
    changed = preset_config("fashion-mnist", mixer="elu", data={"root": "/somewhere"}, steps=7, warmup_steps=2)
    assert (changed.model.mixer, changed.data.root, changed.train.steps) == ("elu", "/somewhere", 7)
    assert set(PRESETS) == {"mnist-quick", "fashion-mnist"}
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("cifar-huge")
    with pytest.raises(ValueError, match="steps"):
        preset_config("mnist-quick", steps=0)


def test_compare_mixers_trains_each_mixer_alike(tiny_fashion: Path) -> None:
    settings = dict(steps=2, batch_size=8, warmup_steps=1, eval_every=0, checkpoint_every=0, progress=False)
    settings.update(device="cpu", seed=3)
    data = {"root": str(tiny_fashion), "val_fraction": 0.1}
    rows = compare_mixers("fashion-mnist", ["nala", "softmax", "nala"], data=data, **settings)
    assert [row["mixer"] for row in rows] == ["nala", "softmax", "nala"]
    assert all(row["steps"] == 2 for row in rows)
    # every mixer sits in the same block: same parameter count
    assert rows[0]["params"] == rows[1]["params"]
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0
        assert np.isfinite(row["test_loss"]) and np.isfinite(row["train_loss"])
    # same seed, data order and settings: a mixer trained twice gives the same result
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy"):
        assert rows[0][key] == rows[2][key], key
    assert rows[0]["test_loss"] != rows[1]["test_loss"]


def test_command_line_writes_csv(tiny_fashion: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.csv"
    argv = ["--preset", "fashion-mnist", "--mixers", "elu", "--steps", "1", "--batch-size", "8", "--device", "cpu"]
    assert main([*argv, "--root", str(tiny_fashion), "--csv", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("preset,mixer,params,steps") and lines[1].startswith("fashion-mnist,elu,")
    assert '"mixer": "elu"' in capsys.readouterr().out
