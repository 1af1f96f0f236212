"""Cost of a converted decoder against its softmax teacher: forward time and peak memory, per-token decoding.

The teacher is a ``nalaformer train lm`` run (softmax mixers); the converted model is the same network after
``linearize(teacher, mixer="nala")`` (weights do not change the cost, so no trained conversion is needed). Batch 1,
fp32, inference (``torch.no_grad``), the threads the process has (set ``OMP_NUM_THREADS=1`` for one thread).

- forward: one call on a random sequence of ``L`` tokens, both models timed interleaved in the same rounds
  (:func:`nalaformer.bench.time_interleaved`); ratio = median over rounds of teacher time / converted time;
- peak memory: the resident memory the forward call adds, each model and length in a fresh process
  (:func:`nalaformer.bench.peak_memory_bytes`); activations are ``L`` tokens long in both models, so it grows
  with ``L`` in both;
- decoding: the prompt is read with the cache on (pieces of 2,048), then single-token steps are timed interleaved;
  the decoding state is ``cache.nbytes()`` after the prompt; decoding peak memory is the resident memory that reading
  the prompt that way and decoding ``DECODE_STEPS`` tokens adds (fresh process, as above): the teacher's key/value
  cache grows with ``L``, the converted model's state does not, so its figure stops growing at the piece size.

The teacher was trained on 256-token windows; beyond that its RoPE positions are untrained, which changes its outputs
but not its cost (the context check of softmax models is lifted for the measurement).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/conversion-decoder/decoder_bench.py runs/convdec/teacher \
        --out benchmarks/conversion-decoder
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from pathlib import Path

import torch

from nalaformer.bench import paired_ratio, peak_memory_bytes, time_interleaved

LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
PIECE = 2048
DECODE_STEPS = 16


def load_pair(teacher_dir: str) -> dict[str, torch.nn.Module]:
    """``{"softmax": teacher, "nala": converted}`` in eval mode, the teacher's context limit lifted."""
    from nalaformer.convert import linearize
    from nalaformer.convert.decoder import load_language_model

    teacher, _ = load_language_model(teacher_dir)
    teacher.model.has_bounded_context = False
    converted = linearize(copy.deepcopy(teacher), mixer="nala")
    return {"softmax": teacher.eval(), "nala": converted.eval()}


def forward_case(teacher_dir: str, which: str, length: int):
    """Peak-memory case: ``(run, warmup)`` of one forward call of ``which`` on ``length`` tokens."""
    model = load_pair(teacher_dir)[which]
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    short = ids[:, :64]

    def run() -> None:
        with torch.no_grad():
            model(ids, logits_to_keep=1)

    def warmup() -> None:
        with torch.no_grad():
            model(short, logits_to_keep=1)

    return run, warmup


def decode_case(teacher_dir: str, which: str, length: int):
    """Peak-memory case: ``(run, warmup)`` of reading ``length`` prompt tokens with the cache (pieces of
    ``PIECE``) and decoding ``DECODE_STEPS`` greedy tokens, cache and all, by ``which``."""
    model = load_pair(teacher_dir)[which]
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))

    def decode(prompt: torch.Tensor, steps: int) -> None:
        with torch.no_grad():
            cache, token = prefill(model, prompt)
            for _ in range(steps):
                out = model(token, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

    return (lambda: decode(ids, DECODE_STEPS)), (lambda: decode(ids[:, :64], 1))


def prefill(model: torch.nn.Module, ids: torch.Tensor):
    cache = None
    for start in range(0, ids.shape[1], PIECE):
        out = model(ids[:, start : start + PIECE], past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
    return cache, out.logits[:, -1:].argmax(-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="the softmax teacher: a nalaformer train lm run folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))
    models = load_pair(args.teacher)
    vocab = models["softmax"].config.vocab_size
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in args.lengths:
        ids = torch.randint(0, vocab, (1, length), generator=generator)
        with torch.no_grad():
            calls = {name: (lambda m=model, x=ids: m(x, logits_to_keep=1)) for name, model in models.items()}
            forward = time_interleaved(calls, rounds=args.rounds, min_round_s=0.05)
            caches, steps, state_bytes = {}, {}, {}
            for name, model in models.items():
                caches[name], token = prefill(model, ids)
                state_bytes[name] = int(caches[name].nbytes())  # before the timed steps add to a key/value cache
                steps[name] = lambda m=model, c=caches[name], t=token: m(
                    t, past_key_values=c, use_cache=True, logits_to_keep=1
                )
            decode = time_interleaved(steps, rounds=5, min_round_s=0.05)
        row = {"length": length, "threads": torch.get_num_threads()}
        for name in models:
            row[f"{name}_forward_ms"] = 1e3 * forward[name].median_s
            row[f"{name}_step_ms"] = 1e3 * decode[name].median_s
            row[f"{name}_state_bytes"] = state_bytes[name]
            if not args.no_memory:
                kwargs = {"teacher_dir": args.teacher, "which": name, "length": length}
                row[f"{name}_peak_mib"] = (
                    peak_memory_bytes("decoder_bench:forward_case", kwargs, threads=torch.get_num_threads()) / 2**20
                )
                row[f"{name}_decode_peak_mib"] = (
                    peak_memory_bytes("decoder_bench:decode_case", kwargs, threads=torch.get_num_threads()) / 2**20
                )
        row["forward_speedup"] = paired_ratio(forward["softmax"], forward["nala"])
        row["step_speedup"] = paired_ratio(decode["softmax"], decode["nala"])
        if not args.no_memory:
            row["peak_memory_ratio"] = row["softmax_peak_mib"] / row["nala_peak_mib"]
            row["decode_peak_memory_ratio"] = row["softmax_decode_peak_mib"] / row["nala_decode_peak_mib"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del caches, steps
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(sys.argv), "torch": torch.__version__, "machine": platform.processor() or "cpu",
            "teacher": args.teacher}  # fmt: skip
    (args.out / "cost.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    lines = [
        "| tokens | forward ms: softmax / NaLa (ratio) | forward peak MiB: softmax / NaLa (ratio) "
        "| decode ms per token: softmax / NaLa (ratio) | decoding peak MiB: softmax / NaLa (ratio) "
        "| state: softmax / NaLa |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        memory = decode_memory = "not measured"
        if "peak_memory_ratio" in r:
            memory = f"{r['softmax_peak_mib']:.1f} / {r['nala_peak_mib']:.1f} ({r['peak_memory_ratio']:.2f}x)"
            decode_memory = (
                f"{r['softmax_decode_peak_mib']:.1f} / {r['nala_decode_peak_mib']:.1f} "
                f"({r['decode_peak_memory_ratio']:.2f}x)"
            )
        lines.append(
            f"| {r['length']:,} | {r['softmax_forward_ms']:.1f} / {r['nala_forward_ms']:.1f} "
            f"({r['forward_speedup']:.2f}x) | {memory} | {r['softmax_step_ms']:.2f} / {r['nala_step_ms']:.2f} "
            f"({r['step_speedup']:.2f}x) | {decode_memory} | {r['softmax_state_bytes'] / 2**20:.2f} MiB / "
            f"{r['nala_state_bytes'] / 2**10:.1f} KiB |"
        )
    (args.out / "cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
