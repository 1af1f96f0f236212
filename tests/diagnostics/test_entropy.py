"""Row entropies and correlation statistics against direct references (scipy where it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nalaformer.diagnostics import (
    average_ranks,
    pearson,
    positive_sequence_entropy,
    same_sign_fraction,
    softmax_entropy,
    spearman,
)


def _reference_pse(row: list[float]) -> float:
    total = sum(row)
    return -sum((x / total) * math.log(x / total) for x in row if x > 0)


@pytest.mark.parametrize("length", [1, 7, 63], ids=lambda n: f"N{n}")
def test_pse_matches_the_definition_and_ignores_scale(length: int) -> None:
    generator = torch.Generator().manual_seed(length)
    rows = torch.rand(5, length, generator=generator, dtype=torch.float64)
    # a zero entry contributes 0 log 0 = 0
    rows[0, -1] = 0.0 if length > 1 else rows[0, -1]
    entropy = positive_sequence_entropy(rows)
    reference = torch.tensor([_reference_pse(r.tolist()) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(entropy, reference, rtol=1e-12, atol=1e-12)
    # Prop. 2 in one line: a positive rescaling of a row leaves its PSE unchanged
    torch.testing.assert_close(positive_sequence_entropy(rows * 37.5), entropy, rtol=1e-12, atol=1e-12)


def test_pse_zero_row_is_nan_and_mask_drops_entries() -> None:
    rows = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 5.0]])
    entropy = positive_sequence_entropy(rows)
    assert math.isnan(entropy[0]) and entropy[1] == pytest.approx(_reference_pse([1.0, 1.0, 5.0]))
    masked = positive_sequence_entropy(rows, mask=torch.tensor([True, True, False]))
    assert masked[1] == pytest.approx(math.log(2.0))


def test_pse_rejects_negative_weights_and_non_tensors() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        positive_sequence_entropy(torch.tensor([1.0, -0.5]))
    assert positive_sequence_entropy(torch.tensor([1.0, -1e-12, 1.0]), negative_tolerance=1e-9) == pytest.approx(
        math.log(2.0)
    )
    with pytest.raises(TypeError, match="weights"):
        positive_sequence_entropy([1.0, 2.0])


@pytest.mark.parametrize("scale", [0.1, 3.0, 40.0], ids=lambda s: f"scale{s:g}")
def test_softmax_entropy_equals_pse_of_exp(scale: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(4, 19, generator=generator, dtype=torch.float64)
    reference = positive_sequence_entropy((logits - logits.amax(-1, keepdim=True)).exp())
    torch.testing.assert_close(softmax_entropy(logits), reference, rtol=1e-10, atol=1e-12)
    mask = torch.arange(19) < 5
    torch.testing.assert_close(
        softmax_entropy(logits, mask=mask), softmax_entropy(logits[:, :5]), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="at least one entry"):
        softmax_entropy(logits, mask=torch.zeros(19, dtype=torch.bool))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_correlations_match_scipy(ties: bool) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.normal(size=41)
    y = -0.6 * x + rng.normal(size=41)
    if ties:
        x, y = np.round(x, 0), np.round(y, 0)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x), atol=0)


def test_correlation_edge_cases() -> None:
    assert math.isnan(pearson([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))
    # NaN pairs (zero rows) are dropped, not propagated
    assert pearson([1.0, 2.0, 3.0, math.nan], [2.0, 4.0, 6.0, 1.0]) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([9.0, 4.0, 1.0, 0.0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        pearson([1.0, 2.0, 3.0], [1.0, 2.0])


def test_same_sign_fraction_counts_positive_products() -> None:
    q = torch.tensor([[1.0, -2.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    k = torch.tensor([[2.0, -1.0, -1.0, 5.0], [-1.0, -1.0, -1.0, -1.0]])
    torch.testing.assert_close(same_sign_fraction(q, k), torch.tensor([0.5, 0.0], dtype=torch.float64))
