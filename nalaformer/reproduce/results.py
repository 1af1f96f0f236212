"""Collect the study's JSON files into one results record (the claims are judged in ``claims``), and the number and
table formatting every report of the study shares.

Every number the report prints comes from the record this module builds (``results.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nalaformer.diagnostics.summary import LAYER_STATISTICS
from nalaformer.reporting import markdown_table, read_json, write_json
from nalaformer.reproduce import paper
from nalaformer.reproduce.jobs import result_path, run_dir
from nalaformer.reproduce.plan import StudyPlan
from nalaformer.reproduce.seeds import mean_std, seed_call

CONTROLLED_SCALES = (0.25, 1.0, 4.0, 16.0)
# the linear baselines NaLa is compared to (ablations and the delta rule are compared separately)
LINEAR_BASELINES = ("elu", "relu", "flatten", "polaformer", "cosformer", "hedgehog")


def fmt(value: Any, digits: int = 3) -> str:
    """How every number appears in the report (the tests format results.json the same way)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as report lines, followed by a blank line."""
    return [markdown_table(header, rows), ""]


def _mean(values: list[float]) -> float | None:
    return mean_std(values)["mean"]


def _std(values: list[float]) -> float | None:
    return mean_std(values)["std"]


def _validation_curve(out_dir: Path, task: str, mixer: str, seeds: list[int], metric: str) -> list[dict[str, Any]]:
    """``metric`` at every evaluation step, averaged over the seeds evaluated at that step.

    Read from each run's ``metrics.jsonl`` (its ``"split": "val"`` records; after a resume the last record of a step
    counts), so the curve and the final values come from the same log the training engine wrote.
    """
    key = metric.removeprefix("val_")
    per_step: dict[int, list[float]] = {}
    for seed in seeds:
        path = run_dir(out_dir, task, mixer, seed) / "metrics.jsonl"
        if not path.is_file():
            continue
        values: dict[int, float] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("split") == "val" and record.get(key) is not None:
                values[int(record["step"])] = float(record[key])
        for step, value in values.items():
            per_step.setdefault(step, []).append(value)
    return [{"step": step, "mean": _mean(v), "n": len(v)} for step, v in sorted(per_step.items())]


def _layer_means(summary: dict[str, Any], key: str) -> list[float]:
    return [layer[f"mean_{key}"] for layer in summary.get("layers", []) if f"mean_{key}" in layer]


def _spikiness(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Trained-model statistics averaged over layers, heads and seeds."""
    summaries = [r["spikiness"]["summary"] for r in runs if r.get("spikiness") and "summary" in r["spikiness"]]
    if not summaries:
        return {"analysed": False}
    from nalaformer.reproduce.claims import EARLIER_SATURATION_TANH

    out: dict[str, Any] = {"analysed": True}
    # the tanh level of "saturated" these runs were measured at (None when they differ)
    levels = {
        r["spikiness"].get("saturation", EARLIER_SATURATION_TANH)
        for r in runs
        if r.get("spikiness") and "summary" in r["spikiness"]
    }
    out["saturation_tanh"] = levels.pop() if len(levels) == 1 else None
    for key in LAYER_STATISTICS:
        values = [v for s in summaries for v in _layer_means(s, key)]
        out[key] = _mean(values)
    sweeps = [r["spikiness"].get("temperature_sweep") for r in runs if r.get("spikiness")]
    sweeps = [s for s in sweeps if s]
    if sweeps:
        out["temperature_sweep"] = _sweep_means(sweeps)
    return out


NORM_STATISTICS = ("saturated_fraction", "exponent_mean", "exponent_std", "pearson_entropy_q_norm")


def _norm_awareness(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last evaluation's norm-awareness statistics (``norm_*`` metrics of the training engine's hook): mean and
    standard deviation over seeds, for the statistics a mixer has (the exponent ones for norm-aware NaLa only)."""
    out: dict[str, Any] = {}
    for key in NORM_STATISTICS:
        values = [r["metrics"][f"norm_{key}"] for r in runs if r["metrics"].get(f"norm_{key}") is not None]
        if values:
            out[key] = {"mean": _mean(values), "std": _std(values), "n": len(values)}
    return out


def _sweep_means(sweeps: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per temperature: the mean saturated fraction and entropy/||q|| correlation over layers and seeds."""
    table: dict[str, dict[str, list[float]]] = {}
    for sweep in sweeps:
        for layer in sweep.get("layers", []):
            for entry in layer.get("by_temperature", []):
                row = table.setdefault(fmt(float(entry["temperature"]), 1), {})
                for key in ("exponent_saturated_fraction", "pearson_entropy_q_norm", "exponent_mean"):
                    if key in entry:
                        row.setdefault(key, []).append(entry[key])
    return {t: {k: _mean(v) for k, v in row.items()} for t, row in table.items()}


def _task_results(plan: StudyPlan, out_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    tasks: dict[str, Any] = {}
    missing = []
    for task in plan.tasks:
        mixers = {}
        for mixer in task.mixers:
            runs = []
            for seed in plan.seeds:
                record = read_json(result_path(out_dir, task.name, mixer, seed))
                if record is None:
                    missing.append({"task": task.name, "mixer": mixer, "seed": seed})
                else:
                    runs.append(record)
            if not runs:
                continue
            values = [r["metrics"].get(task.metric) for r in runs]
            mixers[mixer] = {
                "n": len(runs),
                "seeds": [r["seed"] for r in runs],
                "values": values,
                "mean": _mean(values),
                "std": _std(values),
                "parameters": runs[0]["parameters"],
                "steps": runs[0]["steps"],
                "cpu_seconds": _mean([r["cpu_seconds"] for r in runs]),
                "curve": _validation_curve(out_dir, task.name, mixer, [r["seed"] for r in runs], task.metric),
                "spikiness": _spikiness(runs),
                "norm": _norm_awareness(runs),
            }
        tasks[task.name] = {
            "metric": task.metric,
            "higher_is_better": task.higher_is_better,
            "steps": task.steps,
            "batch_size": task.batch_size,
            "model": task.model,
            "data": task.data,
            "mixers": mixers,
        }
    return tasks, missing


def _controlled(study: dict[str, Any] | None) -> dict[str, Any] | None:
    if study is None:
        return None
    scales = np.asarray(study["scales"], dtype=np.float64)
    columns = [int(np.argmin(np.abs(scales - s))) for s in CONTROLLED_SCALES]
    methods = {}
    for name, method in study["methods"].items():
        methods[name] = {
            "label": method["label"],
            "entropy_at": {fmt(float(scales[i]), 2): method["entropy_mean"][i] for i in columns},
            "drop": method["drop"],
            "max_abs_change": method["max_abs_change"],
            "monotone_non_increasing": method["monotone_non_increasing"],
            "saturation_norm": method["saturation_norm"],
        }
    return {"max_entropy": study["max_entropy"], "config": study["config"], "methods": methods}


def collect_results(out_dir: str | Path, plan: StudyPlan, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the study measured, as one JSON-serialisable record, also written to ``results.json``."""
    out_dir = Path(out_dir)
    study = read_json(out_dir / "study.json") or {}
    tasks, missing = _task_results(plan, out_dir)
    results: dict[str, Any] = {
        "mode": plan.mode,
        "environment": study.get("environment", {}),
        "plan": dataclasses.asdict(plan),
        "controlled": _controlled(read_json(out_dir / "results" / "controlled.json")),
        "tasks": tasks,
        "efficiency": read_json(out_dir / "results" / "efficiency.json"),
        "model_efficiency": read_json(out_dir / "results" / "model_efficiency.json"),
        "recall_grid": read_json(out_dir / "results" / "recall_grid.json"),
        "long_range": read_json(out_dir / "results" / "long_range.json"),
        "paper": {
            "source": paper.PAPER,
            "table5_ablation": paper.TABLE5_ABLATION,
            "table6_swin_t": paper.TABLE6_SWIN_T,
            "table4_lm": paper.TABLE4_LM,
            "figure5": paper.FIGURE5,
        },
        "failures": [{k: v for k, v in f.items() if k != "traceback"} for f in failures],
        "missing_runs": missing,
    }
    from nalaformer.reproduce.claims import assess_claims  # claims reads this module's helpers

    results["claims"] = assess_claims(results)
    write_json(results, out_dir / "results.json")
    return results


def compare(task: dict[str, Any], candidate: str, reference: str) -> dict[str, Any] | None:
    """``candidate`` against ``reference`` on a task: the difference in the better direction and a verdict.

    The verdict is "better" / "worse" when the difference of the means exceeds twice its standard error (the study's
    one rule, :func:`nalaformer.reproduce.seeds.seed_call`), "within noise" otherwise; ``noise`` is that threshold.
    With fewer than two seeds on either side there is no noise estimate (``noise`` is None) and the verdict says so.
    """
    mixers = task["mixers"]
    if candidate not in mixers or reference not in mixers:
        return None
    a, b = mixers[candidate], mixers[reference]
    if a["mean"] is None or b["mean"] is None:
        return None
    judged = seed_call(a, b, task["higher_is_better"])
    gain = judged["gain"]
    if judged["call"] == "not called":
        verdict = ("better" if gain > 0 else "worse" if gain < 0 else "equal") + " (one seed, no noise estimate)"
    elif judged["call"] == "within seed noise":
        verdict = "within noise"
    else:
        verdict = judged["call"]
    return {"candidate": candidate, "reference": reference, "gain": gain, "noise": judged["noise"], "verdict": verdict}
