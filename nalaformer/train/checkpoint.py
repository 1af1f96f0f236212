"""Checkpoints: safetensors weights plus the training state, written atomically, verified on load.

A checkpoint is a folder ``<run>/checkpoints/step_00000100/`` holding

- ``model.safetensors``: the model weights (shared / tied tensors stored once),
- ``ema.safetensors``: the EMA weights, when EMA is on (same names as the model),
- ``state.pt``: optimizer, scheduler, step, data position and RNG states (plain tensors and containers, loaded with
  ``weights_only=True``),
- ``manifest.json``: size and SHA-256 of every other file and the time it was written, written last.

The folder is assembled under a temporary name and renamed into place (``os.replace``), so a crash never leaves a
half-written ``step_*`` folder; the manifest catches files truncated or damaged afterwards. "Newest" means the most
recently written (not the highest step): a run resumed from an older checkpoint continues its own line, and rotation
never deletes what the current run just wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

CHECKPOINT_PREFIX = "step_"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, truncated or corrupt; the message names the file."""


def capture_rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and every CUDA device), numpy's global generator and Python's ``random``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the RNG states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(path: str | Path) -> int:
    """Optimizer steps behind the checkpoint folder ``path``: from its name (``step_00000100`` -> 100), or from its
    manifest when it was renamed."""
    name = Path(path).name
    suffix = name[len(CHECKPOINT_PREFIX) :]
    if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
        return int(suffix)
    try:
        return int(json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        expected = checkpoint_name(100)
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint folder (expected a name like {expected!r} or a manifest.json)"
        ) from error


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint folders under ``directory``, oldest step first (temporary folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def _written_at(path: Path) -> int:
    """When the checkpoint was written (ns): its manifest's record, else the manifest's (or folder's) mtime."""
    manifest = path / "manifest.json"
    try:
        return int(json.loads(manifest.read_text(encoding="utf-8"))["written_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return manifest.stat().st_mtime_ns
    except OSError:
        return path.stat().st_mtime_ns


def checkpoints_by_write_order(directory: str | Path) -> list[Path]:
    """Checkpoint folders under ``directory``, oldest written first (ties: lower step first)."""
    return sorted(list_checkpoints(directory), key=lambda path: (_written_at(path), checkpoint_step(path)))


def save_checkpoint(
    directory: str | Path,
    step: int,
    *,
    model: nn.Module,
    state: dict[str, Any],
    ema: nn.Module | None = None,
    keep: int | None = None,
) -> Path:
    """Write the checkpoint of ``step`` into ``directory`` atomically and keep the newest ``keep`` of them.

    Args:
        directory: the checkpoints folder (created if missing).
        step: optimizer steps taken; names the folder.
        model: the model (unwrapped); its ``state_dict`` goes to ``model.safetensors``.
        state: everything else, as plain tensors / numbers / strings / containers (``torch.save``'d).
        ema: the EMA copy of the model (``AveragedModel.module``), or ``None``.
        keep: number of most recently written checkpoints to keep (the others are deleted); default ``None`` keeps all.

    Returns:
        The checkpoint folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / checkpoint_name(step)
    temporary = directory / f".tmp-{final.name}-{os.getpid()}"
    temporary.mkdir()
    try:
        save_model(model, str(temporary / "model.safetensors"), metadata={"step": str(step)})
        if ema is not None:
            save_model(ema, str(temporary / "ema.safetensors"), metadata={"step": str(step)})
        torch.save({"format_version": FORMAT_VERSION, "step": step, **state}, temporary / "state.pt")
        files = {}
        for path in sorted(temporary.iterdir()):
            _fsync(path)
            files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        manifest = temporary / "manifest.json"
        manifest.write_text(
            json.dumps({"step": step, "written_ns": time.time_ns(), "files": files}, indent=1), encoding="utf-8"
        )
        _fsync(manifest)
        if final.exists():
            # Re-saving a step (e.g. after resuming from it): move the old folder aside before the rename.
            displaced = directory / f".tmp-old-{final.name}-{os.getpid()}"
            os.replace(final, displaced)
            os.replace(temporary, final)
            shutil.rmtree(displaced, ignore_errors=True)
        else:
            os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if keep is not None:
        for old in checkpoints_by_write_order(directory)[:-keep]:
            # renamed away first, so an interruption never leaves a half-deleted step_* folder
            doomed = directory / f".tmp-drop-{old.name}-{os.getpid()}"
            os.replace(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    return final


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint folder against its manifest (presence, size and SHA-256 of every file).

    Returns:
        The manifest. Raises :class:`CheckpointError` naming the first bad file.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        message = f"checkpoint manifest {str(manifest_path)!r} is missing or unreadable: {error}"
        raise CheckpointError(message) from error
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(
                f"checkpoint file {str(file)!r} has {size} bytes, the manifest says {expected['bytes']} (truncated?)"
            )
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(f"checkpoint file {str(file)!r} is corrupt (SHA-256 differs from the manifest)")
    return manifest


def load_weights(path: str | Path, model: nn.Module, *, ema: bool = False, verify: bool = True) -> None:
    """Load a checkpoint's model (or EMA) weights into ``model`` (strict: every name must match).

    Args:
        path: the checkpoint folder.
        model: the model (unwrapped) to load into.
        ema: load the EMA weights (``ema.safetensors``) instead; default False.
        verify: check the manifest first; default True.
    """
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    file = path / ("ema.safetensors" if ema else "model.safetensors")
    if not file.is_file():
        what = "EMA weights (trained without --ema-decay)" if ema else "model weights"
        raise CheckpointError(f"checkpoint {str(path)!r} has no {what}: {str(file)!r} is missing")
    try:
        load_model(model, str(file), strict=True)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint file {str(file)!r} is unreadable or corrupt: {error}") from error
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint file {str(file)!r} does not match the model: {error}") from error


def load_state(path: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint folder (``weights_only=True``), as :func:`save_checkpoint` wrote it."""
    file = Path(path) / "state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint file {str(file)!r} is missing") from error
    except Exception as error:
        raise CheckpointError(f"checkpoint file {str(file)!r} is unreadable or corrupt: {error}") from error


def latest_valid_checkpoint(directory: str | Path) -> Path | None:
    """The most recently written checkpoint under ``directory`` that passes :func:`verify_checkpoint`, or ``None``.

    A newer checkpoint that fails verification is skipped with a ``RuntimeWarning`` naming the bad file.
    """
    for path in reversed(checkpoints_by_write_order(directory)):
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"skipping a bad checkpoint: {error}", RuntimeWarning, stacklevel=2)
            continue
        return path
    return None


def resolve_checkpoint(target: str | Path) -> Path:
    """A checkpoint folder from ``target``: the folder itself, or the newest valid checkpoint of a run folder (or of
    its ``checkpoints/`` folder). Raises :class:`CheckpointError` when there is none or the named one is bad."""
    target = Path(target)
    if (target / "manifest.json").exists() or target.name.startswith(CHECKPOINT_PREFIX):
        verify_checkpoint(target)
        return target
    directory = target / "checkpoints" if (target / "checkpoints").is_dir() else target
    found = latest_valid_checkpoint(directory)
    if found is None:
        raise CheckpointError(f"no valid checkpoint under {str(directory)!r}")
    return found
