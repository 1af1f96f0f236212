"""The conversion section's report: mean ± std over seeds, NaLa against each map per metric, tables and a figure.

"Beyond seed noise" is the study's one rule (:mod:`nalaformer.reproduce.seeds`): the difference of the two means
exceeds twice its standard error, ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the sample standard deviations over seeds;
with fewer than two seeds on either side there is no test.
The held-out passages and the probe's folds are the same for every run, so the spread is that of the conversion
(seed and data order) alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nalaformer.reproduce import seeds

# measure -> (table title, higher is better)
METRICS = {
    "cosine": ("cosine", True),
    "spearman": ("Spearman", True),
    "top1": ("top-1", True),
    "top10": ("top-10", True),
    "probe": ("probe", True),
    "entropy_gap": ("entropy gap to the teacher", False),
    "corr_gap": ("correlation gap to the teacher", False),
}
REFERENCE = "nala"
TARGET = {"spearman": 0.95, "probe_gap": -0.01, "cpu_seconds": 1800.0}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (:func:`nalaformer.reproduce.seeds.mean_std`; 0 for one value), the
    ``[mean, std]`` pair this report stores per measure."""
    if not values:
        raise ValueError("mean_std: values is empty (a measure needs at least one seed)")
    stats = seeds.mean_std(values)
    return stats["mean"], stats["std"] or 0.0


def _attention_gaps(row: dict[str, Any], teacher: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over layers of the student's distance to the teacher in row entropy and in entropy-norm correlation."""
    pairs = list(zip(row["attention"], teacher))
    return {
        "entropy_gap": sum(abs(s["entropy"] - t["entropy"]) for s, t in pairs) / len(pairs),
        "corr_gap": sum(abs(s["corr"] - t["corr"]) for s, t in pairs) / len(pairs),
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per run name: every measure as ``[mean, std]`` over its seeds; per layer the student's attention; NaLa's
    verdict against each map per measure; the target check of every NaLa run name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        groups.setdefault(row["name"], []).append({**row, **_attention_gaps(row, result["teacher_attention"])})
    measures = [*METRICS, "probe_gap", "cpu_seconds", "tokens", "transfer_mse", "transfer_kl", "recovery_mse"]
    stats: dict[str, dict[str, Any]] = {}
    for name, rows in groups.items():
        entry: dict[str, Any] = {"mixer": rows[0]["mixer"], "seeds": [row["seed"] for row in rows]}
        for key in measures:
            values = [row[key] for row in rows if row.get(key) is not None]
            entry[key] = list(mean_std(values)) if values else None
        entry["attention"] = [
            {
                "layer": layers[0]["layer"],
                "entropy": list(mean_std([layer["entropy"] for layer in layers])),
                "corr": list(mean_std([layer["corr"] for layer in layers])),
            }
            for layers in zip(*(row["attention"] for row in rows))
        ]
        stats[name] = entry
    return {"runs": stats, "verdicts": _verdicts(stats), "target": _target(stats)}


def verdict(a: list[float], n_a: int, b: list[float], n_b: int, higher_is_better: bool) -> dict[str, Any]:
    """``a`` (mean, std over ``n_a`` seeds) against ``b``: the difference, its standard error, the threshold it is
    judged against (``noise``, twice the standard error) and the word, by
    :func:`nalaformer.reproduce.seeds.seed_call`. With one seed on either side the standard error is that of the
    spread of the other side alone (0 when neither has one) and there is no test."""
    judged = seeds.seed_call(
        {"mean": a[0], "std": a[1], "n": n_a}, {"mean": b[0], "std": b[1], "n": n_b}, higher_is_better
    )
    error = judged["standard_error"]
    if error is None:  # no test; the table still shows the spread there is
        error = seeds.difference_spread(a[1], n_a, b[1], n_b)
    word = "one seed: no test" if judged["call"] == "not called" else judged["call"]
    return {"difference": judged["difference"], "standard_error": error, "noise": judged["noise"], "verdict": word}


def _verdicts(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if REFERENCE not in stats:
        return {}
    ours = stats[REFERENCE]
    out: dict[str, dict[str, Any]] = {}
    for name, other in stats.items():
        if name == REFERENCE or other["mixer"] == REFERENCE:
            continue
        out[name] = {
            key: verdict(ours[key], len(ours["seeds"]), other[key], len(other["seeds"]), higher)
            for key, (_, higher) in METRICS.items()
            if ours.get(key) is not None and other.get(key) is not None
        }
    return out


def _target(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each NaLa run name: Spearman >= 0.95, probe at most 1 point under the teacher, under 30 CPU-minutes."""
    out = {}
    for name, entry in stats.items():
        if entry["mixer"] != REFERENCE:
            continue
        checks = {
            "spearman": entry["spearman"][0] >= TARGET["spearman"],
            "probe_gap": entry["probe_gap"][0] >= TARGET["probe_gap"],
            "cpu_seconds": entry["cpu_seconds"][0] < TARGET["cpu_seconds"],
        }
        out[name] = {**checks, "met": all(checks.values())}
    return out


def _pm(value: list[float] | None, scale: float = 1.0, digits: int = 3, signed: bool = False, seeds: int = 2) -> str:
    """``mean ± std`` (the mean alone for one seed)."""
    if value is None:
        return "-"
    mean = f"{value[0] * scale:{'+' if signed else ''}.{digits}f}"
    return mean if seeds < 2 else f"{mean} ± {value[1] * scale:.{digits}f}"


def _recipe_text(result: dict[str, Any], name: str) -> str:
    changes = result.get("recipes", {}).get(name)
    if not changes:
        return ""
    return ", ".join(f"{key}={value}" for key, value in changes.items())


def _main_table(result: dict[str, Any], stats: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| map | seeds | steps | tokens | CPU s | cosine | Spearman | top-1 | top-10 | probe % | probe - teacher |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| teacher (softmax) | - | - | - | - | 1 | 1 | 1 | 1 | {100 * result['teacher_probe']:.1f} | 0 |",
    ]
    for name, entry in stats.items():
        steps = next(row["steps"] for row in result["rows"] if row["name"] == name)
        n = len(entry["seeds"])
        lines.append(
            f"| {name} | {n} | {steps} | {entry['tokens'][0]:.0f} | {_pm(entry['cpu_seconds'], digits=0, seeds=n)} | "
            f"{_pm(entry['cosine'], digits=4, seeds=n)} | {_pm(entry['spearman'], digits=4, seeds=n)} | "
            f"{_pm(entry['top1'], seeds=n)} | {_pm(entry['top10'], seeds=n)} | "
            f"{_pm(entry['probe'], 100, 1, seeds=n)} | {_pm(entry['probe_gap'], 100, 1, signed=True, seeds=n)} |"
        )
    return lines


def _verdict_table(summary: dict[str, Any]) -> list[str]:
    verdicts = summary["verdicts"]
    if not verdicts:
        return []
    names = list(verdicts)
    lines = [
        "| measure | " + " | ".join(f"nala vs {name}" for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, (title, higher) in METRICS.items():
        cells = []
        for name in names:
            entry = verdicts[name].get(key)
            cells.append("-" if entry is None else f"{entry['difference']:+.4f} ± {entry['standard_error']:.4f}: "
                                                   f"{entry['verdict']}")  # fmt: skip
        lines.append(f"| {title} ({'higher' if higher else 'lower'} is better) | " + " | ".join(cells) + " |")
    return lines


def _attention_table(result: dict[str, Any], stats: dict[str, dict[str, Any]]) -> list[str]:
    teacher = result["teacher_attention"]
    names = list(stats)
    lines = [
        "| layer | teacher entropy | teacher corr | " + " | ".join(f"{name} entropy / corr" for name in names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for index, layer in enumerate(teacher):
        cells = [
            f"{stats[name]['attention'][index]['entropy'][0]:.3f} / {stats[name]['attention'][index]['corr'][0]:+.3f}"
            for name in names
        ]
        lines.append(f"| {index} | {layer['entropy']:.3f} | {layer['corr']:+.3f} | " + " | ".join(cells) + " |")
    return lines


def conversion_markdown(result: dict[str, Any]) -> str:
    """The section's tables as Markdown."""
    config, summary = result["config"], result["summary"]
    stats = summary["runs"]
    lines = [
        "## Converting a pretrained encoder",
        "",
        f"Teacher `{result['teacher']}`. Every map gets the same budget: {config['transfer_steps']} attention-transfer "
        f"+ {config['recovery_steps']} LoRA-recovery (rank {config['lora_rank']}) steps of {config['batch_size']} "
        f"passages x {config['seq_len']} tokens, seeds {', '.join(map(str, result['seeds']))} (mean ± std over "
        f"seeds). Evaluation: {result['eval_passages']} passages of {len(result['eval_plays'])} held-out plays. "
        f"Probe: which play a passage comes from (logistic regression on the frozen embeddings, "
        f"{result.get('probe_folds', 5)}-fold cross-validated); chance {100 * result['probe_chance']:.1f} %. CPU s is "
        "the process time of the conversion alone.",
        "",
        f"Command: `{result['command']}`"
        + ("" if result.get("complete", True) else " (a partial report: the conversions finished so far)"),
        "",
        *_main_table(result, stats),
        "",
    ]
    recipes = [name for name in stats if _recipe_text(result, name)]
    if recipes:
        lines += ["Other NaLa recipes (their seeds in the table): "
                  + "; ".join(f"`{name}`: {_recipe_text(result, name)}" for name in recipes) + ".", ""]  # fmt: skip
    lines += ["Target (Spearman >= 0.95, probe at most 1 point under the teacher, under 30 CPU-minutes):", ""]
    for name, check in summary["target"].items():
        entry = stats[name]
        lines.append(
            f"- `{name}`: Spearman {entry['spearman'][0]:.4f}, probe {100 * entry['probe_gap'][0]:+.1f} points, "
            f"{entry['cpu_seconds'][0]:.0f} CPU s: {'met' if check['met'] else 'missed'}"
        )
    lines += [
        "",
        "Training losses at the end of each stage (MSE relative to the teacher's output power):",
        "",
        "| map | stage-1 MSE | stage-1 KL | stage-2 MSE |",
        "|---|---:|---:|---:|",
    ]
    for name, entry in stats.items():
        n = len(entry["seeds"])
        cells = [_pm(entry[key], seeds=n) for key in ("transfer_mse", "transfer_kl", "recovery_mse")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdicts = _verdict_table(summary)
    if verdicts:
        lines += [
            "",
            "NaLa against each map (difference of the means ± its standard error; 'better' / 'worse' only when the "
            "difference exceeds twice the standard error, else 'within seed noise'). Attention: mean over layers of "
            "the distance to the teacher's row entropy and to its entropy-query-norm correlation.",
            "",
            *verdicts,
        ]
    lines += [
        "",
        "Attention per layer on 16 held-out passages: mean row entropy (nats) and its within-head correlation with the "
        "query norm (negative = rows sharpen as ||q|| grows). The teacher's from the pretrained model; each map's "
        "from the converted model and its own queries (mean over seeds).",
        "",
        *_attention_table(result, stats),
    ]
    return "\n".join(lines) + "\n"


def conversion_plot(result: dict[str, Any], path: str | Path) -> Path | None:
    """Bar charts (mean ± std over seeds) of cosine, Spearman, top-10 and probe per map; None without matplotlib."""
    from nalaformer.reporting import load_pyplot, save_figure

    try:
        plt = load_pyplot()
    except ImportError:
        return None
    stats = result["summary"]["runs"]
    names = list(stats)
    panels = [("cosine", "cosine", 1.0), ("spearman", "Spearman", 1.0), ("top10", "top-10 agreement", 1.0),
              ("probe", "probe accuracy %", 100.0)]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for axis, (key, title, scale) in zip(axes, panels):
        means = [stats[name][key][0] * scale for name in names]
        errors = [stats[name][key][1] * scale for name in names]
        colours = ["tab:red" if stats[name]["mixer"] == REFERENCE else "tab:gray" for name in names]
        axis.bar(range(len(names)), means, yerr=errors, color=colours, capsize=3)
        if key == "probe":
            axis.axhline(100 * result["teacher_probe"], color="black", linestyle="--", label="teacher")
            axis.legend(loc="lower right", fontsize=8)
        if key == "spearman":
            axis.axhline(TARGET["spearman"], color="tab:blue", linestyle=":", label="target")
            axis.legend(loc="lower right", fontsize=8)
        low = min(m - e for m, e in zip(means, errors))
        axis.set_ylim(low - 0.1 * (max(means) - low + 1e-9), None)
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        axis.set_title(title)
    counts = sorted({len(stats[name]["seeds"]) for name in names})
    seeds = "/".join(map(str, counts))
    figure.suptitle(f"{result['teacher']} converted: mean ± std over {seeds} seed(s) per map")
    return save_figure(figure, path, dpi=120)
