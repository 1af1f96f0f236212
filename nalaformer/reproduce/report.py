"""``report.md`` and its figures, generated from ``results.json`` (no number in the report is typed in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nalaformer.reporting import load_pyplot, save_figure
from nalaformer.reproduce.boundary_report import boundary_figures, boundary_lines
from nalaformer.reproduce.claims import SATURATION_TANH, saturation_words
from nalaformer.reproduce.jobs import run_dir
from nalaformer.reproduce.results import NORM_STATISTICS, collect_results, fmt, table_lines

__all__ = ["collect_results", "write_report"]

SCATTER_MIXERS = ("softmax", "elu", "sign_split_power", "nala")


def _pm(entry: dict[str, Any]) -> str:
    text = fmt(entry["mean"])
    if entry["std"] is not None:
        text += f" ± {fmt(entry['std'])}"
    return f"{text} (n={entry['n']})"


def _first_layer_points(out_dir: Path, task: str, mixer: str, seed: int) -> dict[str, np.ndarray] | None:
    path = run_dir(out_dir, task, mixer, seed) / "diagnostics" / "per_query.npz"
    if not path.is_file():
        return None
    with np.load(path) as archive:
        blocks = sorted({key.rsplit("/", 1)[0] for key in archive.files})
        if not blocks:
            return None
        first = blocks[0]
        return {field: archive[f"{first}/{field}"] for field in ("q_norm", "entropy", "exponent")}


def _figure_scatter(out_dir: Path, results: dict[str, Any], seed: int) -> str | None:
    """Entropy vs ||q|| in the first attention block of trained models (the paper's Fig. 1 / Fig. 4 view)."""
    panels = []
    for task, entry in results["tasks"].items():
        for mixer in SCATTER_MIXERS:
            if mixer in entry["mixers"]:
                points = _first_layer_points(out_dir, task, mixer, seed)
                if points is not None:
                    panels.append((task, mixer, points))
    if not panels:
        return None
    plt = load_pyplot()
    columns = min(4, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    for axis, (task, mixer, points) in zip(axes.flat, panels):
        q_norm, entropy = points["q_norm"].ravel(), points["entropy"].ravel()
        keep = np.isfinite(entropy)
        axis.scatter(q_norm[keep], entropy[keep], s=4, alpha=0.4)
        axis.set_title(f"{task}: {mixer}", fontsize=9)
        axis.set_xlabel("||q||")
        axis.set_ylabel("row entropy (nats)")
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle("Trained models, first attention block: entropy vs query norm")
    return save_figure(figure, Path(out_dir) / "trained_entropy_vs_query_norm.png").name


def _figure_exponents(out_dir: Path, results: dict[str, Any], seed: int) -> str | None:
    """Histogram of NaLa's exponent p in trained models against its supremum lam * (tau + 1)."""
    series = []
    for task, entry in results["tasks"].items():
        if "nala" in entry["mixers"]:
            points = _first_layer_points(out_dir, task, "nala", seed)
            if points is not None and np.isfinite(points["exponent"]).any():
                series.append((task, points["exponent"].ravel()))
    if not series:
        return None
    plt = load_pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for task, exponent in series:
        axis.hist(exponent[np.isfinite(exponent)], bins=40, range=(1.5, 4.5), alpha=0.6, label=task)
    axis.axvline(4.5, color="black", linestyle="--", linewidth=1, label="supremum 4.5")
    axis.set_xlabel("p = 3 (0.5 + tanh ||q||)")
    axis.set_ylabel("queries")
    axis.set_title("NaLa's exponent in trained models (first block)")
    axis.legend()
    return save_figure(figure, Path(out_dir) / "nala_exponent_histogram.png").name


def accuracy_axis(entry: dict[str, Any]) -> dict[str, Any]:
    """How one task's panel of the accuracy figure is drawn: y-limits and the note on the seeds.

    With fewer than two seeds per mixer there is no noise estimate, so the axis starts at zero (a zoomed axis would
    make noise look like a ranking) and the panel says "one seed"; with seeds, the axis may zoom because every point
    carries its ± std error bar, and the limits cover those bars.
    """
    stats = [m for m in entry["mixers"].values() if m["mean"] is not None]
    if not stats:
        return {"ylim": (0.0, 1.0), "note": "no result"}
    seeds = min(m["n"] for m in stats)
    highs = [m["mean"] + (m["std"] or 0.0) for m in stats]
    lows = [m["mean"] - (m["std"] or 0.0) for m in stats]
    if seeds < 2:
        return {"ylim": (0.0, 1.05 * max(max(highs), 1e-9)), "note": "one seed per mixer: no noise estimate"}
    pad = 0.15 * (max(highs) - min(lows) + 1e-3)
    return {"ylim": (max(0.0, min(lows) - pad), max(highs) + pad), "note": f"mean ± std over {seeds} seeds"}


def _figure_accuracy(out_dir: Path, results: dict[str, Any]) -> str | None:
    tasks = [(name, entry) for name, entry in results["tasks"].items() if entry["mixers"]]
    if not tasks:
        return None
    plt = load_pyplot()
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.8), squeeze=False)
    for axis, (name, entry) in zip(axes[0], tasks):
        mixers = [m for m in entry["mixers"] if entry["mixers"][m]["mean"] is not None]
        for index, mixer in enumerate(mixers):
            stats = entry["mixers"][mixer]
            color = "tab:red" if mixer.startswith("nala") else "tab:gray" if mixer == "softmax" else "tab:blue"
            axis.errorbar(index, stats["mean"], yerr=stats["std"] or 0.0, fmt="o", color=color, capsize=3)
        axis.set_xticks(range(len(mixers)), mixers, rotation=60, ha="right", fontsize=8)
        layout = accuracy_axis(entry)
        axis.set_ylim(*layout["ylim"])
        better = "higher" if entry["higher_is_better"] else "lower"
        axis.set_title(f"{name}: {entry['metric']} ({better} is better)\n{layout['note']}", fontsize=9)
    return save_figure(figure, Path(out_dir) / "accuracy.png").name


def _figure_curves(out_dir: Path, results: dict[str, Any]) -> str | None:
    tasks = [
        (name, entry) for name, entry in results["tasks"].items() if any(m["curve"] for m in entry["mixers"].values())
    ]
    if not tasks:
        return None
    plt = load_pyplot()
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.8), squeeze=False)
    for axis, (name, entry) in zip(axes[0], tasks):
        for mixer, stats in entry["mixers"].items():
            points = [p for p in stats["curve"] if p["mean"] is not None]
            if points:
                style = "-" if mixer.startswith("nala") or mixer == "softmax" else "--"
                axis.plot([p["step"] for p in points], [p["mean"] for p in points], style, marker=".", label=mixer)
        axis.set_xlabel("step")
        axis.set_title(f"{name}: {entry['metric']} during training (mean over seeds)", fontsize=9)
        axis.legend(fontsize=6, ncol=2)
    return save_figure(figure, Path(out_dir) / "curves.png").name


def _figure_controlled(out_dir: Path) -> str | None:
    import json

    path = out_dir / "results" / "controlled.json"
    if not path.is_file():
        return None
    from nalaformer.diagnostics.plots import plot_controlled_study

    name = "controlled_entropy_vs_query_norm.png"
    plot_controlled_study(json.loads(path.read_text(encoding="utf-8")), out_dir / name)
    return name


def log_axis_labels(axis: Any, lengths: list[int]) -> None:
    """Label a log-log plot's x axis at the measured lengths only and drop the minor tick labels of both axes, which
    matplotlib otherwise prints side by side when a range spans less than a decade (``3×10²4×10²``)."""
    from matplotlib.ticker import NullFormatter

    axis.set_xticks(lengths, [str(length) for length in lengths])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.yaxis.set_minor_formatter(NullFormatter())


def _figure_efficiency(out_dir: Path, results: dict[str, Any]) -> str | None:
    efficiency = results.get("efficiency")
    if not efficiency or not efficiency.get("rows"):
        return None
    plt = load_pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    by_name: dict[str, list[tuple[int, float]]] = {}
    for row in efficiency["rows"]:
        if row["pass"] == "fwd+bwd":
            by_name.setdefault(row["name"], []).append((row["seq_len"], row["median_ms"]))
    for name, points in sorted(by_name.items()):
        points.sort()
        axis.loglog([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    log_axis_labels(axis, sorted({row["seq_len"] for row in efficiency["rows"]}))
    axis.set_xlabel("sequence length T")
    axis.set_ylabel("forward+backward time (ms)")
    axis.set_title("Attention operators on this CPU (B=1, H=4, D=64, fp32)")
    axis.legend(fontsize=8)
    return save_figure(figure, Path(out_dir) / "efficiency.png").name


def _section_claims(results: dict[str, Any]) -> list[str]:
    lines = ["## Summary: the paper's claims against this run", ""]
    rows = [[c["claim"], c["paper"], c["ours"], f"**{c['verdict']}**"] for c in results["claims"]]
    return lines + table_lines(["claim", "paper", "this run", "verdict"], rows)


def _section_spikiness(results: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    lines = ["## 1. Spikiness: attention entropy vs query norm", "", *saturation_lines(results)]
    lines += _controlled_table(results, figures)
    lines += _trained_spikiness_table(results)
    lines += _norm_awareness_table(results)
    lines += _temperature_sweep_table(results)
    for key, caption in (("scatter", "trained entropy vs query norm"), ("exponents", "NaLa exponent histogram")):
        if figures.get(key):
            lines += [f"![{caption}]({figures[key]})", ""]
    return lines


def saturation_lines(results: dict[str, Any]) -> list[str]:
    """The report's one saturation threshold, stated once for every "p saturated" column and the exponent claim; a
    folder whose trained-model diagnostics were measured at another level (runs made before the study shared the
    threshold) says so, with that level."""
    lines = [
        f"A NaLa query counts as saturated when {saturation_words(SATURATION_TANH)}: the one threshold of the "
        'exponent claim and of every "p saturated" column below.'
    ]
    levels = {
        stats["spikiness"].get("saturation_tanh")
        for entry in results["tasks"].values()
        for stats in entry["mixers"].values()
        if stats["spikiness"].get("analysed")
    }
    other = levels - {SATURATION_TANH}
    if other:
        level = other.pop() if len(levels) == 1 else None
        lines[0] += (
            " This folder's trained-model table and temperature table were measured before the study used that "
            f"threshold: there saturated means {saturation_words(level)}."
        )
    return [*lines, ""]


def _controlled_table(results: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    """Entropy against the query norm for each feature map, from the controlled study (none when it did not run)."""
    controlled = results.get("controlled")
    if not controlled:
        return []
    scales = list(next(iter(controlled["methods"].values()))["entropy_at"])
    config = controlled["config"]
    lines = [
        f"Controlled study (no training): one query direction with a growing norm against {config['num_keys']} "
        f"keys, d = {config['dim']}, {config['trials']} draws; entropy in nats (maximum ln N = "
        f"{fmt(controlled['max_entropy'])}).",
        "",
    ]
    rows = [
        [m["label"], *[fmt(m["entropy_at"][s]) for s in scales], fmt(m["drop"]), fmt(m["saturation_norm"], 2)]
        for m in controlled["methods"].values()
    ]
    lines += table_lines(["map", *[f"H(‖q‖={s})" for s in scales], "drop", "flat beyond ‖q‖"], rows)
    if figures.get("controlled"):
        lines += [f"![controlled study]({figures['controlled']})", ""]
    return lines


def _trained_spikiness_table(results: dict[str, Any]) -> list[str]:
    """Entropy-norm correlations of each trained model that was analysed (none when no model was)."""
    rows = []
    for task, entry in results["tasks"].items():
        for mixer, stats in entry["mixers"].items():
            spikiness = stats["spikiness"]
            if not spikiness.get("analysed"):
                continue
            rows.append(
                [
                    task,
                    mixer,
                    fmt(spikiness["pearson_entropy_q_norm"]),
                    fmt(spikiness["spearman_entropy_q_norm"]),
                    fmt(spikiness["pearson_entropy_k_norm"]),
                    fmt(spikiness["same_sign_fraction_mean"]),
                    fmt(spikiness["q_norm_mean"], 2),
                    fmt(spikiness.get("exponent_saturated_fraction")),
                ]
            )
    if not rows:
        return []
    lines = [
        "Trained models (validation inputs, every block and head, averaged over seeds): correlation of the row "
        "entropy with ‖q‖ and with the norm of the top-weighted key, the fraction of same-sign dimensions in "
        "each row's top (q, k) pair, the mean ‖q‖, and for NaLa the share of saturated queries (p saturated).",
        "",
    ]
    header = [
        "task",
        "mixer",
        "Pearson r(H, ‖q‖)",
        "Spearman",
        "Pearson r(H, ‖k_top‖)",
        "same-sign",
        "mean ‖q‖",
        "p saturated",
    ]
    return lines + table_lines(header, rows)


def _temperature_sweep_table(results: dict[str, Any]) -> list[str]:
    """The post-hoc norm-temperature sweep of the trained NaLa models (none when it did not run)."""
    rows = []
    for task, entry in results["tasks"].items():
        sweep = entry["mixers"].get("nala", {}).get("spikiness", {}).get("temperature_sweep")
        for temperature, stats in (sweep or {}).items():
            rows.append(
                [
                    task,
                    temperature,
                    fmt(stats.get("exponent_mean")),
                    fmt(stats.get("exponent_saturated_fraction")),
                    fmt(stats.get("pearson_entropy_q_norm")),
                ]
            )
    if not rows:
        return []
    lines = [
        "Norm temperature (post hoc, on the trained NaLa models' own q and k): p = 3(0.5 + tanh(‖q‖ / T)).",
        "",
    ]
    return lines + table_lines(["task", "T", "mean p", "p saturated", "Pearson r(H, ‖q‖)"], rows)


def _norm_awareness_table(results: dict[str, Any]) -> list[str]:
    """Saturated share, exponent spread and entropy-norm correlation of each trained model (last evaluation)."""

    def cell(stats: dict[str, Any], key: str) -> str:
        entry = stats.get(key)
        if not entry:
            return "–"
        return fmt(entry["mean"]) if entry["n"] < 2 else f"{fmt(entry['mean'])} ± {fmt(entry['std'])}"

    rows = [
        [task, mixer, *(cell(stats.get("norm", {}), key) for key in NORM_STATISTICS)]
        for task, entry in results["tasks"].items()
        for mixer, stats in entry["mixers"].items()
        if stats.get("norm")
    ]
    if not rows:
        return []
    lines = [
        "Norm-awareness at the end of training (logged at every evaluation in each run's metrics.jsonl, split "
        "`norm`; mean ± std over seeds): the share of saturated NaLa query exponents (p saturated), the mean and "
        "spread of p, and the Pearson correlation of the row entropy with ‖q‖ averaged over heads.",
        "",
    ]
    return lines + table_lines(["task", "mixer", "p saturated", "mean p", "std p", "Pearson r(H, ‖q‖)"], rows)


def _section_accuracy(results: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    lines = ["## 2. Accuracy at equal parameters and steps", ""]
    for task, entry in results["tasks"].items():
        if not entry["mixers"]:
            continue
        data = ", ".join(f"{k}={v}" for k, v in entry["data"].items())
        lines += [
            f"### {task}: {entry['metric']} ({'higher' if entry['higher_is_better'] else 'lower'} is better)",
            "",
            f"{entry['steps']} steps, batch {entry['batch_size']}; data: {data}.",
            "",
        ]
        rows = [
            [mixer, str(stats["parameters"]), _pm(stats), fmt(stats["cpu_seconds"], 1)]
            for mixer, stats in entry["mixers"].items()
        ]
        lines += table_lines(["mixer", "parameters", entry["metric"], "CPU s / run"], rows)
    if figures.get("accuracy"):
        lines += [f"![accuracy]({figures['accuracy']})", ""]
    if figures.get("curves"):
        lines += [f"![validation curves]({figures['curves']})", ""]
    return lines


def _section_efficiency(results: dict[str, Any], figures: dict[str, str | None]) -> list[str]:
    efficiency = results.get("efficiency")
    lines = ["## 3. Efficiency", ""]
    if not efficiency:
        return [*lines, "Not run (`--sections` without efficiency).", ""]
    lines += [efficiency.get("description", ""), ""]
    rows = [
        [
            str(r["seq_len"]),
            fmt(r["noncausal_fwd"], 1),
            fmt(r["noncausal_fwdbwd"], 1),
            fmt(r["causal_fwd"], 1),
            fmt(r["causal_fwdbwd"], 1),
        ]
        for r in efficiency.get("speedups", [])
    ]
    lines += table_lines(
        ["T", "non-causal fwd", "non-causal fwd+bwd", "causal fwd", "causal fwd+bwd"], rows
    )  # speedups of NaLa over SDPA
    if figures.get("efficiency"):
        lines += [f"![efficiency]({figures['efficiency']})", ""]
    models = results.get("model_efficiency")
    if models and models.get("rows"):
        sizes = sorted({r["size"] for r in models["rows"]})
        layouts = list(dict.fromkeys(r["layout"] for r in models["rows"]))
        cells = {(r["layout"], r["size"]): r for r in models["rows"]}
        rows = []
        for layout in layouts:
            row = [layout]
            for size in sizes:
                entry = cells.get((layout, size))
                if entry is None:
                    row.append("n/a")
                elif layout == "softmax":
                    row.append(fmt(entry["median_ms"], 1))
                else:
                    row.append(f"{fmt(entry['median_ms'], 1)} ({fmt(entry['speedup_vs_softmax'], 2)}x)")
            rows.append(row)
        lines += ["Whole model against the input resolution. " + models.get("description", ""), ""]
        lines += table_lines(["layout", *(f"{s}x{s}" for s in sizes)], rows)
    return lines


def _section_paper(results: dict[str, Any]) -> list[str]:
    paper = results["paper"]
    tasks = results["tasks"]
    lines = [
        "## 4. The paper's numbers next to ours",
        "",
        f"Published values are quoted from {paper['source']}; ours come from this run. The scales differ by orders "
        "of magnitude (ImageNet-1K at 224² for 300 epochs and 340M-parameter LMs on 15B tokens there; small models "
        "for a few hundred steps on small offline datasets here), so only the direction of each difference is "
        "comparable, not its size.",
        "",
    ]
    image = tasks.get("image", {}).get("mixers", {})
    rows = [
        [name, row["row"], fmt(row["imagenet_top1"], 1), fmt(image.get(name, {}).get("mean"))]
        for name, row in paper["table5_ablation"].items()
    ]
    lines += ["Table 5 (ablation; image task here):", ""]
    lines += table_lines(["mixer", "paper row", "paper ImageNet top-1", "ours: val accuracy"], rows)
    rows = [
        [name, fmt(value, 1), fmt(image.get(name, {}).get("mean"))] for name, value in paper["table6_swin_t"].items()
    ]
    lines += ["Table 6 (linear attentions in one backbone; image task here):", ""]
    lines += table_lines(["mixer", "paper ImageNet top-1", "ours: val accuracy"], rows)
    lm = tasks.get("lm", {}).get("mixers", {})
    mqar = tasks.get("mqar", {}).get("mixers", {})
    rows = [
        [
            name,
            row["label"],
            fmt(row["wiki_ppl"], 2),
            fmt(row["avg_acc"], 1),
            fmt(lm.get(name, {}).get("mean")),
            fmt(mqar.get(name, {}).get("mean")),
        ]
        for name, row in paper["table4_lm"].items()
    ]
    lines += ["Table 4 (language models; Shakespeare LM and MQAR here):", ""]
    lines += table_lines(
        ["mixer", "paper model", "paper Wiki ppl", "paper avg acc", "ours: LM val loss", "ours: MQAR accuracy"], rows
    )
    lines += [
        "What differs, besides scale: the backbone here is the released NaLaFormer block with every stage using the "
        "mixer under test (the released models use softmax attention in stages 3-4); the baselines keep our shared "
        "block (RoPE, LePE, gate) instead of their original architectures; the paper's cosine inhibit is compared "
        "in its sign-split limit (`sign_split_power`) as in the released code, and separately as `nala_cosine`; "
        "no ImageNet, COCO, ADE20K, LRA or SlimPajama data is available offline here.",
        "",
    ]
    return lines


def write_report(out_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and its PNG figures into ``out_dir`` from ``results``."""
    out_dir = Path(out_dir)
    seed = results["plan"]["seeds"][0]
    figures: dict[str, str | None] = {}
    try:
        figures = {
            "controlled": _figure_controlled(out_dir),
            "scatter": _figure_scatter(out_dir, results, seed),
            "exponents": _figure_exponents(out_dir, results, seed),
            "accuracy": _figure_accuracy(out_dir, results),
            "curves": _figure_curves(out_dir, results),
            "efficiency": _figure_efficiency(out_dir, results),
        }
        figures.update(boundary_figures(out_dir, results.get("recall_grid"), results.get("long_range")))
    except ImportError as error:  # matplotlib is optional: the tables still carry every number
        figures = {}
        print(f"figures skipped: {error}")
    environment = results.get("environment", {})
    lines = [
        f"# NaLa reproduction study ({results['mode']} mode)",
        "",
        f"Machine: {environment.get('processor', 'n/a')}, {environment.get('cpu_count', 'n/a')} CPUs; torch "
        f"{environment.get('torch', 'n/a')}; started {environment.get('started', 'n/a')}. Every number below is read "
        "from `results.json` in this folder, which the run wrote from its own measurements.",
        "",
    ]
    runs = [stats for entry in results["tasks"].values() for stats in entry["mixers"].values()]
    if runs:
        cpu_hours = sum((stats["cpu_seconds"] or 0.0) * stats["n"] for stats in runs) / 3600
        count = sum(stats["n"] for stats in runs)
        lines += [f"Training: {count} runs, {fmt(cpu_hours, 2)} CPU hours in all (one thread per run).", ""]
    lines += _section_claims(results)
    lines += _section_spikiness(results, figures)
    lines += _section_accuracy(results, figures)
    lines += _section_efficiency(results, figures)
    lines += _section_paper(results)
    lines += boundary_lines(results.get("recall_grid"), results.get("long_range"), figures, number="5. ")
    if results["failures"] or results["missing_runs"]:
        lines += ["## Runs that did not finish", ""]
        lines += [f"- {f['task']}/{f['mixer']} seed {f['seed']}: {f['error']}" for f in results["failures"]]
        failed = {(f["task"], f["mixer"], f["seed"]) for f in results["failures"]}
        lines += [
            f"- {m['task']}/{m['mixer']} seed {m['seed']}: no result yet"
            for m in results["missing_runs"]
            if (m["task"], m["mixer"], m["seed"]) not in failed
        ]
        lines += ["", "Run the same command again to retry and resume them.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
