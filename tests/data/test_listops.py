"""ListOps generator: deterministic by seed, lengths in range, labels equal to the expression's value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalaformer.data.listops import ListOpsDataset, apply_operator, decode, evaluate_tokens, listops_example


def test_same_seed_same_examples_other_seed_other_examples():
    a, b = (
        ListOpsDataset(8, min_length=20, max_length=60, seed=3),
        ListOpsDataset(8, min_length=20, max_length=60, seed=3),
    )
    c = ListOpsDataset(8, min_length=20, max_length=60, seed=4)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(8))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(8))


def test_operators_follow_the_lra_definitions():
    assert apply_operator("MAX", [2, 9, 4]) == 9
    assert apply_operator("MIN", [2, 9, 4]) == 2
    assert apply_operator("MED", [2, 9, 4]) == 4
    assert apply_operator("MED", [1, 4]) == 2  # int(2.5)
    assert apply_operator("SM", [7, 8, 9]) == 4
    # a hand-written expression through the token-level evaluator: MAX(2, 9, MIN(4, 7), 0) = 9
    tokens = [11, 3, 10, 12, 5, 8, 15, 1, 15]
    assert decode(tokens) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    assert evaluate_tokens(tokens) == 9


@pytest.mark.parametrize("lengths", [(4, 12), (40, 80), (500, 2000)])
def test_labels_are_the_values_of_the_expressions_and_lengths_in_range(lengths):
    low, high = lengths
    count = 12 if high > 500 else 40
    for index in range(count):
        tokens, label = listops_example(np.random.default_rng([7, index]), min_length=low, max_length=high)
        assert evaluate_tokens(tokens) == label
        assert len(tokens) <= high
        assert len(tokens) >= min(low, 4) if high < 20 else len(tokens) >= low - 11


def test_depth_limit_is_kept():
    for index in range(20):
        tokens, _ = listops_example(np.random.default_rng(index), min_length=50, max_length=100, max_depth=2)
        depth = deepest = 0
        for token in tokens:
            depth += 1 if 11 <= token <= 14 else -1 if token == 15 else 0
            deepest = max(deepest, depth)
        assert deepest <= 2


def test_padding_and_bad_arguments():
    tokens, label = ListOpsDataset(1, min_length=10, max_length=30)[0]
    assert tokens.shape == (30,) and tokens.dtype == torch.int64 and 0 <= int(label) <= 9
    assert evaluate_tokens(tokens) == int(label)
    with pytest.raises(ValueError, match="min_length <= max_length"):
        ListOpsDataset(4, min_length=50, max_length=20)
    with pytest.raises(ValueError, match="num_examples"):
        ListOpsDataset(0, min_length=10, max_length=20)
