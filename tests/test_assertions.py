"""The suite's comparison helpers: rounding-level differences pass (they depend on the CPU), real ones fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.assertions import assert_equal_up_to_rounding, assert_greedy_tokens_match, dtype_tolerance


def test_rounding_differences_pass_and_real_differences_fail():
    ref = torch.randn(4, 63, dtype=torch.float32)
    # what another BLAS blocking gives: the same values a few units of rounding apart (torch.equal would fail)
    nudged = ref + ref.abs() * 4 * torch.finfo(torch.float32).eps
    assert not torch.equal(ref, nudged)
    assert_equal_up_to_rounding("nudged", ref, nudged)
    with pytest.raises(AssertionError, match="shifted"):
        assert_equal_up_to_rounding("shifted", ref, ref + 1e-3)
    assert dtype_tolerance(torch.float64) < dtype_tolerance(torch.float32) < dtype_tolerance(torch.bfloat16)


class _FixedLogits(nn.Module):
    """A stand-in LM whose next-token logits are fixed: token 0 and 1 tie when ``tie``, else token 0 leads."""

    def __init__(self, tie: bool) -> None:
        super().__init__()
        self.logits = torch.tensor([2.0, 2.0 if tie else 1.0, -1.0])

    def forward(self, ids):
        return type("Out", (), {"logits": self.logits.expand(*ids.shape, 3)})()


def test_greedy_tokens_may_part_only_at_a_tie():
    expected = torch.tensor([[2, 2, 0, 0]])
    parted = torch.tensor([[2, 2, 1, 0]])
    assert_greedy_tokens_match(_FixedLogits(tie=False), expected, expected)
    assert_greedy_tokens_match(_FixedLogits(tie=True), expected, parted)
    with pytest.raises(AssertionError, match="position 2"):
        assert_greedy_tokens_match(_FixedLogits(tie=False), expected, parted)
