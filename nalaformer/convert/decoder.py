"""Converting this library's own language models, and measuring a converted decoder against its teacher.

- :class:`TextTokenizer` lets a conversion batch text with the tokenizer of a ``nalaformer train lm`` run (character,
  byte or GPT-2 BPE) as it does with a transformers tokenizer;
- :func:`load_language_model` loads such a run (or a ``NaLaForCausalLM.save_pretrained`` folder) for conversion;
- :func:`held_out_windows` cuts the held-out plays (never seen in conversion) into fixed-length token windows;
- :func:`lm_agreement` measures a converted decoder on them: its perplexity, its teacher's, and the next-token
  ``KL(teacher || student)`` per token.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.convert.data import split_plays

TOKENIZER_FOLDER = "tokenizer"


class TextTokenizer:
    """A ``nalaformer.data.tokenizers`` tokenizer behind the calls a conversion makes of a transformers tokenizer.

    Calling it on a list of texts gives right-padded ``input_ids`` / ``attention_mask`` tensors (pad id 0, masked);
    :meth:`save_pretrained` writes the tokenizer into ``<folder>/tokenizer`` where :func:`load_language_model` and
    ``nalaformer generate`` find it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pad_token = "<pad>"

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def __call__(
        self,
        texts: list[str],
        *,
        padding: bool = True,
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        encoded = [self.encode(text) for text in texts]
        if truncation and max_length is not None:
            encoded = [ids[:max_length] for ids in encoded]
        if not encoded or min(len(ids) for ids in encoded) == 0:
            raise ValueError("every text must give at least one token")
        width = max(len(ids) for ids in encoded)
        if not padding and any(len(ids) != width for ids in encoded):
            raise ValueError("texts of different token lengths need padding=True")
        input_ids = torch.zeros(len(encoded), width, dtype=torch.long)
        attention_mask = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def save_pretrained(self, folder: str | Path) -> None:
        self.tokenizer.save(Path(folder) / TOKENIZER_FOLDER)


def is_language_model_folder(path: Path) -> bool:
    """A ``nalaformer train`` run folder or a ``NaLaForCausalLM.save_pretrained`` folder (not another model)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text(encoding="utf-8"))
    return "recipe" in data or data.get("model_type") == "nala"


def load_language_model(path: str | Path) -> tuple[nn.Module, TextTokenizer]:
    """``(NaLaForCausalLM, TextTokenizer)`` from a ``nalaformer train lm`` run folder (its newest valid checkpoint)
    or a ``save_pretrained`` folder with a ``tokenizer/`` subfolder; offline."""
    from nalaformer.train.lm_loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(path)
    return model, TextTokenizer(tokenizer)


def held_out_windows(
    tokenizer: Any, *, window: int, count: int, eval_every: int = 5, plays: list[str] | None = None
) -> torch.Tensor:
    """``[count, window]`` token windows spread evenly over the held-out plays (every ``eval_every``-th play).

    The plays are :func:`nalaformer.convert.data.split_plays`' evaluation plays, never used in a conversion; each
    play's plain text is tokenised whole and the windows are taken at evenly spaced offsets of the joined stream.
    """
    from nalaformer.data.text import load_shakespeare

    if window < 2 or count < 1:
        raise ValueError(f"window must be >= 2 and count >= 1, got window={window}, count={count}")
    if plays is None:
        plays = split_plays(eval_every)[1]
    ids = torch.tensor(tokenizer.encode(load_shakespeare(plays)), dtype=torch.long)
    if len(ids) < window * count:
        raise ValueError(f"the held-out plays give {len(ids)} tokens, fewer than {count} windows of {window}")
    starts = torch.linspace(0, len(ids) - window, count).long()
    return torch.stack([ids[start : start + window] for start in starts.tolist()])


@torch.no_grad()
def lm_agreement(
    student: nn.Module, teacher: nn.Module, windows: torch.Tensor, *, batch_size: int = 8
) -> dict[str, float]:
    """Next-token perplexity of ``student`` and ``teacher`` on ``windows [N, T]`` and the mean per-token
    ``KL(teacher || student)`` (nats) of their next-token distributions; every position but the last predicts."""
    student.eval()
    teacher.eval()
    nll_s = nll_t = kl = 0.0
    tokens = 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        targets = ids[:, 1:]
        log_q = F.log_softmax(student(ids).logits[:, :-1].float(), dim=-1)
        log_p = F.log_softmax(teacher(ids).logits[:, :-1].float(), dim=-1)
        nll_s += float(-log_q.gather(-1, targets[..., None]).sum())
        nll_t += float(-log_p.gather(-1, targets[..., None]).sum())
        kl += float((log_p.exp() * (log_p - log_q)).sum())
        tokens += targets.numel()
    return {
        "perplexity": math.exp(nll_s / tokens),
        "teacher_perplexity": math.exp(nll_t / tokens),
        "perplexity_ratio": math.exp((nll_s - nll_t) / tokens),
        "kl_to_teacher": kl / tokens,
        "tokens": tokens,
    }
