"""Hook capture and the quadratic effective weights, checked against the blocks' own forward passes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nalaformer.diagnostics import (
    CapturedAttention,
    analyse_attention,
    attention_blocks,
    attention_rows,
    capture_attention,
    same_sign_fraction,
    summarise,
    temperature_sweep,
)
from nalaformer.layers import build_attention
from nalaformer.ops import nala_exponent

DIM, HEADS = 32, 2
MIXERS = ["softmax", "nala", "nala_cosine", "elu", "relu", "polaformer", "cosformer", "hedgehog", "flatten"]


def _tokens(batch: int, seq_len: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, seq_len, DIM, generator=torch.Generator().manual_seed(seed))


def _reconstruct(block: nn.Module, record: CapturedAttention, x: torch.Tensor) -> torch.Tensor:
    """Block output rebuilt from the effective weights: ``out_proj(LayerNorm(W v))`` (no LePE, no gate)."""
    v = block.in_proj(x).split(block.dim, dim=-1)[2].double()
    if record.attention_mask is not None:
        v = v * record.attention_mask[..., None]
    batch, seq_len = x.shape[:2]
    outputs = torch.zeros(batch, seq_len, block.dim, dtype=torch.float64)
    for b in range(batch):
        view = attention_rows(record, b)
        weights = view.applied_weights
        streams = weights.shape[0] // block.num_heads
        values = v[b].reshape(seq_len, block.num_heads, streams, -1)
        heads = weights.reshape(block.num_heads, streams, seq_len, seq_len)
        o = torch.einsum("hsqk,khsd->qhsd", heads, values).reshape(seq_len, block.dim)
        valid = torch.ones(seq_len, dtype=torch.bool) if record.attention_mask is None else record.attention_mask[b]
        outputs[b, valid] = o[valid]
    y = block.out_proj(block.out_norm(outputs.float()))
    if record.attention_mask is not None:
        y = y * record.attention_mask[..., None]
    return y


# every mixer in the hardest setting (causal, RoPE, padding); the other settings on three representative ones
CASES = [(name, True, True) for name in MIXERS] + [
    (name, causal, rope)
    for name in ("softmax", "nala", "polaformer")
    for causal, rope in ((False, False), (False, True), (True, False))
]


@pytest.mark.parametrize(
    ("name", "causal", "rope"),
    CASES,
    ids=[f"{n}-{'causal' if c else 'bidirectional'}-{'rope' if r else 'no_rope'}" for n, c, r in CASES],
)
def test_effective_weights_reproduce_the_block_output(name: str, causal: bool, rope: bool) -> None:
    torch.manual_seed(0)
    block = build_attention(name, DIM, HEADS, causal=causal, rope=rope, lepe=False, gate=False).eval()
    x = _tokens(2, 13, seed=1)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, :4] = False
    records = capture_attention(block, {"x": x, "attention_mask": mask})
    assert len(records) == 1
    with torch.no_grad():
        expected = block(x, attention_mask=mask) * mask[..., None]
        rebuilt = _reconstruct(block, records[0], x)
    torch.testing.assert_close(rebuilt, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["softmax", "nala"])
def test_effective_weights_reproduce_an_image_block(name: str) -> None:
    torch.manual_seed(0)
    block = build_attention(name, DIM, HEADS, layout="2d", lepe=False, gate=False).eval()
    image = torch.randn(2, DIM, 3, 5, generator=torch.Generator().manual_seed(2))
    record = capture_attention(block, image)[0]
    assert record.size == (3, 5) and record.q.shape == (2, 15, HEADS, DIM // HEADS)
    tokens = image.flatten(2).transpose(1, 2)
    with torch.no_grad():
        expected = block(image).flatten(2).transpose(1, 2)
        rebuilt = _reconstruct(block, record, tokens)
    torch.testing.assert_close(rebuilt, expected, rtol=1e-4, atol=1e-4)


def test_weights_without_rope_are_rows_of_a_distribution() -> None:
    torch.manual_seed(0)
    block = build_attention("nala", DIM, HEADS, rope=True).eval()
    record = capture_attention(block, _tokens(1, 17, seed=2))[0]
    view = attention_rows(record)
    assert (view.weights >= 0).all()
    # rows sum to 1 up to the eps * n the denominator adds
    row_sums = view.weights.sum(-1)
    assert (row_sums <= 1).all() and (row_sums > 1 - 1e-3).all()
    # with RoPE on the numerator the applied weights are not a distribution (docs/method.md §4.2)
    assert (view.numerator_weights < 0).any()


def test_capture_finds_nested_blocks_and_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = build_attention("nala", DIM, HEADS)
            self.inner = nn.Sequential(nn.Linear(DIM, DIM), nn.GELU())
            self.second = build_attention("softmax", DIM, HEADS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.first(x)
            return self.second(self.inner(x)) + self.second(x)

    model = Wrapper().train()
    x = _tokens(3, 9, seed=3)
    with torch.no_grad():
        reference = model.eval()(x)
    model.train()
    records = capture_attention(model, x, max_samples=2)
    assert [r.label for r in records] == ["first", "second", "second#1"]
    assert [name for name, _ in attention_blocks(model)] == ["first", "second"]
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # the captured q, k are the block's own projection, split into heads
    q, k = model.first.in_proj(x[:2]).split(DIM, dim=-1)[:2]
    torch.testing.assert_close(records[0].q, q.reshape(2, 9, HEADS, DIM // HEADS).detach())
    torch.testing.assert_close(records[0].k, k.reshape(2, 9, HEADS, DIM // HEADS).detach())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference)


def test_capture_errors_and_decoding_calls() -> None:
    with pytest.raises(ValueError, match="no nalaformer attention block"):
        capture_attention(nn.Linear(4, 4), torch.zeros(1, 4))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        capture_attention("model", torch.zeros(1))
    block = build_attention("nala", DIM, HEADS, causal=True)
    with pytest.raises(ValueError, match="max_samples"):
        capture_attention(block, _tokens(1, 4, 0), max_samples=0)

    class TwoSteps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, state = self.mixer(x[:, :3], use_cache=True)
            return self.mixer(x[:, 3:], state=state, use_cache=True)[0]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = capture_attention(TwoSteps(), _tokens(1, 5, 0))
    assert len(records) == 1 and records[0].q.shape[1] == 3
    assert any("decoding state" in str(w.message) for w in caught)


def _record(name: str, q: torch.Tensor, k: torch.Tensor, **options) -> CapturedAttention:
    block = build_attention(name, q.shape[2] * q.shape[3], q.shape[2], rope=False, **options)
    return CapturedAttention("hand", 0, block, q, k, torch.arange(q.shape[1]), None, None)


def test_zero_rows_are_counted_not_guessed() -> None:
    # queries all positive, keys all negative: under NaLa's sign split no dimension agrees, every row is 0
    generator = torch.Generator().manual_seed(0)
    q = torch.rand(1, 6, 1, 8, generator=generator) + 0.1
    k = -torch.rand(1, 6, 1, 8, generator=generator) - 0.1
    layer = analyse_attention(_record("nala", q, k))
    assert np.isnan(layer.values["entropy"]).all() and layer.zero_rows.tolist() == [6]
    summary = summarise([layer])["layers"][0]
    assert summary["zero_rows"] == 6 and math.isnan(summary["heads"][0]["entropy_mean"])


def test_per_query_statistics_match_direct_computation() -> None:
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 11, 2, 16, generator=generator)
    k = torch.randn(2, 11, 2, 16, generator=generator)
    record = _record("nala", q, k, temperature=2.0)
    layer = analyse_attention(record, max_queries=5, seed=1)
    assert layer.values["entropy"].shape == (2, 10) and layer.method == "nala T=2"
    generator = torch.Generator().manual_seed(1)
    for b in range(2):
        rows = torch.randperm(11, generator=generator)[:5].sort().values
        view = attention_rows(record, b, rows)
        for h in range(2):
            columns = slice(5 * b, 5 * b + 5)
            norms = q[b, rows, h].double().norm(dim=-1)
            np.testing.assert_allclose(layer.values["q_norm"][h, columns], norms.numpy(), rtol=1e-12)
            np.testing.assert_allclose(
                layer.values["exponent"][h, columns], nala_exponent(norms, 3.0, 0.5, 2.0).numpy(), rtol=1e-12
            )
            for i, row in enumerate(rows.tolist()):
                kernel = view.scores[h, i]
                p = kernel / kernel.sum()
                entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
                top = int(kernel.argmax())
                assert layer.values["entropy"][h, 5 * b + i] == pytest.approx(entropy, abs=1e-10)
                assert layer.values["k_argmax_norm"][h, 5 * b + i] == pytest.approx(float(k[b, top, h].norm()), 1e-6)
                expected_sign = float(same_sign_fraction(q[b, row, h], k[b, top, h]))
                assert layer.values["same_sign_fraction"][h, 5 * b + i] == expected_sign


def _rank_one_block(name: str, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A block whose queries share one direction and whose norm is input channel 0; keys from the other channels."""
    torch.manual_seed(seed)
    block = build_attention(name, 16, 1, rope=False, lepe=False, gate=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        block.in_proj.bias.zero_()
        weight = torch.zeros_like(block.in_proj.weight)
        weight[:16, 0] = torch.randn(16, generator=generator) / 4
        weight[16:32, 1:] = torch.randn(16, 15, generator=generator)
        weight[32:48] = torch.randn(16, 16, generator=generator)
        block.in_proj.weight.copy_(weight)
    x = torch.randn(1, 48, 16, generator=generator) / 4
    x[..., 0] = torch.linspace(0.2, 12.0, 48)
    return block, x


def test_softmax_entropy_correlates_negatively_with_query_norm_and_relu_is_flat() -> None:
    softmax, x = _rank_one_block("softmax", seed=0)
    summary = summarise([analyse_attention(capture_attention(softmax, x)[0])])["layers"][0]["heads"][0]
    assert summary["pearson_entropy_q_norm"] < -0.9 and summary["spearman_entropy_q_norm"] == pytest.approx(-1.0)

    relu, x = _rank_one_block("relu", seed=0)
    layer = analyse_attention(capture_attention(relu, x)[0])
    # same direction, same keys: every row has the same entropy whatever ||q|| is (Prop. 2), up to the fp32
    # rounding of the projection that makes the queries
    assert np.ptp(layer.values["q_norm"]) > 5.0
    assert np.ptp(layer.values["entropy"]) < 1e-6

    nala, x = _rank_one_block("nala", seed=0)
    sweep = temperature_sweep(capture_attention(nala, x), temperatures=(1.0, 8.0))
    low, high = sweep["layers"][0]["by_temperature"]
    assert low["spearman_entropy_q_norm"] < -0.9
    # a larger temperature keeps fewer queries in tanh's saturated zone
    assert high["exponent_saturated_fraction"] < low["exponent_saturated_fraction"]
    assert high["exponent_std"] > 0


def test_non_attention_blocks_are_rejected_by_analysis() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 1, 8, generator=generator)
    record = _record("nala", q, q)
    record.module = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="SoftmaxAttention and LinearAttention"):
        analyse_attention(record)
    with pytest.raises(TypeError, match="NaLa feature maps only"):
        analyse_attention(_record("relu", q, q), temperature=2.0)
    with pytest.raises(ValueError, match="max_queries"):
        analyse_attention(_record("relu", q, q), max_queries=0)
