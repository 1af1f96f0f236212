"""DDP: two gloo ranks launched with torchrun agree with each other and with one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nalaformer.train import list_checkpoints, read_metrics, train
from tests.train.ddp_worker import ddp_config
from tests.train.standins import NoisyToyData, classification_loss, mlp, toy_data

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
def test_two_gloo_ranks_match_single_process_training(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "train" / "ddp_worker.py"),
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for name, tensor in rank0.items():
        assert torch.equal(rank1[name], tensor), f"ranks disagree on {name}"

    data, val = NoisyToyData(toy_data()), toy_data(21, seed=1)
    single = train(mlp(dropout=0.0), data, classification_loss, ddp_config(None), val_data=val)
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(rank0[name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    metrics = json.loads((tmp_path / "metrics0.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["val_accuracy"] == pytest.approx(single.metrics["val_accuracy"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(single.metrics["val_loss"], rel=1e-5)
    # Rank 0 alone logs and checkpoints: one record per logged step, one checkpoint folder per save.
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [3, 6]
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000006"]
