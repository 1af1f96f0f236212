"""CPU-seconds of one training step of the boundary sections' cells, one thread: the measurements behind
``nalaformer.reproduce.boundary_budget.STEP_SECONDS``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/boundary-map/step_costs.py mqar        # MQAR, every mixer
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/boundary-map/step_costs.py long-range  # ListOps 2,000, Pathfinder
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/boundary-map/step_costs.py full-long-range  # + step memory

Each line: task, sequence length, width, mixer, CPU-seconds per step (mean of 4 steps for MQAR, 2 for the long
tasks, after one warm-up step that creates the optimizer state). Random tokens: the values do not change the cost.
``full-long-range``: every (task, mixer) of full mode's long-range plan at its length, CPU-seconds per step (mean of
3) and the resident memory one training step adds (MiB, measured in a fresh process:
``nalaformer.reproduce.small_training.training_step_memory``).
"""

import sys
import time

import torch

from nalaformer.reproduce.boundary_budget import planned_cells
from nalaformer.reproduce.recall_grid import RECALL_MIXERS
from nalaformer.reproduce.small_training import Cell, _optimizer, _step, build_model, training_step_memory


def step_cpu_seconds(cell: Cell, vocab: int, classes: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cell, vocab, classes, None)
    optimizer, scheduler = _optimizer(model, cell)
    x = torch.randint(1, min(vocab, 17), (cell.batch_size, cell.data["seq_len"]))
    y = x if cell.task == "mqar" else torch.randint(0, classes, (cell.batch_size,))
    _step(model, optimizer, scheduler, cell.task, x, y)
    start = time.process_time()
    for _ in range(steps):
        _step(model, optimizer, scheduler, cell.task, x, y)
    return (time.process_time() - start) / steps


def main(which: str) -> None:
    torch.set_num_threads(1)
    if which == "mqar":
        for seq_len, width in ((32, 32), (32, 64), (64, 64)):
            for mixer in RECALL_MIXERS:
                cell = Cell("mqar", mixer, width, 2, 2, 10, 64, 3e-3, 0, {"seq_len": seq_len, "pairs": 4, "vocab": 32})
                print(f"mqar T{seq_len} w{width} {mixer} {step_cpu_seconds(cell, 32, 0, 4):.4f}", flush=True)
    elif which == "long-range":
        for task, seq_len, mixers in (
            ("listops", 2000, ("softmax", "nala", "elu", "gated_deltanet")),
            ("pathfinder", 1024, ("softmax", "nala")),
        ):
            for mixer in mixers:
                cell = Cell(task, mixer, 32, 1, 2, 10, 16, 3e-3, 0, {"seq_len": seq_len})
                print(f"{task} T{seq_len} w32 {mixer} {step_cpu_seconds(cell, 256, 10, 2):.4f}", flush=True)
    elif which == "full-long-range":
        for cell in planned_cells("full", ("long-range",))["long-range"]:
            if cell.seed != 0:
                continue
            seconds = step_cpu_seconds(cell, 256, 10, 3)
            mib = training_step_memory(cell) / 2**20
            print(f"{cell.task} T{cell.data['seq_len']} w{cell.width} {cell.mixer} {seconds:.4f} {mib:.1f}", flush=True)
    else:
        raise SystemExit(f"usage: step_costs.py mqar|long-range|full-long-range (got {which!r})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mqar")
