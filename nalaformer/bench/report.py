"""Result files (CSV + PNG named by device and torch version), the speed and memory targets, and Markdown tables.

File names follow ``<suite>-<device>-torch<version>.<ext>``, e.g. ``operators-cpu-xeon-2c-torch2.13.0.csv``; every CSV
row also carries the device, thread count, torch version and dtype, so a file read on its own says where it came from.
"""

from __future__ import annotations

import csv
import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nalaformer.reporting import load_pyplot, markdown_table, save_figure


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device | str, threads: int | None = None) -> str:
    """A short file-name-safe device name: ``cpu-xeon-2c``, ``cpu-epyc-16c``, ``cuda-h100``."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        match = re.search(r"(h100|h200|a100|a6000|l4|l40s?|t4|v100|rtx\s*\d+|[a-z]+\d+)", name)
        return "cuda-" + re.sub(r"\s+", "", match.group(1) if match else name.split()[-1])
    model = _cpu_model().lower()
    family = next((word for word in ("epyc", "xeon", "ryzen", "core", "apple", "graviton") if word in model), "cpu")
    cores = threads if threads is not None else torch.get_num_threads()
    return f"cpu-{family}-{cores}c"


def torch_version() -> str:
    """``torch.__version__`` without the local build tag (``2.13.0+cpu`` -> ``2.13.0``)."""
    return torch.__version__.split("+")[0]


def result_path(
    out_dir: Path | str, suite: str, device: torch.device | str, ext: str, threads: int | None = None
) -> Path:
    """``out_dir / f"{suite}-{device_slug}-torch{version}.{ext}"``."""
    return Path(out_dir) / f"{suite}-{device_slug(device, threads)}-torch{torch_version()}.{ext}"


def metadata(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The columns every result row carries."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return {
        "device": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
    }


def write_csv(rows: Sequence[dict[str, Any]], path: Path | str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``rows`` (plus the ``extra`` columns on every row) as CSV; floats with 6 significant digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a row's own column (e.g. the thread count of a model suite's row) wins over the run-wide one
    rows = [{**(extra or {}), **row} for row in rows]
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


@dataclass(frozen=True)
class Target:
    """One performance target (a speed-up, a flat memory or latency curve): the goal and the measured figure."""

    name: str
    goal: str
    measured: float
    met: bool | None
    unit: str = "x"

    def measured_text(self) -> str:
        if math.isnan(self.measured):
            return "not measured"
        return f"{self.measured:.3g}{self.unit}"


def _find(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def _at_least(name: str, value: float | None, threshold: float) -> Target:
    value = math.nan if value is None else float(value)
    met = None if math.isnan(value) else value >= threshold
    return Target(name, f">= {threshold:g}x", value, met)


def _flatness(name: str, values: Sequence[float], tolerance: float) -> Target:
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return Target(name, f"within {tolerance:.0%}", math.nan, None, unit="")
    spread = max(values) / min(values) - 1.0
    return Target(name, f"max/min - 1 <= {tolerance:.0%}", 100 * spread, spread <= tolerance, unit="%")


def evaluate_targets(operators: Sequence[dict[str, Any]] = (), roofline: Sequence[dict[str, Any]] = ()) -> list[Target]:
    """The operator targets (speed-ups, flat memory, FLOP/s), each with the measured figure.

    ``nan`` / ``met=None`` where not measured. The model-level targets (decoding included) are in
    :mod:`nalaformer.bench.model_report`.
    """
    targets = []

    def operator(causal: bool, seq_len: int, key: str, method: str = "nala_rope") -> float | None:
        row = _find(operators, method=method, causal=causal, seq_len=seq_len, **{"pass": "fwd+bwd"})
        return None if row is None else row[key]

    # with RoPE: what every model layer runs
    for seq_len, threshold in ((1024, 2), (4096, 10), (16384, 40)):
        name = f"non-causal fwd+bwd with RoPE vs SDPA, T={seq_len}"
        targets.append(_at_least(name, operator(False, seq_len, "speedup_vs_sdpa"), threshold))
    for seq_len, threshold in ((2048, 2), (16384, 15)):
        name = f"causal fwd+bwd with RoPE vs causal SDPA, T={seq_len}"
        targets.append(_at_least(name, operator(True, seq_len, "speedup_vs_sdpa"), threshold))
    for causal in (False, True):
        for seq_len in (4096, 16384):
            ratio = operator(causal, seq_len, "rope_over_plain")
            ratio = math.nan if ratio is None else float(ratio)
            met = None if math.isnan(ratio) else ratio <= 1.25
            name = f"{'causal' if causal else 'non-causal'} fwd+bwd time with RoPE / without, T={seq_len}"
            targets.append(Target(name, "<= 1.25x", ratio, met))
    for causal in (False, True):
        per_token = [
            row["peak_bytes_per_token"]
            for row in operators
            if row["method"] == "nala" and row["causal"] == causal and row["pass"] == "fwd+bwd"
            if 4096 <= row["seq_len"] <= 65536
        ]
        label = "causal" if causal else "non-causal"
        targets.append(_flatness(f"{label} fwd+bwd peak memory per token, T=4k..64k", per_token, 0.15))
    forward = _find(roofline, name="nala non-causal forward")
    fraction = math.nan if forward is None else 100 * forward["fraction_of_matmul"]
    targets.append(
        Target(
            f"NaLa forward FLOP/s vs matmul, T={forward['seq_len'] if forward else 16384}",
            ">= 40%",
            fraction,
            None if math.isnan(fraction) else fraction >= 40,
            unit="%",
        )
    )
    return targets


def targets_markdown(targets: Sequence[Target]) -> str:
    """A Markdown table of the targets: goal, measured, met / missed."""
    rows = []
    for target in targets:
        verdict = "not measured" if target.met is None else ("met" if target.met else "**missed**")
        rows.append([target.name, target.goal, target.measured_text(), verdict])
    return markdown_table(["target", "goal", "measured", ""], rows)


def operators_markdown(rows: Sequence[dict[str, Any]], pass_name: str = "fwd+bwd") -> str:
    """Milliseconds per call and the speed-up over SDPA of each method, one table per mode, for ``pass_name``."""
    blocks = []
    for causal in (False, True):
        selected = [r for r in rows if r["causal"] == causal and r["pass"] == pass_name]
        if not selected:
            continue
        lengths = sorted({r["seq_len"] for r in selected})
        methods = list(dict.fromkeys(r["method"] for r in selected))
        table = []
        for method in methods:
            cells = []
            for seq_len in lengths:
                row = _find(selected, method=method, seq_len=seq_len)
                if row is None or math.isnan(row["median_ms"]):
                    cells.append("–")
                elif math.isnan(row["speedup_vs_sdpa"]) or method == "sdpa":
                    cells.append(f"{row['median_ms']:.3g}")
                elif not math.isnan(row.get("rope_over_plain", math.nan)):
                    ratio = f"{row['speedup_vs_sdpa']:.2g}x, {row['rope_over_plain']:.2f}x no-RoPE time"
                    cells.append(f"{row['median_ms']:.3g} ({ratio})")
                else:
                    cells.append(f"{row['median_ms']:.3g} ({row['speedup_vs_sdpa']:.2g}x)")
            table.append([method, *cells])
        caption = f"{'causal' if causal else 'non-causal'}, {pass_name}: ms (speed-up over SDPA)"
        blocks.append(caption + "\n\n" + markdown_table(["method", *(f"T={t}" for t in lengths)], table))
    return "\n\n".join(blocks)


def compiled_operators_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The compiled operator rows: time, speed-up over SDPA and over the eager method, and the compilation's seconds
    (its first calls of that pass at that length, timed apart)."""
    columns = ["method", "mode", "T", "pass", "ms", "vs SDPA", "vs eager", "compile_s"]
    table = []
    for row in rows:
        if math.isnan(row.get("compile_s", math.nan)):
            continue
        mode = "causal" if row["causal"] else "non-causal"
        cells = [row["median_ms"], row["speedup_vs_sdpa"], row["speedup_vs_eager"], row["compile_s"]]
        formats = ("{:.3g}", "{:.3g}x", "{:.3g}x", "{:.1f}")
        texts = ["–" if math.isnan(value) else form.format(value) for value, form in zip(cells, formats)]
        table.append([row["method"], mode, row["seq_len"], row["pass"], *texts])
    return markdown_table(columns, table)


def plot_operators(rows: Sequence[dict[str, Any]], path: Path | str, title: str = "") -> Path | None:
    """Time (fwd+bwd), speed-up over SDPA and peak memory per token against ``T``, one row of panels per mode."""
    plt = load_pyplot()
    modes = [causal for causal in (False, True) if any(r["causal"] == causal for r in rows)]
    # one colour per method in every panel
    colours = {method: f"C{index % 10}" for index, method in enumerate(dict.fromkeys(r["method"] for r in rows))}
    figure, axes = plt.subplots(len(modes), 3, figsize=(16, 4.6 * len(modes)), squeeze=False)
    for row_axes, causal in zip(axes, modes):
        selected = [r for r in rows if r["causal"] == causal and r["pass"] == "fwd+bwd"]
        label = "causal" if causal else "non-causal"
        for method in dict.fromkeys(r["method"] for r in selected):
            points = sorted((r["seq_len"], r) for r in selected if r["method"] == method)
            style = dict(
                marker="o",
                color=colours[method],
                linewidth=2.4 if method in ("nala", "nala_rope", "sdpa") else 1.2,
                label=method,
            )
            for axis, key in zip(row_axes, ("median_ms", "speedup_vs_sdpa", "peak_bytes_per_token")):
                scale = 1024 if key == "peak_bytes_per_token" else 1
                xs = [t for t, r in points if not math.isnan(r[key])]
                ys = [r[key] / scale for t, r in points if not math.isnan(r[key])]
                if xs and not (key == "speedup_vs_sdpa" and method == "sdpa"):
                    axis.plot(xs, ys, **style)
        for axis, ylabel in zip(row_axes, ("ms (fwd+bwd)", "speed-up over SDPA (x)", "peak KiB per token (fwd+bwd)")):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("sequence length T")
            axis.set_ylabel(ylabel)
            axis.set_title(f"{label}: {ylabel}")
            axis.grid(True, which="both", alpha=0.3)
        row_axes[0].set_yscale("log")
        row_axes[1].set_yscale("log")
        row_axes[1].axhline(1.0, color="black", linewidth=0.8)
        for axis in (row_axes[0], row_axes[2]):
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_series(
    rows: Sequence[dict[str, Any]], x: str, y: str, group: str, path: Path | str, title: str, log_x: bool = True
) -> Path | None:
    """One line per ``group`` value of ``y`` against ``x`` (decoding latency, model throughput)."""
    plt = load_pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r[group] for r in rows):
        points = sorted((r[x], r[y]) for r in rows if r[group] == name and not math.isnan(r[y]))
        if points:
            axis.plot(*zip(*points), marker="o", label=str(name))
    if log_x:
        axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)
