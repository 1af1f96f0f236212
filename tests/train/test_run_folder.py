"""Run-folder safety: no silent reuse of another run, one process per folder, rotation by write order, a resume that
refuses rather than restarting, clean interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nalaformer.cli import main
from nalaformer.train import TrainConfig, list_checkpoints, read_metrics, save_checkpoint, train
from nalaformer.train.checkpoint import latest_valid_checkpoint
from nalaformer.train.run_folder import RunFolderError, claim_run_dir
from tests.train.standins import classification_loss, mlp, toy_data

REPO = Path(__file__).resolve().parents[2]
IMAGE = ["train", "image", "--data.name", "digits", "--model.name", "tests.train.standins:TinyConvNet"]
IMAGE += ["--batch-size", "16", "--warmup-steps", "1", "--no-progress", "--log-every", "2", "--checkpoint-every", "2"]


def quiet(run_dir, **overrides) -> TrainConfig:
    base = dict(steps=4, batch_size=8, warmup_steps=1, progress=False, log_every=2, checkpoint_every=2)
    return TrainConfig(**{**base, "run_dir": str(run_dir), **overrides})


def _corrupt_every_checkpoint(run_dir: Path) -> None:
    for checkpoint in list_checkpoints(run_dir / "checkpoints"):
        with open(checkpoint / "model.safetensors", "r+b") as handle:
            handle.write(b"\0" * 16)


def test_training_into_an_existing_run_refuses_without_resume_or_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*IMAGE, "--steps", "4", "--run-dir", str(run_dir)]) == 0
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    config = (run_dir / "config.json").read_bytes()
    capsys.readouterr()
    assert main([*IMAGE, "--steps", "2", "--lr", "0.01", "--run-dir", str(run_dir)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds a run" in error and "--resume" in error and "--overwrite" in error
    # nothing of the old run was touched
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics and (run_dir / "config.json").read_bytes() == config
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000002", "step_00000004"]

    assert main([*IMAGE, "--steps", "2", "--overwrite", "--run-dir", str(run_dir)]) == 0
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000002"]
    assert max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl")) == 2


def test_rotation_keeps_the_most_recently_written_checkpoints(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, 300, model=model, state={})
    for step in (100, 200):
        save_checkpoint(tmp_path, step, model=model, state={}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000100", "step_00000200"]
    assert latest_valid_checkpoint(tmp_path).name == "step_00000200"


def test_resume_refuses_when_every_checkpoint_is_corrupt(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*IMAGE, "--steps", "4", "--run-dir", str(run_dir)]) == 0
    _corrupt_every_checkpoint(run_dir)
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match="skipping a bad checkpoint"):
        assert main([*IMAGE, "--steps", "6", "--resume", "--run-dir", str(run_dir)]) == 1
    error = capsys.readouterr().err
    assert "no checkpoint under" in error and "is valid" in error and error.count("\n") == 1
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert len(list_checkpoints(run_dir / "checkpoints")) == 2


def test_resume_into_a_folder_without_checkpoints_starts_afresh(tmp_path):
    result = train(mlp(), toy_data(), classification_loss, quiet(tmp_path, resume="auto"))
    assert result.step == 4 and len(list_checkpoints(tmp_path / "checkpoints")) == 2


HOLD_LOCK = """
import sys, time
from nalaformer.train.run_folder import claim_run_dir
with claim_run_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_a_run_folder_fails_at_once_and_a_dead_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by another process \(pid {holder.pid}\)"):
            train(mlp(), toy_data(), classification_loss, quiet(run_dir, resume="auto"))
        assert not (run_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock with the killed holder: the folder is usable again
    result = train(mlp(), toy_data(), classification_loss, quiet(run_dir, resume="auto"))
    assert result.step == 4


def test_claims_nest_within_one_process(tmp_path):
    with claim_run_dir(tmp_path / "run"):
        (tmp_path / "run" / "tokenizer").mkdir()
        with claim_run_dir(tmp_path / "run"):
            pass
    with pytest.raises(RunFolderError, match="already holds a run"), claim_run_dir(tmp_path / "run"):
        pass


def test_warmup_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match=r"TrainConfig.warmup_steps=30 must be at most steps=10"):
        TrainConfig(steps=10, warmup_steps=30)
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(run_dir="r", resume="auto", overwrite=True)


def test_an_unwritable_run_dir_fails_before_data_and_model_are_built(tmp_path, monkeypatch, capsys):
    from nalaformer.train.recipes import image

    def must_not_run(*args, **kwargs):
        raise AssertionError("the data was built before the run folder was checked")

    monkeypatch.setattr(image, "build_datasets", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main([*IMAGE, "--steps", "2", "--run-dir", str(blocker / "run")]) == 1
    assert "is not writable" in capsys.readouterr().err


def _default_sigint() -> None:
    # a terminal's foreground process: a test run started in the background (``&``) inherits an ignored SIGINT,
    # and Python keeps an ignored SIGINT ignored, so Ctrl-C could not be simulated there
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_train_prints_one_line_naming_the_checkpoint_and_exits_130(tmp_path):
    run_dir = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [*IMAGE, "--steps", "100000", "--cpu-threads", "1", "--run-dir", str(run_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "nalaformer", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 180
        while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted during step" in lines[0] and "--resume" in lines[0], error
    newest = lines[0].split("'")[1]
    assert latest_valid_checkpoint(run_dir / "checkpoints") == Path(newest)
    assert json.loads((run_dir / "config.json").read_text())["recipe"] == "image"


def test_resume_refuses_other_model_or_data_settings_naming_them(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*IMAGE, "--steps", "4", "--run-dir", str(run_dir)]) == 0
    config = (run_dir / "config.json").read_bytes()
    capsys.readouterr()
    changed = ["--model.options", '{"width": 4}', "--data.val-fraction", "0.2", "--lr", "0.01"]
    assert main([*IMAGE, *changed, "--steps", "6", "--resume", "--run-dir", str(run_dir)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot resume from" in error
    for named in ("model.options: '{}' -> '{\"width\": 4}'", "data.val_fraction: 0.1 -> 0.2", "train.lr"):
        assert named in error, named
    assert (run_dir / "config.json").read_bytes() == config
    # length, cadence and threads may change on resume
    extended = ["--steps", "6", "--eval-every", "3", "--cpu-threads", "1", "--keep-checkpoints", "5"]
    assert main([*IMAGE, *extended, "--resume", "--run-dir", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6


def test_one_loader_reads_a_run_back_from_its_folder_or_a_checkpoint_folder(tmp_path, capsys):
    from nalaformer.train.checkpoint import CheckpointError, checkpoint_step
    from nalaformer.train.runs import find_run_dir, load_run

    run_dir = tmp_path / "run"
    assert main([*IMAGE, "--steps", "4", "--run-dir", str(run_dir)]) == 0
    older = list_checkpoints(run_dir / "checkpoints")[0]
    newest = load_run(run_dir)
    assert (newest.recipe, newest.step, newest.checkpoint.name) == ("image", 4, "step_00000004")
    assert not newest.model.training and newest.datasets.val is not None
    from_step = load_run(older, with_data=False)
    assert from_step.run_dir == run_dir and from_step.step == checkpoint_step(older) == 2
    assert find_run_dir(older / "model.safetensors") == run_dir
    with pytest.raises(ValueError, match=r"is a 'image' run, not a 'lm' run"):
        load_run(run_dir, recipe="lm")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        checkpoint_step(tmp_path)
