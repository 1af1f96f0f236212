"""Checkpoints: round trip, tied weights, keep-last-K, atomic folders, corrupt and truncated files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from nalaformer.train import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from nalaformer.train.checkpoint import capture_rng_state, restore_rng_state
from tests.train.standins import TinyCausalLM, mlp


def _save(directory, step, model, keep=None):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 6)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": [capture_rng_state()], "data_position": {"epoch": 1}}
    return save_checkpoint(directory, step, model=model, state=state, ema=model, keep=keep)


def _draws():
    return torch.rand(3), np.random.rand(3), random.random()


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = mlp(seed=1)
    path = _save(tmp_path, 7, model)
    # Nothing draws random numbers between the capture inside _save and here.
    expected = _draws()
    assert path.name == "step_00000007" and verify_checkpoint(path)["step"] == 7
    restored = mlp(seed=2)
    load_weights(path, restored)
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    state = load_state(path)
    assert state["step"] == 7 and state["data_position"] == {"epoch": 1}
    optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    optimizer.load_state_dict(state["optimizer"])
    assert int(optimizer.state_dict()["state"][0]["step"]) == 1
    restore_rng_state(state["rng"][0])
    torch_draw, numpy_draw, python_draw = _draws()
    assert torch.equal(torch_draw, expected[0]) and np.array_equal(numpy_draw, expected[1])
    assert python_draw == expected[2]


def test_tied_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyCausalLM(vocab_size=11)
    path = save_checkpoint(tmp_path, 1, model=model, state={})
    restored = TinyCausalLM(vocab_size=11)
    load_weights(path, restored)
    assert restored.head.weight is restored.embed.weight
    assert torch.equal(restored.embed.weight, model.embed.weight)


def test_keeps_the_newest_k_and_leaves_no_temporary_folders(tmp_path):
    model = mlp()
    for step in (2, 4, 6, 8):
        _save(tmp_path, step, model, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006", "step_00000008"]
    assert not list(tmp_path.glob(".tmp-*"))
    # Saving a step that exists replaces it whole.
    _save(tmp_path, 8, model, keep=2)
    verify_checkpoint(tmp_path / "step_00000008")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        pytest.param(_truncate, "model.safetensors", "truncated", id="truncated-weights"),
        pytest.param(_flip_byte, "model.safetensors", "corrupt", id="flipped-byte-weights"),
        pytest.param(_truncate, "state.pt", "truncated", id="truncated-state"),
        pytest.param(lambda p: p.unlink(), "manifest.json", "manifest", id="no-manifest"),
        pytest.param(lambda p: p.unlink(), "ema.safetensors", "missing", id="missing-file"),
    ],
)
def test_damaged_newest_checkpoint_is_named_and_the_previous_one_loads(tmp_path, damage, file, message):
    model = mlp()
    good = _save(tmp_path, 1, model)
    bad = _save(tmp_path, 2, model)
    damage(bad / file)
    with pytest.raises(CheckpointError, match=message) as info:
        verify_checkpoint(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(CheckpointError):
        resolve_checkpoint(bad)
    with pytest.warns(RuntimeWarning, match="skipping a bad checkpoint"):
        assert latest_valid_checkpoint(tmp_path) == good
    with pytest.warns(RuntimeWarning):
        assert resolve_checkpoint(tmp_path) == good
    load_weights(good, mlp(seed=3))


def test_unverified_damaged_files_still_fail_with_the_file_name(tmp_path):
    path = _save(tmp_path, 1, mlp())
    _truncate(path / "model.safetensors")
    _truncate(path / "state.pt")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_weights(path, mlp(), verify=False)
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        load_state(path)


def test_mismatched_model_is_reported(tmp_path):
    path = _save(tmp_path, 1, mlp())
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_weights(path, nn.Linear(6, 3))


def test_every_torch_load_in_the_package_is_weights_only():
    """A checkpoint or state file is data, never code: every ``torch.load`` passes ``weights_only=True``."""
    import ast
    from pathlib import Path

    import nalaformer

    calls = []
    for path in Path(nalaformer.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load") and node.args:
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if ast.unparse(node.func) == "torch.load" or "weights_only" in keywords:
                    calls.append((path.name, node.lineno, keywords.get("weights_only")))
    assert calls and all(value == "True" for _, _, value in calls), calls
