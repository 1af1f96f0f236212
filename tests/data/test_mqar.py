"""MQAR: the Zoology layout checked against a dictionary built from each sequence, determinism, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalaformer.data import IGNORE_INDEX, MQARDataset, mqar_accuracy, mqar_example


@pytest.mark.parametrize(("vocab", "length", "pairs"), [(64, 32, 4), (8192, 257, 16), (20, 36, 9)], ids=str)
def test_queries_ask_for_earlier_keys_and_labels_are_their_values(vocab, length, pairs):
    dataset = MQARDataset(20, vocab_size=vocab, seq_len=length, num_kv_pairs=pairs, seed=7)
    for index in range(len(dataset)):
        inputs, labels = dataset[index]
        keys, values = inputs[: 2 * pairs : 2], inputs[1 : 2 * pairs : 2]
        assert inputs.shape == labels.shape == (length,)
        assert len(set(keys.tolist())) == pairs and len(set(values.tolist())) == pairs
        assert ((keys >= 1) & (keys < vocab // 2)).all() and ((values >= vocab // 2) & (values < vocab)).all()
        answer_of = dict(zip(keys.tolist(), values.tolist()))
        positions = (labels != IGNORE_INDEX).nonzero().flatten()
        assert len(positions) == pairs and (positions >= 2 * pairs).all() and ((positions - 2 * pairs) % 2 == 0).all()
        assert sorted(inputs[positions].tolist()) == sorted(keys.tolist())
        assert all(labels[p] == answer_of[int(inputs[p])] for p in positions)
        assert ((inputs >= 0) & (inputs < vocab)).all()


def test_examples_depend_only_on_seed_and_index():
    a = MQARDataset(5, vocab_size=64, seq_len=32, num_kv_pairs=4, seed=1)
    b = MQARDataset(9, vocab_size=64, seq_len=32, num_kv_pairs=4, seed=1)
    c = MQARDataset(5, vocab_size=64, seq_len=32, num_kv_pairs=4, seed=2)
    assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(5))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(5))


def test_power_law_puts_queries_close_to_the_pairs():
    def mean_gap(power_a: float) -> float:
        rng = np.random.default_rng(0)
        gaps = []
        for _ in range(200):
            _, labels = mqar_example(rng, vocab_size=64, seq_len=128, num_kv_pairs=4, power_a=power_a)
            gaps.extend(np.flatnonzero(labels != IGNORE_INDEX) - 8)
        return float(np.mean(gaps))

    # a = 1 is uniform over the 60 slots (mean gap ~ 60); Zoology's a = 0.01 favours short gaps.
    assert mean_gap(0.01) < 0.6 * mean_gap(1.0)


def test_accuracy_per_query_and_per_sequence():
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, [1, 3]] = torch.tensor([4, 2])
    labels[1, [2, 4]] = torch.tensor([1, 3])
    predictions = torch.tensor([[0, 4, 0, 2, 0], [0, 0, 1, 0, 0]])
    logits = torch.nn.functional.one_hot(predictions, 6).float()
    assert mqar_accuracy(logits, labels) == {"query_accuracy": 0.75, "sequence_accuracy": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"seq_len": 15, "num_kv_pairs": 4}, "seq_len=15 is too short", id="short"),
        pytest.param({"vocab_size": 9, "num_kv_pairs": 4}, "need vocab_size >= 10", id="small-vocab"),
        pytest.param({"num_kv_pairs": 0}, "num_kv_pairs must be >= 1", id="no-pairs"),
        pytest.param({"power_a": 0.0}, "power_a must be > 0", id="power"),
    ],
)
def test_impossible_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MQARDataset(4, **{"vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4, **kwargs})
