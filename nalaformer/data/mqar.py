"""Multi-query associative recall (MQAR), the synthetic recall task of the Zoology and Based papers.

A sequence of length ``T`` starts with ``P`` key-value pairs ``k1 v1 k2 v2 ... kP vP`` (keys from the lower half of the
vocabulary, values from the upper half, no key repeated). The rest of the sequence holds random filler tokens and,
at even offsets, one query of each earlier key; the model must predict the key's value at the query position. The
distance from the end of the pairs to each query follows a power law (short gaps are likely). Only the ``P`` answer
positions carry a label; every other label is ``-100`` (ignored by ``cross_entropy``), so token accuracy over labelled
positions is the accuracy per query.

Token 0 never appears as a key or value (Zoology keeps it free for padding); fillers are uniform over the vocabulary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100


def _check_mqar_arguments(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
    if num_kv_pairs < 1:
        raise ValueError(f"MQAR: num_kv_pairs must be >= 1, got {num_kv_pairs}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(
            f"MQAR: seq_len={seq_len} is too short for num_kv_pairs={num_kv_pairs}; the pairs take 2P tokens and "
            f"the queries need 2P more, so seq_len must be >= {4 * num_kv_pairs}"
        )
    if vocab_size // 2 - 1 < num_kv_pairs:
        raise ValueError(
            f"MQAR: vocab_size={vocab_size} leaves {vocab_size // 2 - 1} keys (1 .. vocab_size//2 - 1) for "
            f"num_kv_pairs={num_kv_pairs}; need vocab_size >= {2 * num_kv_pairs + 2}"
        )
    if not power_a > 0:
        raise ValueError(f"MQAR: power_a must be > 0, got {power_a}")


def mqar_example(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """One MQAR sequence drawn with ``rng``.

    Args:
        rng: the numpy generator that decides everything about this sequence.
        vocab_size: token ids are in ``[0, vocab_size)``; keys in ``[1, vocab_size // 2)``, values in
            ``[vocab_size // 2, vocab_size)``.
        seq_len: sequence length ``T`` (>= 4 * num_kv_pairs).
        num_kv_pairs: ``P``, the number of pairs (and of queries).
        power_a: exponent ``a`` of the gap distribution ``p(g) ∝ a·g^(a-1)``; default 0.01 (Zoology's).

    Returns:
        ``(input_ids int64 [T], labels int64 [T])``; labels are ``-100`` except at the ``P`` query positions.
    """
    pairs = 2 * num_kv_pairs
    key_end = vocab_size // 2
    keys = rng.choice(np.arange(1, key_end), size=num_kv_pairs, replace=False)
    values = rng.choice(np.arange(key_end, vocab_size), size=num_kv_pairs, replace=False)
    num_slots = (seq_len - pairs) // 2
    gaps = np.arange(1, num_slots + 1, dtype=np.float64)
    weights = power_a * gaps ** (power_a - 1)
    slots = rng.choice(num_slots, size=num_kv_pairs, replace=False, p=weights / weights.sum())

    input_ids = rng.integers(0, vocab_size, size=seq_len)
    input_ids[0:pairs:2] = keys
    input_ids[1:pairs:2] = values
    query_positions = pairs + 2 * slots
    input_ids[query_positions] = keys
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    labels[query_positions] = values
    return input_ids.astype(np.int64), labels


class MQARDataset(Dataset):
    """``num_examples`` MQAR sequences; example ``i`` depends only on ``(seed, i)``, so it is the same in every
    process, worker and run. Yields ``(input_ids int64 [T], labels int64 [T])``.

    Args:
        num_examples: dataset size (> 0).
        vocab_size: vocabulary size (>= 2 * num_kv_pairs + 2).
        seq_len: sequence length ``T`` (>= 4 * num_kv_pairs).
        num_kv_pairs: key-value pairs (and queries) per sequence (>= 1).
        power_a: exponent of the query-gap power law (> 0); default 0.01.
        seed: seed of the whole dataset; use different seeds for training and validation sets. Default 0.
    """

    def __init__(
        self,
        num_examples: int,
        *,
        vocab_size: int = 8192,
        seq_len: int = 64,
        num_kv_pairs: int = 4,
        power_a: float = 0.01,
        seed: int = 0,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"MQARDataset: num_examples must be >= 1, got {num_examples}")
        _check_mqar_arguments(vocab_size, seq_len, num_kv_pairs, power_a)
        self.num_examples = num_examples
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_kv_pairs = num_kv_pairs
        self.power_a = power_a
        self.seed = seed

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"MQARDataset: index {index} out of range for {self.num_examples} examples")
        rng = np.random.default_rng([self.seed, index])
        input_ids, labels = mqar_example(
            rng,
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            num_kv_pairs=self.num_kv_pairs,
            power_a=self.power_a,
        )
        return torch.from_numpy(input_ids), torch.from_numpy(labels)


def mqar_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of MQAR predictions.

    Args:
        logits: ``[B, T, V]`` scores (any float dtype).
        labels: ``[B, T]`` int64, ``-100`` where there is no query.

    Returns:
        ``{"query_accuracy": share of queries answered correctly, "sequence_accuracy": share of sequences with every
        query correct}``.
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"mqar_accuracy: expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    answered = labels != IGNORE_INDEX
    correct = (logits.argmax(-1) == labels) & answered
    per_sequence = correct.sum(-1) == answered.sum(-1)
    return {
        "query_accuracy": float(correct.sum() / answered.sum().clamp_min(1)),
        "sequence_accuracy": float(per_sequence.float().mean()),
    }
