"""The parts of the study that are not training runs: the controlled spikiness study and the efficiency benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nalaformer.reproduce.jobs import write_json_atomic
from nalaformer.reproduce.plan import StudyPlan


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def controlled_section(out_dir: Path) -> dict[str, Any]:
    """Entropy of one attention row against ``||q||`` for softmax and every feature map (no training)."""
    path = Path(out_dir) / "results" / "controlled.json"
    cached = _load(path)
    if cached is not None:
        return cached
    from nalaformer.diagnostics import controlled_entropy_study

    study = controlled_entropy_study()
    write_json_atomic(study, path)
    return study


def _operator_calls(seq_len: int, causal: bool) -> dict[str, Any]:
    """Forward and forward+backward closures of NaLa and SDPA at ``B=1, H=4, D=64`` (fp32)."""
    import torch

    from nalaformer.ops import nala_attention, softmax_attention

    generator = torch.Generator().manual_seed(seq_len)
    q, k, v = (torch.randn(1, seq_len, 4, 64, generator=generator).requires_grad_() for _ in range(3))
    calls = {}
    for name, op in (("nala", nala_attention), ("sdpa", softmax_attention)):

        def forward(op=op):
            with torch.no_grad():
                op(q, k, v, causal=causal)

        def forward_backward(op=op):
            op(q, k, v, causal=causal).sum().backward()

        calls[f"{name}/fwd"] = forward
        calls[f"{name}/fwd+bwd"] = forward_backward
    return calls


def efficiency_section(out_dir: Path, plan: StudyPlan) -> dict[str, Any]:
    """NaLa against SDPA (non-causal and causal, forward and forward+backward) at the plan's sequence lengths.

    Timed after the training runs, alone on the machine, with every candidate interleaved in the same rounds
    (``nalaformer.bench.timing``) so the ratios are measured in one run.
    """
    path = Path(out_dir) / "results" / "efficiency.json"
    cached = _load(path)
    if cached is not None:
        return cached
    import torch

    from nalaformer.bench.timing import paired_ratio, time_interleaved

    rows, speedups = [], []
    for seq_len in plan.bench_lengths:
        entry: dict[str, Any] = {"seq_len": seq_len}
        for causal in (False, True):
            label = "causal" if causal else "noncausal"
            timings = time_interleaved(_operator_calls(seq_len, causal), rounds=plan.bench_repeats, warmup=1)
            for pass_name in ("fwd", "fwd+bwd"):
                for name in ("nala", "sdpa"):
                    timing = timings[f"{name}/{pass_name}"]
                    rows.append(
                        {
                            "name": f"{name} ({label})",
                            "seq_len": seq_len,
                            "pass": pass_name,
                            "median_ms": 1e3 * timing.median_s,
                        }
                    )
                key = f"{label}_{pass_name.replace('+', '')}"
                entry[key] = paired_ratio(timings[f"sdpa/{pass_name}"], timings[f"nala/{pass_name}"])
        speedups.append(entry)
    result = {
        "description": (
            f"Speed-up of `nala_attention` over torch SDPA (ratio of times, > 1 = NaLa faster), B=1, H=4, D=64, fp32, "
            f"{torch.get_num_threads()} threads, median of {plan.bench_repeats} interleaved rounds. The full suite "
            "is `nalaformer bench`."
        ),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "speedups": speedups,
    }
    write_json_atomic(result, path)
    return result
