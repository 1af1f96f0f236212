"""The parts of the study that are not training runs: the controlled spikiness study and the efficiency benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nalaformer.reporting import read_json, write_json
from nalaformer.reproduce.plan import StudyPlan


def _cached(out_dir: Path, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``results/<name>`` of the study folder: read when a previous call wrote it, else computed and written."""
    path = Path(out_dir) / "results" / name
    cached = read_json(path)
    if cached is not None:
        return cached
    result = compute()
    write_json(result, path)
    return result


def controlled_section(out_dir: Path) -> dict[str, Any]:
    """Entropy of one attention row against ``||q||`` for softmax and every feature map (no training)."""
    from nalaformer.diagnostics import controlled_entropy_study

    return _cached(out_dir, "controlled.json", controlled_entropy_study)


def _operator_timings(plan: StudyPlan) -> dict[str, Any]:
    """NaLa (and two linear baselines) against SDPA, non-causal and causal, forward and forward+backward, at the
    plan's sequence lengths, through the operator suite of ``nalaformer bench``.

    Timed after the training runs, alone on the machine, with every candidate interleaved in the same rounds, so the
    ratios are measured in one run.
    """
    import torch

    from nalaformer.bench.operators import OperatorSettings, run_operator_benchmarks

    settings = OperatorSettings(
        lengths=plan.bench_lengths, methods=("nala", "elu", "relu"), rounds=plan.bench_repeats, memory_methods=()
    )
    rows = run_operator_benchmarks(settings)
    speedups = []
    for seq_len in plan.bench_lengths:
        entry: dict[str, Any] = {"seq_len": seq_len}
        for row in rows:
            if row["method"] == "nala" and row["seq_len"] == seq_len:
                key = f"{'causal' if row['causal'] else 'noncausal'}_{row['pass'].replace('+', '')}"
                entry[key] = row["speedup_vs_sdpa"]
        speedups.append(entry)
    result = {
        "description": (
            f"Speed-up of `nala_attention` over torch SDPA (ratio of times, > 1 = NaLa faster), B=1, H=4, D=64, fp32, "
            f"{torch.get_num_threads()} threads, median of {plan.bench_repeats} interleaved rounds. The full suite "
            "is `nalaformer bench`."
        ),
        "threads": torch.get_num_threads(),
        "rows": [
            {
                "name": f"{r['method']} ({'causal' if r['causal'] else 'non-causal'})",
                "seq_len": r["seq_len"],
                "pass": r["pass"],
                "median_ms": r["median_ms"],
            }
            for r in rows
        ],
        "speedups": speedups,
    }
    return result


def _vision_timings(plan: StudyPlan) -> dict[str, Any]:
    """NaLaFormer inference time per image against the input resolution for the released hybrid, all-NaLa and
    all-softmax layouts (batch 1, layouts timed interleaved), through the vision suite of ``nalaformer bench``."""
    import torch

    from nalaformer.bench.models import VisionSettings, run_vision

    settings = VisionSettings(
        variant=plan.vision_variant,
        layouts=("released", "nala", "softmax"),
        sizes=plan.vision_sizes,
        passes=("inference",),
        rounds=plan.bench_repeats,
    )
    rows = run_vision(settings)
    result = {
        "description": (
            f"`{plan.vision_variant}` inference (eval, no grad), one image, fp32, {torch.get_num_threads()} threads; "
            f"median ms per image over {plan.bench_repeats} interleaved rounds, speed-up over the all-softmax layout "
            "in parentheses. The full suite is `nalaformer bench vision`."
        ),
        "variant": plan.vision_variant,
        "threads": torch.get_num_threads(),
        "rows": [
            {k: r[k] for k in ("layout", "size", "batch", "median_ms", "speedup_vs_softmax", "rounds", "note")}
            for r in rows
        ],
    }
    return result


def efficiency_section(out_dir: Path, plan: StudyPlan) -> dict[str, Any]:
    """The operator timings (:func:`_operator_timings`), cached in ``results/efficiency.json``."""
    return _cached(out_dir, "efficiency.json", lambda: _operator_timings(plan))


def model_efficiency_section(out_dir: Path, plan: StudyPlan) -> dict[str, Any]:
    """The vision-backbone timings (:func:`_vision_timings`), cached in ``results/model_efficiency.json``."""
    return _cached(out_dir, "model_efficiency.json", lambda: _vision_timings(plan))
