"""Run by ``torchrun`` from test_distributed.py: train the toy model on 2 ranks, save each rank's weights.

Usage: ``torchrun --standalone --nproc_per_node=2 tests/train/ddp_worker.py OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from nalaformer.train import TrainConfig, train
from tests.train.standins import NoisyToyData, classification_loss, mlp, toy_data


def ddp_config(run_dir: str | None) -> TrainConfig:
    """The configuration both the distributed run and its single-process reference use."""
    return TrainConfig(
        steps=6,
        batch_size=8,
        grad_accum=2,
        lr=1e-2,
        warmup_steps=2,
        log_every=3,
        eval_every=3,
        progress=False,
        device="cpu",
        run_dir=run_dir,
    )


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    out = Path(out_dir)
    result = train(
        mlp(dropout=0.0),
        NoisyToyData(toy_data()),
        classification_loss,
        ddp_config(str(out / "run")),
        val_data=toy_data(21, seed=1),
    )
    rank = dist.get_rank()
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"metrics{rank}.json").write_text(json.dumps({"world_size": dist.get_world_size(), **result.metrics}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
