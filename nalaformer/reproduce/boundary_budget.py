"""What the boundary sections cost before they run: CPU-seconds per cell from measured seconds per training step.

The table :data:`STEP_SECONDS` holds CPU-seconds of one training step (one thread, the cell's batch) measured with
``benchmarks/boundary-map/step_costs.py`` on this project's 2-core machine (shared with other jobs: CPU time, not
wall time, is what is kept), or taken from a pass's own records where the comment says so. A cell costs its steps,
plus its evaluation (a forward pass over the validation set, taken as a third of a training step per batch) and, for
the long-range tasks, the two steps of the memory measurement. Mixers not measured at a shape take the dearest linear
mixer measured there; shapes not measured take the nearest measured one of the same task scaled by tokens per batch
(an upper bound for the linear mixers, whose cost grows linearly). The wall time assumes quiet cores: on a shared
machine a cell's wall time runs above its CPU time (the map's pixel runs: 1.3-1.9x), and the MQAR cells' CPU time ran
above the table too (the map's 13 cells: 1.40x; the pixel runs, whose entries are their own records: 1.03x).
``python -m nalaformer.reproduce.boundary --estimate --out DIR`` prints that ratio for the cells finished in DIR.
"""

from __future__ import annotations

from typing import Any

from nalaformer.reproduce.small_training import Cell

# (task, sequence length, width, batch) -> mixer -> CPU-seconds per training step, one thread
STEP_SECONDS: dict[tuple[str, int, int, int], dict[str, float]] = {
    ("mqar", 32, 32, 64): {
        "softmax": 0.0351,
        "nala": 0.0645,
        "nala_running_t": 0.0611,
        "nala_learned_t": 0.0624,
        "sign_split_power": 0.0579,
        "elu": 0.0514,
        "relu": 0.0484,
        "hedgehog": 0.0636,
        "deltanet": 0.0511,
        "gated_deltanet": 0.0586,
        "nala_deltanet": 0.0577,
        "nala_gated_deltanet": 0.0644,
    },
    ("mqar", 32, 64, 64): {
        "softmax": 0.0571,
        "nala": 0.1094,
        "nala_running_t": 0.1158,
        "nala_learned_t": 0.1132,
        "sign_split_power": 0.1167,
        "elu": 0.1141,
        "relu": 0.1090,
        "hedgehog": 0.1505,
        "deltanet": 0.1269,
        "gated_deltanet": 0.1387,
        "nala_deltanet": 0.1433,
        "nala_gated_deltanet": 0.1150,
    },
    ("mqar", 64, 64, 64): {
        "softmax": 0.1213,
        "nala": 0.1587,
        "nala_running_t": 0.1590,
        "nala_learned_t": 0.1618,
        "sign_split_power": 0.2005,
        "elu": 0.1843,
        "relu": 0.1756,
        "hedgehog": 0.2227,
        "deltanet": 0.2416,
        "gated_deltanet": 0.2841,
        "nala_deltanet": 0.3030,
        "nala_gated_deltanet": 0.3130,
    },
    ("listops", 2000, 32, 16): {"softmax": 0.7659, "nala": 0.4625, "elu": 0.3960, "gated_deltanet": 0.6722},
    # softmax and NaLa measured as above; Gated DeltaNet: the reduced pass's CPU-seconds over its 60 steps (loaded)
    ("pathfinder", 1024, 32, 16): {"softmax": 0.2588, "nala": 0.1699, "gated_deltanet": 0.540},
    # the reduced pass's CPU-seconds over its 60 steps, on the loaded machine
    ("listops", 512, 32, 16): {"softmax": 0.145, "nala": 0.145, "gated_deltanet": 0.265},
    # the map's pixel runs: CPU-seconds over their 300 steps (benchmarks/boundary-map), on the loaded machine
    ("pixels", 784, 32, 16): {
        "softmax": 0.2651,
        "nala": 0.3366,
        "nala_running_t": 0.2877,
        "sign_split_power": 0.3010,
        "elu": 0.3021,
        "gated_deltanet": 0.5921,
    },
}


def step_seconds(task: str, seq_len: int, width: int, batch: int, mixer: str) -> float:
    """CPU-seconds of one training step of ``mixer`` at this shape, from :data:`STEP_SECONDS` (see the module)."""
    same_task = [key for key in STEP_SECONDS if key[0] == task]
    if not same_task:
        raise ValueError(f"step_seconds: no measured step of task {task!r}; measured: {sorted(STEP_SECONDS)}")
    # nearest measured shape: same width first, then the closest tokens per batch
    key = min(same_task, key=lambda k: (k[2] != width, abs(k[1] * k[3] - seq_len * batch), abs(k[2] - width)))
    costs = STEP_SECONDS[key]
    linear = max(v for m, v in costs.items() if m != "softmax")
    seconds = costs.get(mixer, linear)
    scale = (seq_len * batch) / (key[1] * key[3])
    if key[2] != width:
        scale *= width / key[2]
    return seconds * scale


def cell_seconds(cell: Cell, *, memory: bool = False) -> float:
    """Estimated CPU-seconds of one cell: training steps, the validation pass and (``memory``) the memory steps."""
    step = step_seconds(cell.task, cell.data["seq_len"], cell.width, cell.batch_size, cell.mixer)
    val_batches = -(-int(cell.data.get("val_examples", 0)) // cell.batch_size)
    return step * (cell.steps + val_batches / 3 + (2 if memory else 0))


def estimate(cells: list[Cell], *, memory: bool = False, workers: int = 2) -> dict[str, Any]:
    """``{"cells", "cpu_seconds", "per_cell" (min, max), "wall_seconds"}``: the cells' summed estimate and the wall
    time on ``workers`` cores if they share the cells evenly."""
    costs = [cell_seconds(c, memory=memory) for c in cells]
    total = sum(costs)
    return {
        "cells": len(cells),
        "cpu_seconds": total,
        "per_cell": (min(costs), max(costs)) if costs else (0.0, 0.0),
        "wall_seconds": max(total / max(workers, 1), max(costs, default=0.0)),
    }


def task_length(name: str, options: dict[str, Any]) -> int:
    """The padded sequence length of a long-range task (ListOps: ``max_length``; Pathfinder: ``size`` squared;
    pixels: 784)."""
    if name == "listops":
        return int(options.get("max_length", 2000))
    if name == "pathfinder":
        return int(options.get("size", 32)) ** 2
    if name == "pixels":
        return 28 * 28
    raise ValueError(f"task_length: task must be listops, pathfinder or pixels, got {name!r}")


def planned_cells(mode: str, sections: tuple[str, ...] = ("recall", "long-range")) -> dict[str, list[Cell]]:
    """``mode``'s cells per section in the order they run, built from the plans' sizes without generating any data
    (the long-range cells carry ``seq_len`` and ``val_examples`` instead of a data file)."""
    from nalaformer.reproduce.long_range import long_range_cells, long_range_plan
    from nalaformer.reproduce.recall_grid import recall_grid_plan

    cells: dict[str, list[Cell]] = {}
    if "recall" in sections:
        cells["recall"] = recall_grid_plan(mode).cells()
    if "long-range" in sections:
        plan = long_range_plan(mode)
        sizes = {
            task.name: {"seq_len": task_length(task.name, task.options), "val_examples": task.val_examples}
            for task in plan.tasks
        }
        cells["long-range"] = long_range_cells(plan, sizes)
    return cells


def boundary_estimate(
    mode: str,
    sections: tuple[str, ...] = ("recall", "long-range"),
    workers: int = 2,
    *,
    cells: dict[str, list[Cell]] | None = None,
) -> dict:
    """The estimate of ``mode``'s sections, per section and in all, without generating any data; ``cells`` (section
    -> cells, e.g. a subset of :func:`planned_cells`) replaces the mode's whole plan."""
    if cells is None:
        cells = planned_cells(mode, sections)
    parts: dict[str, Any] = {
        name: estimate(cells[name], memory=name == "long-range", workers=workers)
        for name in ("recall", "long-range")
        if name in sections and name in cells
    }
    total = sum(p["cpu_seconds"] for p in parts.values())
    return {
        "mode": mode,
        "workers": workers,
        "sections": parts,
        "cells": sum(p["cells"] for p in parts.values()),
        "cpu_seconds": total,
        "wall_seconds": sum(p["wall_seconds"] for p in parts.values()),
    }


def estimate_lines(result: dict[str, Any]) -> list[str]:
    """The estimate as text: per section the cell count, CPU-seconds per cell (range) and in all, and the wall time."""
    lines = []
    for name, part in result["sections"].items():
        if not part["cells"]:
            continue
        low, high = part["per_cell"]
        lines.append(
            f"{name}: {part['cells']} cells of {low:.0f}-{high:.0f} CPU-s, {part['cpu_seconds'] / 60:.0f} CPU-min, "
            f"{part['wall_seconds'] / 60:.0f} min on {result['workers']} workers"
        )
    lines.append(
        f"{result['mode']} mode: {result['cells']} cells, {result['cpu_seconds'] / 3600:.2f} CPU-h, about "
        f"{result['wall_seconds'] / 3600:.2f} h on {result['workers']} workers (estimate from measured step times)"
    )
    return lines
