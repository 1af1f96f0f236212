"""Long-range tasks that can be generated or read offline: ListOps, Pathfinder and pixel-level sequential images.

Every mixer trains on every task with one small recipe (same model size, steps, batch and learning rate); the section
reports the validation accuracy (mean ± std over seeds), the wall time per training step and the peak memory one
training step adds, at the task's sequence length.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nalaformer.reproduce.small_training import Cell, run_cells, write_section

LONG_RANGE_MIXERS = (
    "softmax",
    "nala",
    "nala_running_t",
    "nala_learned_t",
    "sign_split_power",
    "elu",
    "gated_deltanet",
    "nala_gated_deltanet",
)


@dataclass(frozen=True)
class LongRangeTask:
    """One task and its data.

    Attributes:
        name: ``"listops"``, ``"pathfinder"`` or ``"pixels"``.
        train_examples, val_examples: set sizes (generated, or drawn from the image source's training images).
        options: ListOps: ``min_length``, ``max_length``; Pathfinder: ``size``, ``path_length``, ``distractors``;
            pixels: ``prefer`` (``"fashion-mnist"``, falling back to MNIST-5k).
        mixers: the plan's mixers this task runs (None: all of them).
    """

    name: str
    train_examples: int
    val_examples: int
    options: dict[str, Any] = field(default_factory=dict)
    mixers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LongRangePlan:
    """The tasks, the mixers and seeds, and the one recipe every run shares. With ``seeded_mixers`` set, only those
    mixers get the seeds after the first (the others run with the first seed alone)."""

    tasks: tuple[LongRangeTask, ...]
    mixers: tuple[str, ...]
    seeds: tuple[int, ...]
    width: int
    layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float
    seeded_mixers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.seeded_mixers is not None and not set(self.seeded_mixers) <= set(self.mixers):
            raise ValueError(f"LongRangePlan.seeded_mixers={self.seeded_mixers} must be among mixers={self.mixers}")
        for task in self.tasks:
            if task.mixers is not None and not (task.mixers and set(task.mixers) <= set(self.mixers)):
                raise ValueError(
                    f"LongRangeTask({task.name!r}).mixers={task.mixers} must be a non-empty subset of the plan's "
                    f"mixers={self.mixers}"
                )

    def runs(self, seed: int) -> tuple[str, ...]:
        """The mixers that run with ``seed``."""
        if seed == self.seeds[0] or self.seeded_mixers is None:
            return self.mixers
        return tuple(m for m in self.mixers if m in self.seeded_mixers)


def long_range_plan(mode: str) -> LongRangePlan:
    """The plan of ``mode``: ``"tiny"`` (tests), ``"quick"`` (a slice at short lengths), ``"reduced"`` (the first
    pass, committed under ``benchmarks/boundary-reduced``: LRA lengths except ListOps at 128-512 tokens, three mixers,
    60 steps, one seed: every mixer stayed at chance), ``"map"`` (the measured pass committed under
    ``benchmarks/boundary-map``: pixel-level Fashion-MNIST, 784 tokens, the seven key mixers with seed 0 and softmax,
    NaLa and ELU with seeds 1 and 2 too, 300 steps) or ``"full"`` (committed under ``benchmarks/boundary-full``).

    Full mode runs the map's recipe (width 32, one layer, 300 steps of batch 16, lr 3e-3) on the three tasks at LRA
    lengths: ListOps 500-2,000 tokens (padded to 2,000), Pathfinder 32x32 = 1,024, pixels 784. Pixels: all 8 mixers
    with seed 0 and softmax, NaLa, ELU with seeds 1, 2 (14 runs); Pathfinder and ListOps: softmax, NaLa and ELU with
    seeds 0, 1, 2 (9 runs each): 32 runs of 53-239 CPU-s, 68 CPU-minutes, estimated from measured step times
    (``nalaformer.reproduce.boundary_budget``; ``python -m nalaformer.reproduce.boundary --mode full --estimate``).
    The other five mixers were planned on Pathfinder and ListOps too and dropped once every run of softmax, NaLa and
    ELU there ended at a constant answer (the validation share of one class): a recipe under which no mixer learns
    cannot rank more mixers. The runs go task by task, the seeded mixers' three seeds first (:func:`long_range_cells`),
    pixels first (the one task the map's recipe is known to learn; its cells are the map's pixel cells), then
    Pathfinder and ListOps.
    """
    if mode == "tiny":
        tasks = (
            LongRangeTask("listops", 32, 16, {"min_length": 8, "max_length": 24}),
            LongRangeTask("pathfinder", 32, 16, {"size": 12, "path_length": 4, "distractors": 0}),
        )
        return LongRangePlan(tasks, ("softmax", "nala"), (0,), 16, 1, 2, 2, 8, 3e-3)
    if mode == "quick":
        tasks = (
            LongRangeTask("listops", 256, 128, {"min_length": 32, "max_length": 128}),
            LongRangeTask("pathfinder", 256, 128, {"size": 16, "path_length": 6, "distractors": 0}),
            LongRangeTask("pixels", 256, 128, {"prefer": "fashion-mnist"}),
        )
        return LongRangePlan(tasks, ("softmax", "nala"), (0,), 32, 1, 2, 12, 16, 3e-3)
    if mode == "reduced":
        tasks = (
            LongRangeTask("listops", 1000, 256, {"min_length": 128, "max_length": 512}),
            LongRangeTask("pathfinder", 1000, 256, {"size": 32, "path_length": 14, "distractors": 1}),
            LongRangeTask("pixels", 1000, 500, {"prefer": "fashion-mnist"}),
        )
        return LongRangePlan(tasks, ("softmax", "nala", "gated_deltanet"), (0,), 32, 1, 2, 60, 16, 3e-3)
    if mode == "map":
        from nalaformer.reproduce.recall_grid import KEY_MIXERS

        tasks = (LongRangeTask("pixels", 8000, 1000, {"prefer": "fashion-mnist"}),)
        seeded = ("softmax", "nala", "elu")
        return LongRangePlan(tasks, KEY_MIXERS, (0, 1, 2), 32, 1, 2, 300, 16, 3e-3, seeded_mixers=seeded)
    if mode == "full":
        seeded = ("softmax", "nala", "elu")
        tasks = (
            LongRangeTask("pixels", 8000, 1000, {"prefer": "fashion-mnist"}),
            LongRangeTask("pathfinder", 8000, 500, {"size": 32, "path_length": 14, "distractors": 1}, seeded),
            LongRangeTask("listops", 8000, 500, {"min_length": 500, "max_length": 2000}, seeded),
        )
        return LongRangePlan(tasks, LONG_RANGE_MIXERS, (0, 1, 2), 32, 1, 2, 300, 16, 3e-3, seeded_mixers=seeded)
    raise ValueError(f"long_range_plan: mode must be tiny, quick, reduced, map or full, got {mode!r}")


def _generate(task: LongRangeTask) -> dict[str, Any]:
    """Training and validation tensors of ``task`` (the validation set from a different seed)."""
    if task.name == "listops":
        from nalaformer.data.listops import NUM_CLASSES, PAD, VOCAB_SIZE, ListOpsDataset

        def build(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            data = ListOpsDataset(count, seed=seed, **task.options)
            pairs = [data[i] for i in range(count)]
            return torch.stack([p[0] for p in pairs]).to(torch.uint8), torch.stack([p[1] for p in pairs])

        train, val = build(task.train_examples, 0), build(task.val_examples, 1)
        meta = {"vocab": VOCAB_SIZE, "classes": NUM_CLASSES, "pad": PAD, "source": "generated"}
    elif task.name == "pathfinder":
        from nalaformer.data.pathfinder import PathfinderDataset

        def build(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            pixels, labels = PathfinderDataset(count, seed=seed, **task.options)._examples()
            return pixels.to(torch.uint8), labels

        train, val = build(task.train_examples, 0), build(task.val_examples, 1)
        meta = {"vocab": 256, "classes": 2, "pad": None, "source": "generated"}
    elif task.name == "pixels":
        from nalaformer.data.pixel_sequences import pixel_sequence_splits

        train_set, val_set, source = pixel_sequence_splits(task.train_examples, task.val_examples, **task.options)
        train = (train_set.pixels.to(torch.uint8), train_set.labels)
        val = (val_set.pixels.to(torch.uint8), val_set.labels)
        meta = {"vocab": 256, "classes": train_set.num_classes, "pad": None, "source": source}
    else:
        raise ValueError(f"long-range task must be listops, pathfinder or pixels, got {task.name!r}")
    return {"train_x": train[0], "train_y": train[1], "val_x": val[0], "val_y": val[1], **meta}


def task_data_path(out_dir: Path, task: LongRangeTask) -> Path:
    """Where :func:`prepare_task` keeps ``task``'s data: ``results/long_range_data/<task>-<settings hash>.pt``."""
    # the data depends on the task's sizes and options, not on which mixers train on it
    settings = {key: value for key, value in asdict(task).items() if key != "mixers"}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(out_dir) / "results" / "long_range_data" / f"{task.name}-{digest}.pt"


def prepare_task(out_dir: Path, task: LongRangeTask) -> tuple[Path, dict[str, Any]]:
    """Generate ``task``'s data once into ``results/long_range_data/`` (the workers read it); returns the file and
    its description (vocabulary, classes, padding, source, sequence length)."""
    path = task_data_path(out_dir, task)
    if path.is_file():
        data = torch.load(path, weights_only=True)
    else:
        data = _generate(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(data, temporary)
        temporary.replace(path)
    info = {k: data[k] for k in ("vocab", "classes", "pad", "source")}
    return path, {**info, "seq_len": int(data["train_x"].shape[1])}


def long_range_cells(plan: LongRangePlan, task_options: dict[str, dict[str, Any]]) -> list[Cell]:
    """Every (task, mixer, seed) run, the most informative first: task by task, the mixers that get every seed
    (``seeded_mixers``) with all seeds, so each task's comparison over seeds is complete before the next starts; then
    the other mixers with the first seed. ``task_options[task name]`` are the cells' task options (the prepared
    data's path and sizes, or only the sizes for an estimate)."""
    seeded = [
        (task, mixer, seed)
        for task in plan.tasks
        for seed in plan.seeds
        for mixer in plan.mixers
        if mixer in plan.runs(plan.seeds[-1]) and (task.mixers is None or mixer in task.mixers)
    ]
    once = [
        (task, mixer, plan.seeds[0])
        for task in plan.tasks
        for mixer in plan.mixers
        if mixer not in plan.runs(plan.seeds[-1]) and (task.mixers is None or mixer in task.mixers)
    ]
    return [
        Cell(
            task.name,
            mixer,
            plan.width,
            plan.layers,
            plan.heads,
            plan.steps,
            plan.batch_size,
            plan.lr,
            seed,
            task_options[task.name],
        )
        for task, mixer, seed in seeded + once
    ]


def summarise_long_range(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task and mixer: accuracy mean ± std over seeds, seconds per step, step memory; the best mixer per task."""
    from nalaformer.reproduce.boundary_stats import calls
    from nalaformer.reproduce.seeds import mean_std

    tasks: dict[str, dict[str, Any]] = {}
    for record in records:
        if "error" in record:
            continue
        cell = record["cell"]
        entry = tasks.setdefault(
            cell["task"], {"seq_len": cell["data"]["seq_len"], "source": cell["data"]["source"], "mixers": {}}
        )
        entry["mixers"].setdefault(cell["mixer"], []).append(record)
    summary = {}
    for name, entry in tasks.items():
        mixers = {}
        for mixer, group in entry["mixers"].items():
            mixers[mixer] = {
                **mean_std([r["accuracy"] for r in group]),
                "seeds": sorted(r["cell"]["seed"] for r in group),
                "seconds_per_step": mean_std([r["seconds_per_step"] for r in group])["mean"],
                "step_peak_bytes": mean_std([r.get("step_peak_bytes") for r in group])["mean"],
                "parameters": group[0]["parameters"],
            }
        summary[name] = {"seq_len": entry["seq_len"], "source": entry["source"], "mixers": mixers}
    best = [row for name, entry in summary.items() for row in calls(name, entry["mixers"])]
    return {"tasks": summary, "best": best}


def long_range_section(
    out_dir: Path,
    mode: str,
    *,
    workers: int = 1,
    progress: bool = False,
    train: bool = True,
    only: set[str] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Prepare the data, train the missing runs into ``results/long_range/``, write ``results/long_range.json``
    (with ``train=False``: summarise the runs already trained, and list the others as ``not_run``; ``only`` and
    ``deadline`` as in :func:`nalaformer.reproduce.small_training.run_cells`). A task's data is generated only when
    one of its cells is to be trained."""
    from nalaformer.reproduce.boundary_budget import task_length

    plan = long_range_plan(mode)
    sizes = {task.name: {"seq_len": task_length(task.name, task.options)} for task in plan.tasks}
    wanted = {c.task for c in long_range_cells(plan, sizes) if train and (only is None or c.name in only)}
    options = {}
    for task in plan.tasks:
        if task.name in wanted or task_data_path(out_dir, task).is_file():
            path, info = prepare_task(out_dir, task)
            options[task.name] = {"path": str(path), **info}
        else:  # nothing of it to train: its finished cells (if any) are matched on the sizes alone
            options[task.name] = sizes[task.name]
    cells = long_range_cells(plan, options)
    folder = Path(out_dir) / "results" / "long_range"
    records = run_cells(
        cells, folder, workers=workers, memory=True, progress=progress, train=train, only=only, deadline=deadline
    )
    path = Path(out_dir) / "results" / "long_range.json"
    return write_section(path, mode, plan, cells, records, summarise_long_range(records))
