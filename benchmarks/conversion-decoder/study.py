"""Decoder conversion study: a softmax Shakespeare LM converted to NaLa and the other maps, measured on held-out plays.

The teacher is a ``nalaformer train lm`` run trained on the conversion plays only; each conversion is a
``nalaformer linearize`` run folder of it (a checkpoint is written at each stage's end, so stage 1's is kept).
For each run this script measures, on windows of the held-out plays (never seen by the teacher's training nor by the
conversion), the converted model's perplexity, the teacher's, and the next-token KL(teacher || student) per token:
at initialisation (swap + NaLa calibration, no training), after stage 1 (attention transfer) and after stage 2
(LoRA recovery), plus the conversion's CPU seconds and real (unpadded) tokens per stage.

Commands (from the repository root, PYTHONPATH=$PWD):

    python benchmarks/conversion-decoder/study.py teacher-data runs/convdec/data
    nalaformer train lm --data.name runs/convdec/data/conversion_plays.txt ...        # see README.md
    nalaformer linearize --model runs/convdec/teacher --mixer nala --run-dir RUN ...    # see README.md
    python benchmarks/conversion-decoder/study.py evaluate RUN [RUN ...]               # RUN/evaluation.json
    python benchmarks/conversion-decoder/study.py report RUN [RUN ...] --out benchmarks/conversion-decoder
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

from nalaformer.convert import calibrate, linearize
from nalaformer.convert.data import batch_at, play_passages, split_plays
from nalaformer.convert.decoder import held_out_windows, lm_agreement, load_language_model
from nalaformer.convert.run import LinearizeConfig
from nalaformer.convert.saving import from_pretrained
from nalaformer.train.checkpoint import load_weights

WINDOW, WINDOWS = 256, 64


def teacher_data(folder: Path) -> None:
    """Write the conversion plays (every play but the held-out ones) as the teacher's training text."""
    from nalaformer.data.text import load_shakespeare

    conversion, held_out = split_plays(5)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conversion_plays.txt").write_text(load_shakespeare(conversion), encoding="utf-8")
    print(json.dumps({"conversion_plays": len(conversion), "held_out": held_out}))


def _stage_seconds(run_dir: Path, step: int) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(next(r["cpu_seconds"] for r in records if r["step"] == step))


def evaluate(run_dir: Path) -> dict:
    config = LinearizeConfig(**json.loads((run_dir / "config.json").read_text()))
    torch.manual_seed(config.seed)  # as the run drew it: the same random feature-map init (Hedgehog) below
    teacher, tokenizer = load_language_model(config.model)
    start = linearize(copy.deepcopy(teacher), config.spec)
    windows = held_out_windows(tokenizer, window=WINDOW, count=WINDOWS, eval_every=config.eval_every)
    passages = play_passages(split_plays(config.eval_every)[0], words=config.words, raw=config.raw_text)

    def batch(step: int) -> dict:
        return batch_at(tokenizer, passages, step, config.batch_size, config.seq_len, config.seed)

    real = [int(batch(step)["attention_mask"].sum()) for step in range(config.total_steps)]
    if config.calibrate:
        calibrate(start, [batch(0)])
    after_transfer = linearize(copy.deepcopy(teacher), config.spec)
    load_weights(run_dir / "checkpoints" / f"step_{config.transfer_steps:08d}", after_transfer)
    after_recovery = from_pretrained(run_dir / "model")
    result = {
        "run_dir": str(run_dir),
        "mixer": config.mixer,
        "seed": config.seed,
        "config": {k: getattr(config, k) for k in ("seq_len", "batch_size", "transfer_steps", "recovery_steps",
                                                   "transfer_lr", "recovery_lr", "lora_rank", "words",
                                                   "raw_text")},
        "held_out": {"windows": WINDOWS, "window": WINDOW, "plays": split_plays(config.eval_every)[1]},
        "init": lm_agreement(start, teacher, windows),
        "stage1": lm_agreement(after_transfer, teacher, windows),
        "stage2": lm_agreement(after_recovery, teacher, windows),
        "cpu_seconds": {
            "stage1": _stage_seconds(run_dir, config.transfer_steps),
            "total": _stage_seconds(run_dir, config.total_steps),
        },
        "tokens": {"stage1": sum(real[: config.transfer_steps]), "total": sum(real)},
    }  # fmt: skip
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def _mean_sd(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def report(run_dirs: list[Path], out: Path, note: str = "") -> str:
    results = [json.loads((run_dir / "evaluation.json").read_text()) for run_dir in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    teacher = results[0]["stage1"]["teacher_perplexity"]
    lines = [f"{note}\n"] if note else []
    lines += [
        f"Teacher (softmax) held-out perplexity: {teacher:.3f} ({results[0]['stage1']['tokens']} predicted tokens, "
        f"{WINDOWS} windows of {WINDOW} from the held-out plays).",
        "",
        "| mixer | seeds | init: ppl (ratio) / KL | stage 1: ppl (ratio) / KL | stage 2: ppl (ratio) / KL "
        "| CPU s (stage 1 / total) | tokens (stage 1 / total) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_mixer: dict[str, list[dict]] = {}
    for result in results:
        by_mixer.setdefault(result["mixer"], []).append(result)
    for mixer, group in by_mixer.items():
        cells = []
        for stage in ("init", "stage1", "stage2"):
            ppl = _mean_sd([r[stage]["perplexity"] for r in group], 3)
            ratio = _mean_sd([r[stage]["perplexity_ratio"] for r in group], 3)
            kl = _mean_sd([r[stage]["kl_to_teacher"] for r in group], 4)
            cells.append(f"{ppl} ({ratio}) / {kl}")
        cpu = f"{_mean_sd([r['cpu_seconds']['stage1'] for r in group], 0)} / "
        cpu += _mean_sd([r["cpu_seconds"]["total"] for r in group], 0)
        tokens = f"{_span([r['tokens']['stage1'] for r in group])} / {_span([r['tokens']['total'] for r in group])}"
        seeds = ",".join(str(r["seed"]) for r in group)
        lines.append(f"| {mixer} | {seeds} | {' | '.join(cells)} | {cpu} | {tokens} |")
    lines += _verdict_lines(by_mixer)
    table = "\n".join(lines) + "\n" + _cost_section(out, by_mixer.get("nala", []))
    (out / "results.md").write_text(table, encoding="utf-8")
    return table


# measure -> (title, the record's stage and key); lower is better for every one
VERDICT_MEASURES = {
    "stage 2 perplexity ratio": ("stage2", "perplexity_ratio"),
    "stage 2 KL": ("stage2", "kl_to_teacher"),
    "stage 1 perplexity ratio": ("stage1", "perplexity_ratio"),
    "stage 1 KL": ("stage1", "kl_to_teacher"),
}


def _verdict_lines(by_mixer: dict[str, list[dict]]) -> list[str]:
    """NaLa against each other map per measure: the difference of the means (NaLa - map), its standard error and
    the word of :func:`nalaformer.reproduce.conversion_report.verdict` (beyond seed noise: more than twice the
    standard error; one seed on either side: no test)."""
    from nalaformer.reproduce.conversion_report import mean_std, verdict

    others = [mixer for mixer in by_mixer if mixer != "nala"]
    if "nala" not in by_mixer or not others:
        return []
    lines = [
        "",
        'NaLa against each map (NaLa - map, ± standard error; lower is better for every measure; "better" / '
        '"worse" only beyond twice the standard error):',
        "",
        "| measure | " + " | ".join(f"nala vs {mixer}" for mixer in others) + " |",
        "|---|" + "---|" * len(others),
    ]
    nala = by_mixer["nala"]
    for title, (stage, key) in VERDICT_MEASURES.items():
        ours = list(mean_std([r[stage][key] for r in nala]))
        cells = []
        for mixer in others:
            group = by_mixer[mixer]
            entry = verdict(ours, len(nala), list(mean_std([r[stage][key] for r in group])), len(group), False)
            cells.append(f"{entry['difference']:+.4f} ± {entry['standard_error']:.4f}: {entry['verdict']}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _span(values: list[int]) -> str:
    """``1,234`` when the runs agree, else ``low-high`` (seeds draw different passages, so real tokens differ)."""
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _cost_section(out: Path, nala: list[dict]) -> str:
    """The cost table ``decoder_bench.py`` left in ``out`` (cost.md, its command from cost.json) after the NaLa
    conversions' own cost (CPU seconds and real tokens from their records), or nothing without cost.md."""
    if not (out / "cost.md").exists() or not (out / "cost.json").exists():
        return ""
    cost = json.loads((out / "cost.json").read_text())
    threads = "/".join(str(n) for n in sorted({row["threads"] for row in cost["rows"]}))
    conversion = ""
    if nala:
        cpu = {stage: _mean_sd([r["cpu_seconds"][stage] for r in nala], 0) for stage in ("stage1", "total")}
        tokens = {stage: _span([r["tokens"][stage] for r in nala]) for stage in ("stage1", "total")}
        conversion = (
            f"Conversion (NaLa, {len(nala)} run(s), from their metrics.jsonl): {cpu['total']} CPU-seconds "
            f"({cpu['stage1']} in attention transfer) and {tokens['total']} real tokens ({tokens['stage1']} in "
            "attention transfer) per conversion, one thread.\n\n"
        )
    return (
        f"\n{conversion}Cost of the converted model (NaLa) against its teacher, batch 1, fp32, inference, {threads} "
        f"thread(s), torch {cost['meta']['torch']}; ratios are teacher / converted within the same interleaved "
        f"rounds (above 1: NaLa faster or smaller):\n\n    PYTHONPATH=$PWD python {cost['meta']['command']}\n\n"
        + (out / "cost.md").read_text()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("teacher-data").add_argument("folder", type=Path)
    sub.add_parser("evaluate").add_argument("runs", type=Path, nargs="+")
    rep = sub.add_parser("report")
    rep.add_argument("runs", type=Path, nargs="+")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--note", default="", help="a paragraph put first (where and how the figures were measured)")
    args = parser.parse_args(argv)
    if args.command == "teacher-data":
        teacher_data(args.folder)
    elif args.command == "evaluate":
        for run_dir in args.runs:
            print(json.dumps(evaluate(run_dir), indent=1))
    else:
        print(report(args.runs, args.out, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
