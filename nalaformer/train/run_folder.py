"""Claiming a run folder: one process at a time, never over another run by accident.

:func:`claim_run_dir` is held for the whole of a training run (recipes take it before they read any data, the engine
inside). It

- creates the folder, so an unwritable ``run_dir`` fails at once, before data and model are built;
- takes an exclusive lock (``flock`` on ``<run_dir>/.lock``): a second process on the same folder fails at once,
  naming the holder's process id. The kernel drops the lock when the holder exits, however it exits (``kill -9``
  too), so a stale lock file never blocks anyone;
- refuses a folder that already holds a run unless the run resumes it (``resume``) or replaces it (``overwrite``,
  which deletes the old contents first).

A resumed run must keep the checkpoint's settings (:func:`settings_differences`), apart from those in
:data:`RESUMABLE_SETTINGS` (length, reporting, threads, device).

Claims nest within one process (the recipe's and the engine's): only the outermost one checks and locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nalaformer.train.distributed import DistributedContext, broadcast_object

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still apply
    fcntl = None

LOCK_NAME = ".lock"

# Run folders this process holds: resolved path -> open lock file.
_HELD: dict[Path, object] = {}


class RunFolderError(ValueError):
    """The run folder cannot be used: not writable, locked by another process, or holding another run."""


def run_contents(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` other than its lock file (empty when the folder is missing)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.name != LOCK_NAME)


def _open_lock(folder: Path):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # kept open for the whole claim (the lock lives as long as the open file)
        handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise RunFolderError(f"run_dir={str(folder)!r} is not writable: {error}") from error
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunFolderError(
            f"run_dir={str(folder)!r} is in use by another process (pid {holder}); wait for it to finish, stop it, "
            f"or choose another --run-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def claim_run_dir(
    run_dir: str | Path | None,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    context: DistributedContext | None = None,
) -> Iterator[Path | None]:
    """Hold ``run_dir`` for the duration of the ``with`` block (see the module docstring).

    Args:
        run_dir: the run folder; ``None`` claims nothing.
        resume: the run's ``resume`` setting; a resumed run may use a non-empty folder.
        overwrite: delete what the folder holds (the lock file aside) and start afresh.
        context: the distributed context: rank 0 claims for all ranks and every rank raises its error; default a
            single process.

    Raises:
        RunFolderError: the folder is not writable, is locked by another process, or holds a run while neither
            ``resume`` nor ``overwrite`` is set.
    """
    if run_dir is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        error = None
        if context is None or context.is_main:
            try:
                stack.enter_context(_claim(Path(run_dir), resume, overwrite))
            except RunFolderError as caught:
                error = str(caught)
        if context is not None and context.enabled:
            error = broadcast_object(error, context)
        if error is not None:
            raise RunFolderError(error)
        yield Path(run_dir)


@contextlib.contextmanager
def _claim(run_dir: Path, resume: str | None, overwrite: bool) -> Iterator[None]:
    folder = run_dir.absolute()
    if folder.exists() and folder.resolve() in _HELD:
        # the recipe holds it and the engine claims it again: checked and locked already
        yield
        return
    handle = _open_lock(folder)
    key = folder.resolve()
    try:
        existing = run_contents(folder)
        if existing and resume is None:
            if not overwrite:
                listed = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
                raise RunFolderError(
                    f"run_dir={str(run_dir)!r} already holds a run ({listed}); continue it with --resume, replace it "
                    f"with --overwrite, or choose another --run-dir"
                )
            for name in existing:
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        _HELD[key] = handle
        yield
    finally:
        _HELD.pop(key, None)
        handle.close()


# Settings a resumed run may change: how long it runs and how it reports, where and with what it runs. Everything
# else (the model, the data, the optimisation: lr, schedule shape, batch, seed, precision, EMA, ...) must equal the
# checkpoint's, or the continued run would not be the run the checkpoint belongs to. ``steps`` may grow (the cosine
# schedule is recomputed for the new length); ``skip_nonfinite`` may be switched on to get past a bad batch.
RESUMABLE_SETTINGS = frozenset(
    f"train.{name}"
    for name in (
        "steps",
        "eval_every",
        "eval_batches",
        "eval_batch_size",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "skip_nonfinite",
        "num_workers",
        "cpu_threads",
        "device",
        "progress",
        "run_dir",
        "resume",
        "overwrite",
    )
)

# Facts about the process (world size, device, torch version), not settings of the run.
_FACTS_SECTION = "run"


def _flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _settings(payload: dict[str, Any]) -> dict[str, Any]:
    # a JSON round trip, as config.json stores them: tuples and lists compare equal
    plain = json.loads(json.dumps(payload, default=str))
    return _flatten({key: value for key, value in plain.items() if key != _FACTS_SECTION})


def settings_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings (dotted names, e.g. ``model.mixer``) in which ``current`` differs from ``saved``, each as
    ``"name: saved -> current"``; settings in :data:`RESUMABLE_SETTINGS` and process facts are ignored."""
    before, after = _settings(saved), _settings(current)
    missing = object()
    differences = []
    for name in sorted(set(before) | set(after)):
        if name in RESUMABLE_SETTINGS:
            continue
        old, new = before.get(name, missing), after.get(name, missing)
        if old != new:
            shown = ["(absent)" if value is missing else repr(value) for value in (old, new)]
            differences.append(f"{name}: {shown[0]} -> {shown[1]}")
    return differences
