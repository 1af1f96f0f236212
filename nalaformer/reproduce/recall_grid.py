"""The recall-difficulty grid: MQAR accuracy of every mixer over sequence length x key-value pairs x model width.

Softmax attention keeps every key in its KV cache, so its recall barely depends on the width; a linear mixer keeps a
fixed-size state (``feature dim x head dim`` per head), so as pairs grow and the width shrinks it runs out of room.
The grid is sized to straddle that line (as Zoology's MQAR figures do), and the frontier (the smallest width whose
mean accuracy reaches :data:`SOLVED`) is given with the state size in bytes each mixer carries at that width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nalaformer.reproduce.small_training import Cell, run_cells, write_section

SOLVED = 0.9  # the accuracy at which a setting counts as solved (the frontier's threshold)

RECALL_MIXERS = (
    "softmax",
    "nala",
    "nala_running_t",
    "nala_learned_t",
    "sign_split_power",
    "elu",
    "relu",
    "hedgehog",
    "deltanet",
    "gated_deltanet",
    "nala_deltanet",
    "nala_gated_deltanet",
)
# the mixers every seed of the map covers: softmax, NaLa and its norm-aware variant, its fixed-exponent ablation, the
# simplest linear baseline and the two gated delta rules
KEY_MIXERS = (
    "softmax",
    "nala",
    "nala_running_t",
    "sign_split_power",
    "elu",
    "gated_deltanet",
    "nala_gated_deltanet",
)


@dataclass(frozen=True)
class RecallGridPlan:
    """What the grid trains: every (setting, width, mixer, seed), one :class:`Cell` each.

    Attributes:
        settings: ``(sequence length, key-value pairs)`` pairs.
        widths: model widths (2 layers, ``heads`` heads).
        mixers, seeds: every mixer at every cell, with every seed (but see ``seed_widths``).
        seed_widths, seed_mixers: when set, the seeds after the first run only at these widths and mixers.
        seed_settings: when set, the seeds after the first run only at these settings.
        setting_widths: ``(setting, widths)`` pairs: the widths a setting runs (a setting not named runs every
            width of ``widths``).
        steps, batch_size, lr: the recipe (the same for every cell).
        vocab: MQAR vocabulary (keys in its lower half, values in its upper half).
        train_examples, val_examples: sequences per cell (training: drawn per seed; validation: shared).
    """

    settings: tuple[tuple[int, int], ...]
    widths: tuple[int, ...]
    mixers: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    vocab: int
    train_examples: int
    val_examples: int
    layers: int = 2
    heads: int = 2
    seed_widths: tuple[int, ...] | None = None
    seed_mixers: tuple[str, ...] | None = None
    seed_settings: tuple[tuple[int, int], ...] | None = None
    setting_widths: tuple[tuple[tuple[int, int], tuple[int, ...]], ...] | None = None

    def __post_init__(self) -> None:
        if self.seed_widths is not None and not set(self.seed_widths) <= set(self.widths):
            raise ValueError(f"RecallGridPlan.seed_widths={self.seed_widths} must be among widths={self.widths}")
        if self.seed_mixers is not None and not set(self.seed_mixers) <= set(self.mixers):
            raise ValueError(f"RecallGridPlan.seed_mixers={self.seed_mixers} must be among mixers={self.mixers}")
        if self.seed_settings is not None and not set(self.seed_settings) <= set(self.settings):
            raise ValueError(
                f"RecallGridPlan.seed_settings={self.seed_settings} must be among settings={self.settings}"
            )
        for setting, widths in self.setting_widths or ():
            if setting not in self.settings or not widths or not set(widths) <= set(self.widths):
                raise ValueError(
                    f"RecallGridPlan.setting_widths: {setting} -> {widths} must name one of settings={self.settings} "
                    f"and a non-empty subset of widths={self.widths}"
                )

    def widths_at(self, setting: tuple[int, int]) -> tuple[int, ...]:
        """The widths ``setting`` runs (``setting_widths``; every width when it does not name the setting)."""
        return dict(self.setting_widths or ()).get(setting, self.widths)

    def seeds_at(self, setting: tuple[int, int]) -> tuple[int, ...]:
        """The seeds ``setting`` runs near the frontier (``seed_settings``; every seed when unset)."""
        return self.seeds if self.seed_settings is None or setting in self.seed_settings else self.seeds[:1]

    def near_frontier(self, width: int, mixer: str) -> bool:
        """Whether ``(width, mixer)`` gets every seed (``seed_widths`` / ``seed_mixers``; every cell when unset)."""
        return (self.seed_widths is None or width in self.seed_widths) and (
            self.seed_mixers is None or mixer in self.seed_mixers
        )

    def cells(self) -> list[Cell]:
        """Every cell, the most informative first, so a run cut short (or one limited by ``--cells`` or
        ``--max-minutes``) holds whole comparisons: first the cells near the frontier (``seed_widths`` x
        ``seed_mixers``) with every seed of their setting (``seeds_at``), setting by setting (each setting's comparison
        over seeds complete before the next one starts); then the first seed alone over the rest of the grid (the
        coarse pass). Within a setting: seeds, then widths (``widths_at``) and mixers in the plan's order."""
        near = [
            (setting, seed, width, mixer)
            for setting in self.settings
            for seed in self.seeds_at(setting)
            for width in self.widths_at(setting)
            for mixer in self.mixers
            if self.near_frontier(width, mixer)
        ]
        coarse = [
            (setting, self.seeds[0], width, mixer)
            for setting in self.settings
            for width in self.widths_at(setting)
            for mixer in self.mixers
            if not self.near_frontier(width, mixer)
        ]
        return [self._cell(setting, seed, width, mixer) for setting, seed, width, mixer in near + coarse]

    def _cell(self, setting: tuple[int, int], seed: int, width: int, mixer: str) -> Cell:
        seq_len, pairs = setting
        data = {
            "seq_len": seq_len,
            "pairs": pairs,
            "vocab": self.vocab,
            "train_examples": self.train_examples,
            "val_examples": self.val_examples,
        }
        return Cell("mqar", mixer, width, self.layers, self.heads, self.steps, self.batch_size, self.lr, seed, data)


def recall_grid_plan(mode: str) -> RecallGridPlan:
    """The grid of ``mode``.

    ``"tiny"`` (tests, seconds) and ``"quick"`` (a slice: one setting, two widths, softmax and NaLa, 40 steps) show
    the section's outputs. ``"reduced"`` is the first pass, committed under ``benchmarks/boundary-reduced``: T = 32
    with 4 pairs, widths 16 and 64, four mixers, one seed, 600 steps. ``"map"`` is the measured map committed under
    ``benchmarks/boundary-map``: the same setting and recipe, widths 32 (coarse pass, seed 0) and 64 (near the
    frontier: seeds 0, 1, 2), the seven :data:`KEY_MIXERS`; 28 cells, about 27 CPU-minutes.

    ``"full"`` sizes the grid for the boundary sections' 3-hour budget on 2 cores, from the step times measured at
    these shapes (``nalaformer.reproduce.boundary_budget``; ``python -m nalaformer.reproduce.boundary --mode full
    --estimate`` prints it): 3 settings (T = 32 with 4 and 8 pairs: the pairs axis; T = 64 with 8 pairs: the length
    axis), all 12 mixers with seed 0 at width 64 and, at the two T = 32 settings, at width 32 too; seeds 1 and 2 for
    the seven key mixers at width 64 at the two T = 32 settings: 88 cells of 800 steps, 28-251 CPU-s each, about 2.2
    CPU-hours by the table. It was trimmed from 114 cells by what its first cells measured: at width 32 every mixer,
    softmax included, stayed at 0.24-0.30 on T = 32 with 4 pairs (the easiest setting), so the harder T = 64 setting
    runs width 64 alone; and the three seeds go where the width-64 accuracies straddle the 0.9 line (T = 32: softmax
    0.98 with 4 pairs, 0.21-1.00 with 8), not to T = 64 with 8 pairs, longer than the 8-pair setting where every
    linear mixer already stays at 0.14-0.22 on three seeds. Every mixer at every seed would take 216 cells.

    In both, the cells near the frontier come first, setting by setting with all three seeds
    (:meth:`RecallGridPlan.cells`): full mode's first 21 cells are the seven key mixers at T = 32, 4 pairs, width 64,
    seeds 0, 1 and 2, a comparison over seeds on their own.
    """
    if mode == "tiny":
        return RecallGridPlan(((16, 2),), (16,), ("softmax", "nala"), (0,), 2, 8, 3e-3, 16, 32, 16)
    if mode == "quick":
        return RecallGridPlan(((32, 4),), (16, 32), ("softmax", "nala"), (0,), 40, 32, 3e-3, 32, 1280, 64)
    if mode == "reduced":
        mixers = ("softmax", "nala", "elu", "gated_deltanet")
        return RecallGridPlan(((32, 4),), (16, 64), mixers, (0,), 600, 64, 3e-3, 32, 38_400, 256)
    if mode == "map":
        return RecallGridPlan(
            ((32, 4),), (64, 32), KEY_MIXERS, (0, 1, 2), 600, 64, 3e-3, 32, 38_400, 256, seed_widths=(64,)
        )
    if mode == "full":
        settings = ((32, 4), (32, 8), (64, 8))
        return RecallGridPlan(
            settings, (64, 32), RECALL_MIXERS, (0, 1, 2), 800, 64, 3e-3, 32, 51_200, 256,
            seed_widths=(64,), seed_mixers=KEY_MIXERS,
            seed_settings=settings[:2], setting_widths=((settings[2], (64,)),),
        )  # fmt: skip
    raise ValueError(f"recall_grid_plan: mode must be tiny, quick, reduced, map or full, got {mode!r}")


def summarise_grid(records: list[dict[str, Any]], widths: tuple[int, ...] = ()) -> dict[str, Any]:
    """Mean, std and seed count per (setting, mixer, width), and the frontier per (setting, mixer).

    ``widths``: the plan's widths. A frontier row lists those without a result as ``widths_not_run``, and is
    ``settled`` only when none of them could move it: no width below the smallest that reaches :data:`SOLVED`, or
    (none reaching it) no width at all, is missing. A partial grid draws no frontier from widths it has not run.
    """
    from nalaformer.reproduce.seeds import mean_std

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        if "error" in record:
            continue
        cell = record["cell"]
        key = (cell["data"]["seq_len"], cell["data"]["pairs"], cell["mixer"], cell["width"])
        groups.setdefault(key, []).append(record)
    rows = []
    for (seq_len, pairs, mixer, width), group in groups.items():
        stats = mean_std([r["accuracy"] for r in group])
        rows.append(
            {
                "seq_len": seq_len,
                "pairs": pairs,
                "mixer": mixer,
                "width": width,
                **stats,
                "seeds": sorted(r["cell"]["seed"] for r in group),
                "state_bytes": group[0]["state_bytes"],
                "cpu_seconds": sum(r["train_seconds"] for r in group) / len(group),
            }
        )
    frontier = []
    for seq_len, pairs, mixer in sorted({(r["seq_len"], r["pairs"], r["mixer"]) for r in rows}):
        line = sorted(
            (r for r in rows if (r["seq_len"], r["pairs"], r["mixer"]) == (seq_len, pairs, mixer)),
            key=lambda r: r["width"],
        )
        solved = [r for r in line if r["mean"] is not None and r["mean"] >= SOLVED]
        missing = sorted(set(widths) - {r["width"] for r in line if r["mean"] is not None})
        smallest = solved[0]["width"] if solved else None
        frontier.append(
            {
                "seq_len": seq_len,
                "pairs": pairs,
                "mixer": mixer,
                "smallest_width": smallest,
                "state_bytes": solved[0]["state_bytes"] if solved else None,
                "best_accuracy": max((r["mean"] for r in line if r["mean"] is not None), default=None),
                "widths_not_run": missing,
                "settled": not (missing if smallest is None else [w for w in missing if w < smallest]),
            }
        )
    return {"rows": rows, "frontier": frontier, "threshold": SOLVED}


def recall_section(
    out_dir: Path,
    mode: str,
    *,
    workers: int = 1,
    progress: bool = False,
    train: bool = True,
    only: set[str] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train the grid's missing cells into ``results/recall/`` and write ``results/recall_grid.json`` (with
    ``train=False``: summarise the cells already trained, and list the others as ``not_run``; ``only`` and
    ``deadline`` as in :func:`nalaformer.reproduce.small_training.run_cells`)."""
    plan = recall_grid_plan(mode)
    cells = plan.cells()
    folder = Path(out_dir) / "results" / "recall"
    records = run_cells(cells, folder, workers=workers, progress=progress, train=train, only=only, deadline=deadline)
    path = Path(out_dir) / "results" / "recall_grid.json"
    return write_section(path, mode, plan, cells, records, summarise_grid(records, plan.widths))
