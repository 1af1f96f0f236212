"""ListOps, the hierarchical reasoning task of Long Range Arena, generated from its grammar.

An expression is a tree of list operators over the digits 0-9, written in prefix form with a closing bracket::

    [MAX 2 9 [MIN 4 7 ] 0 ]   ->   9

The operators are ``MAX``, ``MIN``, ``MED`` (the median, rounded down to an integer as LRA's ``int(np.median)`` does)
and ``SM`` (the sum modulo 10). The label is the value of the whole expression, one of ten classes. LRA draws trees of
depth <= 10 with <= 10 arguments per operator and keeps those of 500-2,000 tokens; here a tree grows from one operator
by replacing random digit leaves with new operators until it reaches a length drawn uniformly from ``[min_length,
max_length]``, so every length in the range is reachable without rejection sampling.

Token ids: 0 is padding, 1-10 are the digits 0-9, then ``[MAX``, ``[MIN``, ``[MED``, ``[SM`` and ``]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

PAD = 0
OPERATORS = ("MAX", "MIN", "MED", "SM")
TOKENS = ("<pad>", *(str(d) for d in range(10)), *(f"[{op}" for op in OPERATORS), "]")
VOCAB_SIZE = len(TOKENS)
NUM_CLASSES = 10
_DIGIT_BASE = 1
_OP_BASE = 11
_CLOSE = VOCAB_SIZE - 1


@dataclass
class _Node:
    op: str
    args: list = field(default_factory=list)  # ints (digits) or _Node


def _token_count(node: _Node | int) -> int:
    if isinstance(node, int):
        return 1
    return 2 + sum(_token_count(a) for a in node.args)


def apply_operator(op: str, values: list[int]) -> int:
    """The value of one list operator applied to its (already evaluated) arguments."""
    if op == "MAX":
        return max(values)
    if op == "MIN":
        return min(values)
    if op == "MED":
        return int(np.median(values))
    if op == "SM":
        return sum(values) % 10
    raise ValueError(f"apply_operator: op must be one of {OPERATORS}, got {op!r}")


def _evaluate(node: _Node | int) -> int:
    if isinstance(node, int):
        return node
    return apply_operator(node.op, [_evaluate(a) for a in node.args])


def _tokens(node: _Node | int, out: list[int]) -> None:
    if isinstance(node, int):
        out.append(_DIGIT_BASE + node)
        return
    out.append(_OP_BASE + OPERATORS.index(node.op))
    for arg in node.args:
        _tokens(arg, out)
    out.append(_CLOSE)


def listops_example(
    rng: np.random.Generator, *, min_length: int, max_length: int, max_depth: int = 10, max_args: int = 10
) -> tuple[np.ndarray, int]:
    """One ListOps expression drawn with ``rng``.

    Args:
        rng: the numpy generator that decides everything about this expression.
        min_length, max_length: the token count is drawn uniformly from ``[min_length, max_length]`` (>= 4) and the
            tree grows until it reaches it (it may end up to ``max_args + 1`` tokens short when no leaf is left
            within ``max_depth`` or the remaining budget is smaller than the smallest operator).
        max_depth: deepest operator nesting (the root is depth 1).
        max_args: most arguments of one operator (>= 2).

    Returns:
        ``(tokens int64 [L], label)`` with ``L <= max_length``; ``label`` in ``0 .. 9``.
    """
    if not 4 <= min_length <= max_length:
        raise ValueError(f"listops: need 4 <= min_length <= max_length, got {min_length} and {max_length}")
    if max_args < 2 or max_depth < 1:
        raise ValueError(f"listops: need max_args >= 2 and max_depth >= 1, got {max_args} and {max_depth}")
    target = int(rng.integers(min_length, max_length + 1))

    def new_node(budget: int) -> _Node:
        # an operator with k digit arguments takes k + 2 tokens
        count = int(rng.integers(2, min(max_args, budget - 2) + 1))
        return _Node(OPERATORS[int(rng.integers(len(OPERATORS)))], [int(d) for d in rng.integers(0, 10, count)])

    root = new_node(min(target, max_args + 2))
    length = _token_count(root)
    # leaves that may still become operators: (parent, index in parent.args, depth of parent)
    leaves = [(root, i, 1) for i in range(len(root.args))] if max_depth > 1 else []
    while length < target and leaves:
        budget = target - length + 1  # replacing a digit frees its one token
        if budget < 4:
            break
        parent, index, depth = leaves.pop(int(rng.integers(len(leaves))))
        child = new_node(budget)
        parent.args[index] = child
        length += _token_count(child) - 1
        if depth + 1 < max_depth:
            leaves.extend((child, i, depth + 1) for i in range(len(child.args)))
    tokens: list[int] = []
    _tokens(root, tokens)
    return np.asarray(tokens, dtype=np.int64), _evaluate(root)


def decode(tokens: np.ndarray | torch.Tensor | list[int]) -> str:
    """The expression as text (padding dropped), e.g. ``"[MAX 2 9 [MIN 4 7 ] 0 ]"``."""
    return " ".join(TOKENS[int(t)] for t in tokens if int(t) != PAD)


def evaluate_tokens(tokens: np.ndarray | torch.Tensor | list[int]) -> int:
    """The value of a tokenised expression, computed from the tokens alone (a reference for the generator)."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    for token in (int(t) for t in tokens if int(t) != PAD):
        if _DIGIT_BASE <= token < _OP_BASE:
            if not stack:
                raise ValueError("evaluate_tokens: a digit outside any operator")
            stack[-1][1].append(token - _DIGIT_BASE)
        elif _OP_BASE <= token < _CLOSE:
            stack.append((OPERATORS[token - _OP_BASE], []))
        elif token == _CLOSE:
            op, values = stack.pop()
            value = apply_operator(op, values)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        else:
            raise ValueError(f"evaluate_tokens: unknown token id {token} (vocabulary of {VOCAB_SIZE})")
    if result is None or stack:
        raise ValueError("evaluate_tokens: unbalanced expression")
    return result


class ListOpsDataset(Dataset):
    """``num_examples`` ListOps expressions, right-padded with 0 to ``max_length``; example ``i`` depends only on
    ``(seed, i)``. Yields ``(tokens int64 [max_length], label int64 [])``.

    Args:
        num_examples: dataset size (> 0).
        min_length, max_length: token-count range of the expressions (LRA: 500 and 2,000).
        max_depth, max_args: the tree limits (LRA: 10 and 10).
        seed: seed of the whole dataset; use different seeds for training and validation sets.
    """

    vocab_size = VOCAB_SIZE
    num_classes = NUM_CLASSES

    def __init__(
        self,
        num_examples: int,
        *,
        min_length: int = 500,
        max_length: int = 2000,
        max_depth: int = 10,
        max_args: int = 10,
        seed: int = 0,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"ListOpsDataset: num_examples must be >= 1, got {num_examples}")
        # one draw validates the arguments before any example is asked for
        listops_example(
            np.random.default_rng(0),
            min_length=min_length,
            max_length=max_length,
            max_depth=max_depth,
            max_args=max_args,
        )
        self.num_examples = num_examples
        self.min_length, self.max_length = min_length, max_length
        self.max_depth, self.max_args = max_depth, max_args
        self.seed = seed

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"ListOpsDataset: index {index} out of range for {self.num_examples} examples")
        tokens, label = listops_example(
            np.random.default_rng([self.seed, index]),
            min_length=self.min_length,
            max_length=self.max_length,
            max_depth=self.max_depth,
            max_args=self.max_args,
        )
        padded = np.zeros(self.max_length, dtype=np.int64)
        padded[: len(tokens)] = tokens
        return torch.from_numpy(padded), torch.tensor(label, dtype=torch.int64)
