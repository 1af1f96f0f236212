"""One small training run of the boundary sections (recall grid, long-range tasks): a cell.

A cell trains one mixer on one task at one size and seed with a fixed small recipe (AdamW, weight decay 0.1, cosine
schedule with 10% warm-up, gradient clipping at 1) and no checkpoints: a cell takes seconds to minutes, so an
interrupted study simply reruns the cells that have no result yet. The models are the library's own:

- MQAR: ``NaLaForCausalLM``; the loss and the accuracy count only the query positions.
- classification (ListOps, Pathfinder, pixel sequences): ``NaLaModel`` (causal, so every mixer of the study runs),
  its final states averaged over the real tokens, and a linear head.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.data.mqar import IGNORE_INDEX, MQARDataset

CLASSIFICATION_TASKS = ("listops", "pathfinder", "pixels")
TASKS = ("mqar", *CLASSIFICATION_TASKS)
EVAL_BATCH = 64


@dataclass(frozen=True)
class Cell:
    """One training run.

    Attributes:
        task: ``"mqar"``, ``"listops"``, ``"pathfinder"`` or ``"pixels"``.
        mixer: causal registry name of every layer's token mixer.
        width: model width (``hidden_size``).
        layers, heads: decoder layers and heads per mixer.
        steps, batch_size, lr: the recipe.
        seed: seeds the model and the order of the training examples (MQAR: also its training sequences).
        data: MQAR: ``seq_len``, ``pairs``, ``vocab``, ``train_examples``, ``val_examples``; classification:
            ``path`` (a ``.pt`` file of ``train_x``, ``train_y``, ``val_x``, ``val_y``, ``vocab``, ``classes``,
            ``pad``) and ``seq_len``.
        lam: the exponent scale lambda of a mixer that has one (the NaLa family, NaLa+DN / NaLa+GDN); ``None``
            takes the mixer's current default (:func:`default_lam`), so the recipe always names the lambda a cell
            trains with. A mixer without one must leave it ``None``.
    """

    task: str
    mixer: str
    width: int
    layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float
    seed: int
    data: dict[str, Any] = field(default_factory=dict)
    lam: float | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"Cell.task must be one of {TASKS}, got {self.task!r}")
        if self.width % self.heads:
            raise ValueError(f"Cell.width={self.width} must be a multiple of heads={self.heads}")
        default = default_lam(self.mixer)
        if self.lam is None:
            object.__setattr__(self, "lam", default)
        elif default is None:
            raise ValueError(f"Cell.lam={self.lam!r}: mixer {self.mixer!r} has no exponent scale lambda; leave it None")
        elif isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam > 0:
            raise ValueError(f"Cell.lam must be a positive number or None, got {self.lam!r}")
        else:
            object.__setattr__(self, "lam", float(self.lam))

    @property
    def name(self) -> str:
        """The cell's file stem: every field that distinguishes cells of one section."""
        setting = f"T{self.data['seq_len']}" + (f"-P{self.data['pairs']}" if self.task == "mqar" else "")
        return f"{self.task}-{setting}-{self.mixer}-w{self.width}-seed{self.seed}"


@functools.cache
def default_lam(mixer: str) -> float | None:
    """The exponent scale lambda that causal mixer ``mixer`` is built with by default (read off a small built
    mixer's feature map), or ``None`` when it has none. ValueError for a name that is not a registered mixer."""
    from nalaformer.layers import build_attention

    module = build_attention(mixer, 8, 2, causal=True)
    lam = getattr(getattr(module, "feature_map", None), "lam", None)
    return None if lam is None else float(lam)


# NaLa+DN / NaLa+GDN were built with lambda = NALA_DELTA_LAM_BEFORE until this time (2026-12-01 12:39:33 UTC, when
# NALA_DELTA_LAM became their default) and with NALA_DELTA_LAM since; a record written before ``Cell.lam`` existed
# names no lambda, so its file's time tells which one it trained with (see _recorded_lam)
NALA_DELTA_LAM_SINCE = 1_796_128_773.0


def _recorded_lam(saved: dict[str, Any], mixer: str, written: float | None) -> float | None:
    """The lambda a record's cell trained with: its ``lam``, or for a record written before ``Cell.lam`` existed,
    the mixer's default at the time the file was written (``written``: its modification time; only NaLa+DN /
    NaLa+GDN's default has changed, see :data:`NALA_DELTA_LAM_SINCE`)."""
    if "lam" in saved:
        return saved["lam"]
    from nalaformer.layers.delta import NALA_DELTA_LAM, NALA_DELTA_LAM_BEFORE, NALA_DELTA_MIXERS

    if mixer in NALA_DELTA_MIXERS:
        return NALA_DELTA_LAM if written is not None and written >= NALA_DELTA_LAM_SINCE else NALA_DELTA_LAM_BEFORE
    return default_lam(mixer)


class SequenceClassifier(nn.Module):
    """A causal ``NaLaModel`` whose final states, averaged over the real tokens, feed a linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int, pad_id: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, num_classes)
        self.pad_id = pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # right padding never reaches a real token in a causal model, so the backbone needs no mask
        states = self.backbone(input_ids=tokens, use_cache=False).last_hidden_state
        if self.pad_id is None:
            return self.head(states.mean(1))
        real = (tokens != self.pad_id).unsqueeze(-1).to(states.dtype)
        return self.head((states * real).sum(1) / real.sum(1).clamp_min(1.0))


def _config(cell: Cell, vocab: int) -> Any:
    from nalaformer.models.lm.configuration_nala import NaLaConfig

    return NaLaConfig(
        vocab_size=vocab,
        hidden_size=cell.width,
        num_hidden_layers=cell.layers,
        num_attention_heads=cell.heads,
        mixer=cell.mixer,
        mixer_options=None if cell.lam is None else {cell.mixer: {"lam": cell.lam}},
        max_position_embeddings=max(2048, cell.data["seq_len"]),
        use_cache=False,
    )


def build_model(cell: Cell, vocab: int, classes: int, pad_id: int | None) -> nn.Module:
    from nalaformer.models.lm.modeling_nala import NaLaForCausalLM, NaLaModel

    if cell.task == "mqar":
        return NaLaForCausalLM(_config(cell, vocab))
    return SequenceClassifier(NaLaModel(_config(cell, vocab)), classes, pad_id)


def _mqar_tensors(cell: Cell, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = cell.data
    dataset = MQARDataset(
        count, vocab_size=data["vocab"], seq_len=data["seq_len"], num_kv_pairs=data["pairs"], seed=seed
    )
    pairs = [dataset[i] for i in range(count)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def load_cell_data(cell: Cell) -> dict[str, Any]:
    """The cell's training and validation tensors, vocabulary, classes and padding id."""
    if cell.task == "mqar":
        # training sequences depend on the seed; the validation set is the same for every seed and mixer
        train_x, train_y = _mqar_tensors(cell, cell.data["train_examples"], seed=cell.seed)
        val_x, val_y = _mqar_tensors(cell, cell.data["val_examples"], seed=1_000_003)
        tensors = {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y}
        return {**tensors, "vocab": cell.data["vocab"], "classes": 0, "pad": None}
    return torch.load(Path(cell.data["path"]), weights_only=True)


def _loss_and_correct(model: nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if task == "mqar":
        logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        labelled = y != IGNORE_INDEX
        return loss, int(((logits.argmax(-1) == y) & labelled).sum()), int(labelled.sum())
    logits = model(x)
    return F.cross_entropy(logits, y), int((logits.argmax(-1) == y).sum()), len(y)


@torch.no_grad()
def evaluate(model: nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy over the whole set (MQAR: per query)."""
    model.eval()
    correct = total = 0
    for start in range(0, len(x), EVAL_BATCH):
        _, right, count = _loss_and_correct(
            model, task, x[start : start + EVAL_BATCH].long(), y[start : start + EVAL_BATCH]
        )
        correct, total = correct + right, total + count
    model.train()
    return correct / max(total, 1)


def _schedule(step: int, steps: int) -> float:
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _optimizer(model: nn.Module, cell: Cell) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=cell.lr, weight_decay=0.1, betas=(0.9, 0.98))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, cell.steps))


def _step(model, optimizer, scheduler, task: str, x: torch.Tensor, y: torch.Tensor) -> float:
    loss, _, _ = _loss_and_correct(model, task, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def state_bytes(model: nn.Module, cell: Cell) -> int:
    """Bytes of the decoding state after one sequence of ``seq_len`` tokens (batch 1, fp32): the recurrent state of
    a linear mixer, the whole KV cache of softmax attention. What a model must carry to answer a query."""
    from nalaformer.models.lm.modeling_nala import NaLaModel

    backbone = model.model if hasattr(model, "model") else model.backbone
    if not isinstance(backbone, NaLaModel):
        raise TypeError(f"state_bytes: expected a NaLaModel backbone, got {type(backbone).__name__}")
    tokens = torch.ones(1, cell.data["seq_len"], dtype=torch.long)
    with torch.no_grad():
        output = backbone.eval()(input_ids=tokens, use_cache=True, return_dict=True)
    backbone.train()
    # the field is "cache" or, before transformers renamed it, "past_key_values"
    cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
    return int(cache.nbytes())


def run_cell(cell: Cell) -> dict[str, Any]:
    """Train ``cell`` and return its record: validation accuracy, loss, time per step, parameters (MQAR: state)."""
    torch.manual_seed(cell.seed)
    data = load_cell_data(cell)
    model = build_model(cell, data["vocab"], data["classes"], data["pad"])
    optimizer, scheduler = _optimizer(model, cell)
    order = torch.Generator().manual_seed(cell.seed)
    train_x, train_y = data["train_x"], data["train_y"]
    losses, step_times = [], []
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(cell.steps):
        index = torch.randint(len(train_x), (cell.batch_size,), generator=order)
        tick = time.perf_counter()
        losses.append(_step(model, optimizer, scheduler, cell.task, train_x[index].long(), train_y[index]))
        step_times.append(time.perf_counter() - tick)
    train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    record: dict[str, Any] = {
        "cell": asdict(cell),
        "name": cell.name,
        "accuracy": evaluate(model, cell.task, data["val_x"], data["val_y"]),
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "train_seconds": train_seconds,
        # CPU time is what sizes a mode: wall time depends on what else runs on the machine
        "cpu_seconds": cpu_seconds,
        # the median step skips the first steps' one-off costs (allocations, lazy initialisation)
        "seconds_per_step": sorted(step_times)[len(step_times) // 2] if step_times else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }
    if cell.task == "mqar":
        record["state_bytes"] = state_bytes(model, cell)
    return record


def training_step_case(**cell_fields: Any):
    """A ``nalaformer.bench.memory`` case: one training step of the cell's model on a batch of its shape (token
    values do not change memory), after one warm-up step that creates the optimizer state."""
    cell = Cell(**cell_fields)
    vocab = cell.data.get("vocab", 256)
    classes = cell.data.get("classes", 10)
    model = build_model(cell, vocab, classes, None)
    optimizer, scheduler = _optimizer(model, cell)
    x = torch.randint(1, vocab, (cell.batch_size, cell.data["seq_len"]))
    y = x.clone() if cell.task == "mqar" else torch.randint(0, classes, (cell.batch_size,))

    def step() -> None:
        _step(model, optimizer, scheduler, cell.task, x, y)

    return step, step


def training_step_memory(cell: Cell) -> float:
    """Peak resident bytes one training step of ``cell`` adds (``nan`` where it cannot be measured), in a fresh
    process with one thread (``nalaformer.bench.memory.peak_memory_bytes``): measured in the process that trained
    the cell, a step would reuse heap memory freed by training, unseen by the resident set.
    """
    from nalaformer.bench.memory import peak_memory_bytes

    return peak_memory_bytes("nalaformer.reproduce.small_training:training_step_case", asdict(cell), threads=1)


def _cell_entry(cell: Cell, path: str, memory: bool) -> dict[str, Any]:
    """Runs in a worker: train, measure, write the record (failures come back as records with an error)."""
    from nalaformer.reporting import write_json

    try:
        record = run_cell(cell)
        if memory:
            record["step_peak_bytes"] = training_step_memory(cell)
    except Exception as error:  # the section lists every failed cell with its reason
        return {"cell": asdict(cell), "name": cell.name, "error": f"{type(error).__name__}: {error}"}
    write_json(record, Path(path))
    return record


def _same_recipe(saved: Any, cell: Cell, written: float | None = None) -> bool:
    """Whether a record's ``cell`` is ``cell``: every field equal, lambda included (a record without one: see
    :func:`_recorded_lam`, ``written`` being its file's modification time), and the data settings both name equal
    (the data file's ``path`` aside: a folder may be moved; an estimate's cells carry only the sizes)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("data"), dict):
        return False
    planned = asdict(cell)
    if _recorded_lam(saved, cell.mixer, written) != planned.pop("lam"):
        return False
    if any(saved.get(key) != value for key, value in planned.items() if key != "data"):
        return False
    shared = (set(saved["data"]) & set(cell.data)) - {"path"}
    return all(saved["data"][key] == cell.data[key] for key in shared)


def finished_record(path: Path, cell: Cell) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` when ``path`` holds a finished run of ``cell``, else ``(None, why)`` (``why`` is ``None``
    when there is no file). Not trusted, so the cell is trained again: a file that does not parse (cut while it was
    written or copied), a record without a finite accuracy, and a record of another recipe (a folder of another mode,
    a plan changed since, or a mixer's lambda other than the plan's)."""
    import json

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"not a whole JSON file ({type(error).__name__})"
    if not isinstance(record, dict) or record.get("name") != cell.name:
        return None, "not this cell's record"
    accuracy = record.get("accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        return None, "no finite accuracy"
    if not _same_recipe(record.get("cell"), cell, Path(path).stat().st_mtime):
        return None, "trained with another recipe than this plan's"
    return record, None


def run_cells(
    cells: list[Cell],
    folder: Path,
    *,
    workers: int,
    memory: bool = False,
    progress: bool = False,
    train: bool = True,
    only: set[str] | None = None,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Every finished cell's record, training the cells without a finished record in ``folder/<cell.name>.json``
    (:func:`finished_record`) in the order of ``cells``, ``workers`` at a time (one thread each, spawned processes;
    with ``workers <= 1`` one after the other in this process). A finished cell is never trained again, so an
    interrupted or partial run continues where it stopped. Failed cells come back with ``error`` (and no file).

    Args:
        train: ``False``: train nothing, return the finished records (a report of a partial run).
        only: when given, train only the cells with these names (the others are read if finished).
        deadline: a ``time.monotonic()`` value after which no cell starts (running ones finish).

    Returns:
        the records in the order of ``cells``, for the cells that have one.
    """
    import itertools
    import sys

    from nalaformer.reproduce.workers import map_in_workers

    folder = Path(folder)
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for cell in cells:
        path = folder / f"{cell.name}.json"
        record, why = finished_record(path, cell)
        if record is not None:
            records[cell.name] = record
        elif train and (only is None or cell.name in only):
            if why is not None:
                rejected = path.with_name(path.name + ".rejected")
                print(f"{path}: {why}; training the cell again (the file is kept as {rejected.name})", file=sys.stderr)
                path.replace(rejected)
            pending.append(cell)

    def in_time(_: Cell) -> bool:
        return deadline is None or time.monotonic() < deadline

    if pending and workers <= 1:
        # in this process (tests, tiny runs): no start-up cost. One thread, as in the workers: small models gain
        # nothing from more, and on a busy machine torch's pool spins
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for cell in itertools.takewhile(in_time, pending):
                record = _cell_entry(cell, str(folder / f"{cell.name}.json"), memory)
                records[record["name"]] = record
                if progress:
                    print(f"{cell.name}: {_outcome(record)}", file=sys.stderr, flush=True)
        finally:
            torch.set_num_threads(threads)
    elif pending:
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=len(pending), desc=f"{pending[0].task} cells", unit="cell", dynamic_ncols=True)
            except ImportError:
                bar = None
        try:
            calls = ((c, str(folder / f"{c.name}.json"), memory) for c in itertools.takewhile(in_time, pending))
            for _, record in map_in_workers(_cell_entry, calls, workers=workers):
                records[record["name"]] = record
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return [records[cell.name] for cell in cells if cell.name in records]


def _outcome(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"failed ({record['error']})"
    return f"accuracy {record['accuracy']:.3f}, {record['cpu_seconds']:.0f} CPU-s"


def write_section(
    path: Path, mode: str, plan: Any, cells: list[Cell], records: list[dict[str, Any]], summary: dict[str, Any]
) -> dict[str, Any]:
    """A boundary section's summary from :func:`run_cells`' ``records``: its mode and plan, the cells without a record
    (``not_run``), ``summary``'s entries and the failed cells; written by :func:`write_summary`."""
    done = {r["name"] for r in records}
    result = {
        "mode": mode,
        "plan": asdict(plan),
        "not_run": [c.name for c in cells if c.name not in done],
        **summary,
        "failures": [{"name": r["name"], "error": r["error"]} for r in records if "error" in r],
    }
    return write_summary(result, path)


def write_summary(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write a section's summary unless the file already holds it (a resumed, finished study rewrites nothing);
    returns the summary as read back (JSON types)."""
    import json

    from nalaformer.reporting import read_json, to_json, write_json

    fresh = json.loads(json.dumps(to_json(result)))
    if read_json(path) != fresh:
        write_json(fresh, path)
    return fresh
