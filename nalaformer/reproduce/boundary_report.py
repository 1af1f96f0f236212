"""Figures and Markdown of the boundary sections (recall grid and long-range tasks), from their JSON only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nalaformer.reporting import load_pyplot, save_figure
from nalaformer.reproduce.boundary_stats import calls
from nalaformer.reproduce.results import fmt, table_lines


def _pm(entry: dict[str, Any]) -> str:
    text = fmt(entry["mean"])
    if entry.get("std") is not None:
        text += f" ± {fmt(entry['std'])}"
    return f"{text} (n={entry['n']})"


def _seeds_text(plan: dict[str, Any], subset_key: str, noun: str) -> str:
    """``"seeds [0, 1, 2]"``, or with a seed subset ``"seeds [0, 1, 2] for width 64, seed 0 alone elsewhere"``."""
    seeds = list(plan["seeds"])
    subset = plan.get(subset_key)
    if not subset or len(seeds) < 2:
        return f"seeds {seeds}"
    names = ", ".join(str(x) for x in subset)
    return f"seeds {seeds} for {noun} {names}, seed {seeds[0]} alone for the other {noun}s"


def _recall_seeds_text(plan: dict[str, Any]) -> str:
    """``"seeds [0, 1, 2]"``, or with seed subsets ``"seeds [0, 1, 2] for width 64 and mixers a, b; seed 0 alone for
    the other cells"``."""
    seeds = list(plan["seeds"])
    parts = [
        f"{noun} {', '.join(str(x) for x in plan[key])}"
        for key, noun in (("seed_widths", "width"), ("seed_mixers", "mixers"))
        if plan.get(key)
    ]
    if plan.get("seed_settings"):
        parts.append(f"settings {', '.join(f'T={s[0]} P={s[1]}' for s in plan['seed_settings'])}")
    if not parts or len(seeds) < 2:
        return f"seeds {seeds}"
    return f"seeds {seeds} for {' and '.join(parts)}; seed {seeds[0]} alone for the other cells"


def _settings(grid: dict[str, Any]) -> list[tuple[int, int]]:
    return sorted({(r["seq_len"], r["pairs"]) for r in grid["rows"]})


def _planned_widths(grid: dict[str, Any]) -> list[int]:
    """The plan's widths and any other width that ran, in ascending order."""
    return sorted(set(grid.get("plan", {}).get("widths") or []) | {r["width"] for r in grid["rows"]})


def recall_not_run_lines(grid: dict[str, Any]) -> list[str]:
    """A sentence naming the planned settings, widths and mixers of which no cell ran (none: no line)."""
    plan = grid.get("plan") or {}
    settings = [tuple(s) for s in plan.get("settings") or []]
    parts = []
    for noun, planned, ran, text in (
        ("settings", settings, set(_settings(grid)), lambda s: f"T={s[0]} P={s[1]}"),
        ("widths", list(plan.get("widths") or []), {r["width"] for r in grid["rows"]}, str),
        ("mixers", list(plan.get("mixers") or []), {r["mixer"] for r in grid["rows"]}, str),
    ):
        missing = [text(x) for x in planned if x not in ran]
        if missing:
            parts.append(f"{noun if len(missing) > 1 else noun[:-1]} {', '.join(missing)}")
    if not parts:
        return []
    return [f"No cell run yet of the planned {'; '.join(parts)} (the tables hold no result of them).", ""]


def _mixers(grid: dict[str, Any]) -> list[str]:
    planned = grid.get("plan", {}).get("mixers") or []
    present = {r["mixer"] for r in grid["rows"]}
    return [m for m in planned if m in present] + sorted(present - set(planned))


def figure_heatmaps(out_dir: Path, grid: dict[str, Any]) -> str | None:
    """One heatmap per mixer: settings (rows) x widths (columns), colour and text = mean accuracy."""
    if not grid or not grid["rows"]:
        return None
    plt = load_pyplot()
    settings, mixers = _settings(grid), _mixers(grid)
    widths = _planned_widths(grid)
    cells = {(r["seq_len"], r["pairs"], r["mixer"], r["width"]): r for r in grid["rows"]}
    columns = min(5, len(mixers))
    rows = math.ceil(len(mixers) / columns)
    # each cell holds two lines (mean, then ± std or "one seed"); each panel leaves room for its setting labels
    size = (columns * (1.4 + 0.8 * len(widths)), rows * (1.1 + 0.6 * len(settings)))
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    for axis, mixer in zip(axes.flat, mixers):
        values = np.full((len(settings), len(widths)), np.nan)
        for i, (seq_len, pairs) in enumerate(settings):
            for j, width in enumerate(widths):
                entry = cells.get((seq_len, pairs, mixer, width))
                if entry is not None and entry["mean"] is not None:
                    values[i, j] = entry["mean"]
                    # the seeds behind each cell: a one-seed value has no noise estimate
                    spread = f"± {entry['std']:.2f}" if entry["std"] is not None else "one seed"
                    axis.text(j, i, f"{entry['mean']:.2f}\n{spread}", ha="center", va="center", fontsize=6)
                else:
                    axis.text(j, i, "not run", ha="center", va="center", fontsize=6, color="gray")
        axis.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        axis.set_title(mixer, fontsize=9)
        axis.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
        axis.set_yticks(range(len(settings)), [f"T={t} P={p}" for t, p in settings], fontsize=7)
        axis.set_xlabel("width", fontsize=7)
    for axis in list(axes.flat)[len(mixers) :]:
        axis.axis("off")
    figure.suptitle("MQAR validation accuracy (mean ± std over seeds; colour: mean, 0 to 1)", fontsize=10)
    return save_figure(figure, Path(out_dir) / "recall_heatmaps.png").name


def byte_ticks(values: list[float]) -> list[float]:
    """Round tick positions for a log axis over ``values``: the coarsest of 1, 1-3, 1-2-5 and 1-1.5-2-3-5-7 per
    decade that puts at least two ticks in the range (within 15%), else the two ends. A range under a decade has no
    power of ten inside it, so matplotlib's own log ticks leave it unlabelled or print its minor labels side by side."""
    low, high = min(values), max(values)
    if low <= 0:
        raise ValueError(f"byte_ticks: values must be positive, got {low}")
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [m * 10.0**e for e in decades for m in subs if low / 1.15 <= m * 10.0**e <= high * 1.15]
        if len(ticks) >= 2:
            return ticks
    return sorted({float(f"{low:.3g}"), float(f"{high:.3g}")})


def byte_label(value: float) -> str:
    """``20000`` -> ``"20k"``, ``1500000`` -> ``"1.5M"``, ``512`` -> ``"512"``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def byte_axis_labels(axis: Any, values: list[float]) -> None:
    """Label a log x axis of byte counts at :func:`byte_ticks` only (no minor labels)."""
    from matplotlib.ticker import NullFormatter

    ticks = byte_ticks(values)
    axis.set_xticks(ticks, [byte_label(t) for t in ticks])
    axis.xaxis.set_minor_formatter(NullFormatter())


def figure_frontier(out_dir: Path, grid: dict[str, Any]) -> str | None:
    """Accuracy against the decoding state in bytes (one line per mixer through its widths), one panel per setting;
    the dashed line is the frontier's threshold."""
    if not grid or not grid["rows"]:
        return None
    plt = load_pyplot()
    settings = _settings(grid)
    figure, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
    for axis, (seq_len, pairs) in zip(axes[0], settings):
        for mixer in _mixers(grid):
            line = sorted(
                (r for r in grid["rows"] if (r["seq_len"], r["pairs"], r["mixer"]) == (seq_len, pairs, mixer)),
                key=lambda r: r["state_bytes"],
            )
            points = [r for r in line if r["mean"] is not None]
            if not points:
                continue
            style = "-" if mixer.startswith("nala") or mixer == "softmax" else "--"
            axis.errorbar(
                [r["state_bytes"] for r in points],
                [r["mean"] for r in points],
                yerr=[r["std"] or 0.0 for r in points],
                fmt=style,
                marker="o",
                markersize=3,
                capsize=2,
                label=mixer,
            )
        axis.axhline(grid["threshold"], color="black", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        byte_axis_labels(
            axis, [r["state_bytes"] for r in grid["rows"] if (r["seq_len"], r["pairs"]) == (seq_len, pairs)]
        )
        axis.set_ylim(0.0, 1.02)
        axis.set_xlabel("decoding state (bytes, batch 1, fp32)")
        axis.set_ylabel("MQAR accuracy")
        axis.set_title(f"T={seq_len}, {pairs} key-value pairs", fontsize=9)
    axes[0][0].legend(fontsize=6, ncol=2)
    return save_figure(figure, Path(out_dir) / "recall_frontier.png").name


def figure_long_range(out_dir: Path, long_range: dict[str, Any]) -> str | None:
    """Accuracy per mixer and task: points with seed error bars on a zero-based axis (marked "one seed" when so)."""
    tasks = [(name, entry) for name, entry in (long_range or {}).get("tasks", {}).items() if entry["mixers"]]
    if not tasks:
        return None
    plt = load_pyplot()
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.4), squeeze=False)
    for axis, (name, entry) in zip(axes[0], tasks):
        mixers = list(entry["mixers"])
        stats = [entry["mixers"][m] for m in mixers]
        axis.errorbar(
            range(len(mixers)),
            [s["mean"] for s in stats],
            yerr=[s["std"] or 0.0 for s in stats],
            fmt="o",
            capsize=3,
        )
        axis.set_xticks(range(len(mixers)), mixers, rotation=50, ha="right", fontsize=7)
        axis.set_ylim(0.0, 1.0)
        axis.set_ylabel("validation accuracy")
        axis.set_title(f"{name} (T={entry['seq_len']}), {seed_count_text([s['n'] for s in stats])}")
    return save_figure(figure, Path(out_dir) / "long_range.png").name


def seed_count_text(counts: list[int]) -> str:
    """``"one seed"``, ``"3 seeds"`` or, when the mixers differ, ``"1-3 seeds"``."""
    low, high = min(counts), max(counts)
    if low == high:
        return "one seed" if high < 2 else f"{high} seeds"
    return f"{low}-{high} seeds"


def boundary_figures(out_dir: Path, grid: dict[str, Any] | None, long_range: dict[str, Any] | None) -> dict:
    """Every figure of the boundary sections (an empty dict without matplotlib: the tables carry every number)."""
    try:
        return {
            "heatmaps": figure_heatmaps(out_dir, grid) if grid else None,
            "frontier": figure_frontier(out_dir, grid) if grid else None,
            "long_range": figure_long_range(out_dir, long_range) if long_range else None,
        }
    except ImportError as error:  # the message names the plot extra
        print(f"boundary figures skipped: {error}")
        return {}


def recall_best_rows(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The best mixer of every (setting, width) of the grid, with the seed-noise call."""
    rows = []
    for seq_len, pairs in _settings(grid):
        for width in sorted({r["width"] for r in grid["rows"]}):
            entries = {
                r["mixer"]: r for r in grid["rows"] if (r["seq_len"], r["pairs"], r["width"]) == (seq_len, pairs, width)
            }
            rows += calls(f"MQAR T={seq_len} P={pairs} width {width}", entries)
    return rows


def summary_lines(grid: dict[str, Any] | None, long_range: dict[str, Any] | None) -> list[str]:
    """The table "task -> best mixer, margin, seeds" over both sections."""
    rows = (recall_best_rows(grid) if grid else []) + ((long_range or {}).get("best") or [])
    if not rows:
        return []
    table = [
        [r["task"], r["best"], r["runner_up"], fmt(r["margin"]), fmt(r["noise"]), str(r["seeds"]), r["verdict"]]
        for r in rows
    ]
    lines = [
        "Best mixer per task, its margin over the runner-up, and the seed noise: twice the standard error of the "
        "difference of the two means, 2 sqrt(s_a^2 / n_a + s_b^2 / n_b). A lead is called only when the margin "
        "exceeds that noise, with at least two seeds on each side.",
        "",
    ]
    return lines + table_lines(["task", "best", "runner-up", "margin", "noise (2 SE)", "seeds", "call"], table)


def recall_lines(grid: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    plan = grid["plan"]
    lines = [
        f"MQAR, {plan['layers']} layers, {plan['heads']} heads, vocabulary {plan['vocab']}; {plan['steps']} steps, "
        f"batch {plan['batch_size']}, lr {plan['lr']}; {_recall_seeds_text(plan)}; accuracy per "
        "query on "
        f"{plan['val_examples']} validation sequences. A setting counts as solved at mean accuracy >= "
        f"{grid['threshold']}.",
        "",
    ]
    settings, widths = _settings(grid), _planned_widths(grid)
    cells = {(r["seq_len"], r["pairs"], r["mixer"], r["width"]): r for r in grid["rows"]}
    # the widths a setting runs when the plan names them (setting_widths), else every width
    setting_widths = {tuple(s): set(w) for s, w in plan.get("setting_widths") or []}
    table = []
    for mixer in _mixers(grid):
        for seq_len, pairs in settings:
            entries = [cells.get((seq_len, pairs, mixer, w)) for w in widths]
            if not any(entries):
                continue
            planned = setting_widths.get((seq_len, pairs), set(widths))
            texts = [_pm(e) if e else "not run" if w in planned else "not planned" for e, w in zip(entries, widths)]
            table.append([mixer, f"T={seq_len} P={pairs}", *texts])
    lines += table_lines(["mixer", "setting", *(f"width {w}" for w in widths)], table)
    lines += recall_not_run_lines(grid)
    frontier = [
        [f"T={f['seq_len']} P={f['pairs']}", f["mixer"], *frontier_cells(f), fmt(f["best_accuracy"])]
        for f in grid["frontier"]
    ]
    lines += [
        f"Frontier: the smallest width whose mean accuracy reaches {grid['threshold']}, and the decoding state "
        "it carries (bytes, batch 1, fp32: a linear mixer's recurrent state, softmax's KV cache at T). Where a "
        'planned width has not run, the frontier is bounded, not placed: "<width> or less" when a smaller width '
        'is missing, "not reached at the widths run" when no width run reaches it.',
        "",
    ]
    lines += table_lines(["setting", "mixer", "smallest width", "state bytes", "best accuracy"], frontier)
    for key, caption in (("heatmaps", "MQAR heatmaps"), ("frontier", "MQAR frontier")):
        if figures.get(key):
            lines += [f"![{caption}]({figures[key]})", ""]
    return lines


def frontier_cells(row: dict[str, Any]) -> list[str]:
    """The frontier table's "smallest width" and "state bytes" of one row, bounded where a planned width has not run
    (``widths_not_run``; rows written before it existed: none missing)."""
    missing = row.get("widths_not_run") or []
    smallest, state = row["smallest_width"], row["state_bytes"]
    if smallest is None:
        if not missing:
            return ["not reached", "n/a"]
        return [f"not reached at the widths run ({', '.join(str(w) for w in missing)} not run)", "n/a"]
    below = [w for w in missing if w < smallest]
    if not below:
        return [str(smallest), fmt(state) if state is not None else "n/a"]
    return [
        f"{smallest} or less ({', '.join(str(w) for w in below)} not run)",
        f"at most {fmt(state)}" if state is not None else "n/a",
    ]


def long_range_not_run_lines(long_range: dict[str, Any]) -> list[str]:
    """A sentence naming the planned tasks with no run, and per task run the planned mixers with none."""
    plan = long_range.get("plan") or {}
    ran = long_range.get("tasks") or {}
    parts = []
    for task in plan.get("tasks") or []:
        name = task["name"] if isinstance(task, dict) else task.name  # JSON, or a plan not yet serialised
        if name not in ran:
            parts.append(f"{name} (no mixer)")
            continue
        planned = (task.get("mixers") if isinstance(task, dict) else task.mixers) or plan.get("mixers") or []
        missing = [m for m in planned if m not in ran[name]["mixers"]]
        if missing:
            parts.append(f"{name}: {', '.join(missing)}")
    if not parts:
        return []
    return [f"Not run yet: {'; '.join(parts)} (the table holds no result of them).", ""]


def long_range_lines(long_range: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    plan = long_range["plan"]
    lines = [
        f"One recipe for every task and mixer: width {plan['width']}, {plan['layers']} layer(s), {plan['heads']} "
        f"heads, mean-pooled states and a linear head; {plan['steps']} steps, batch {plan['batch_size']}, lr "
        f"{plan['lr']}; {_seeds_text(plan, 'seeded_mixers', 'mixer')}. Time per training step (median, one thread) and "
        "the peak memory one training step adds (resident set).",
        "",
    ]
    table = []
    for name, entry in long_range["tasks"].items():
        for mixer, stats in entry["mixers"].items():
            memory = stats["step_peak_bytes"]
            table.append(
                [
                    name,
                    entry["source"],
                    str(entry["seq_len"]),
                    mixer,
                    _pm(stats),
                    fmt(1000 * stats["seconds_per_step"], 1) if stats["seconds_per_step"] is not None else "n/a",
                    fmt(memory / 2**20, 1) if memory is not None else "n/a",
                ]
            )
    lines += table_lines(["task", "data", "T", "mixer", "accuracy", "ms / step", "step memory (MiB)"], table)
    lines += long_range_not_run_lines(long_range)
    if figures.get("long_range"):
        lines += [f"![long-range tasks]({figures['long_range']})", ""]
    return lines


def boundary_lines(
    grid: dict[str, Any] | None,
    long_range: dict[str, Any] | None,
    figures: dict[str, str | None],
    level: str = "##",
    number: str = "",
) -> list[str]:
    """The Markdown of the boundary sections (what exists of them), headed ``{level} {number}Where NaLa holds``."""
    if not grid and not long_range:
        return []
    lines = [f"{level} {number}Where NaLa holds: recall grid and long-range tasks", ""]
    lines += summary_lines(grid, long_range)
    if grid:
        lines += [f"{level}# Recall-difficulty grid (MQAR)", "", *recall_lines(grid, figures)]
    if long_range:
        lines += [f"{level}# Long-range tasks", "", *long_range_lines(long_range, figures)]
    not_run = [*(grid or {}).get("not_run", []), *(long_range or {}).get("not_run", [])]
    if not_run:
        lines += [
            f"Planned cells not run ({len(not_run)}; the tables above hold only the cells that ran):",
            "",
            *(f"- {name}" for name in not_run),
            "",
        ]
    failures = [*(grid or {}).get("failures", []), *(long_range or {}).get("failures", [])]
    if failures:
        lines += ["Runs that failed:", "", *(f"- {f['name']}: {f['error']}" for f in failures), ""]
    return lines
