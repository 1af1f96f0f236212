"""`nalaformer reproduce` stops cleanly: Ctrl-C terminates its workers and says how to resume, a killed study leaves
no orphan workers, and a job cut mid-training continues from its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nalaformer.reproduce import study_plan
from nalaformer.reproduce.jobs import recipe_config, result_path, run_dir, run_job
from nalaformer.train import list_checkpoints, read_metrics
from nalaformer.train.recipes import image as image_recipe

REPO = Path(__file__).resolve().parents[2]

# The tiny study with its image task made endless, so the worker is surely training when the signal comes.
ENDLESS_STUDY = """
import dataclasses, sys
from nalaformer.cli import main
from nalaformer.reproduce import study
plan = study.study_plan("tiny")
image = dataclasses.replace(plan.tasks[0], steps=10**7)
study.study_plan = lambda mode: dataclasses.replace(plan, tasks=(image,))
sys.exit(main(["reproduce", "--mode", "tiny", "--sections", "accuracy", "--workers", "1", "--no-progress",
               "--out", sys.argv[1]]))
"""


def _session_processes(session: int) -> list[int]:
    """Process ids in the session ``session`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _start_endless_study(out: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", ENDLESS_STUDY, str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
        # a terminal's foreground process: a test run started in the background (``&``) inherits an ignored SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # the worker is training once its run has written its config
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/image/*/config.json")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the study's workers did not start"
        time.sleep(0.2)
    return process


def _wait_until_gone(session: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _session_processes(session)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")


def test_ctrl_c_stops_the_study_at_once_terminating_its_workers(tmp_path):
    process = _start_endless_study(tmp_path)
    try:
        # what a terminal's Ctrl-C does: SIGINT to the whole process group
        os.killpg(process.pid, signal.SIGINT)
        _, error = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert "interrupted with 0 of 2 training runs finished" in lines[0] and "run the same command again" in lines[0]
    assert _wait_until_gone(process.pid, 5) == []


def test_killing_the_study_leaves_no_orphan_workers(tmp_path):
    process = _start_endless_study(tmp_path)
    try:
        assert len(_session_processes(process.pid)) >= 2  # the study and its worker
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert _wait_until_gone(process.pid, 10) == []
    finally:
        for pid in _session_processes(process.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_job_cut_mid_training_resumes_from_its_checkpoints(tmp_path):
    plan = study_plan("tiny")
    task = dataclasses.replace(plan.tasks[0], steps=10)
    directory = run_dir(tmp_path, task.name, "softmax", 0)
    # the job's first 5 steps, as a run cut after its step-4 checkpoint would leave them (checkpoints every 2 steps)
    first_half = recipe_config(task, "softmax", 0, directory)
    first_half.train.steps = 5
    image_recipe.run(first_half)
    assert [p.name for p in list_checkpoints(directory / "checkpoints")][-1] == "step_00000005"
    assert recipe_config(task, "softmax", 0, directory).train.resume == "auto"

    record = run_job(task, "softmax", 0, tmp_path, diagnostic_queries=8)
    assert record["resumed"] and record["steps"] == 10
    assert json.loads(result_path(tmp_path, task.name, "softmax", 0).read_text())["resumed"]
    logged = [r["step"] for r in read_metrics(directory / "metrics.jsonl") if r["split"] == "train"]
    assert logged == sorted(set(logged)) and logged[-1] == 10
    assert json.loads((directory / "config.json").read_text())["run"]["resumed_from"].endswith("step_00000005")
