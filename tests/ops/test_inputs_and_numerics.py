"""Bad input gives named errors; edge cases and low precision give finite, accurate outputs."""

from __future__ import annotations

import pytest
import torch

from nalaformer.ops import (
    LinearAttentionState,
    apply_rope,
    nala_attention,
    rope_angles_1d,
    rope_angles_2d,
    softmax_attention,
)
from tests.assertions import assert_close, relative_error


def qkv(batch=2, seq_len=8, heads=2, dim=8, dtype=torch.float32, scale=1.0):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, seq_len, heads, dim, generator=generator).to(dtype) * scale for _ in range(3)]


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda q, k, v: (q[0], k, v), ValueError, "q must have 4 dimensions"),
        (lambda q, k, v: (q, k[:, :5], v), ValueError, "must agree in"),
        (lambda q, k, v: (q, k[:1], v), ValueError, "must agree in"),
        (lambda q, k, v: (q, k, v[:, :, :1]), ValueError, "must agree in"),
        (lambda q, k, v: (q, k[..., :4], v), ValueError, "same last dimension"),
        (lambda q, k, v: (q.long(), k, v), TypeError, "floating-point"),
        (lambda q, k, v: (q, k, "v"), TypeError, "torch.Tensor"),
    ],
    ids=["rank", "T", "B", "H", "D", "int-dtype", "not-a-tensor"],
)
def test_shape_and_dtype_errors(change, error, match):
    with pytest.raises(error, match=match):
        nala_attention(*change(*qkv()))


def test_option_errors():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="chunk_size"):
        nala_attention(q, k, v, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="mode"):
        nala_attention(q, k, v, mode="chunk")  # chunk is a causal form
    with pytest.raises(ValueError, match="causal=True"):
        nala_attention(q, k, v, output_final_state=True)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        nala_attention(q, k, v, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="only 0/1"):
        nala_attention(q, k, v, attention_mask=torch.full((2, 8), 2))
    with pytest.raises(ValueError, match="eps"):
        nala_attention(q, k, v, eps=-1.0)


@pytest.mark.parametrize(
    "cu_seqlens,match",
    [([1, 4, 8], "start at 0"), ([0, 4, 4, 8], "strictly increasing"), ([0, 4, 7], "end at the total")],
    ids=["not-zero", "not-increasing", "wrong-total"],
)
def test_cu_seqlens_errors(cu_seqlens, match):
    q, k, v = qkv(batch=1)
    with pytest.raises(ValueError, match=match):
        nala_attention(q, k, v, cu_seqlens=torch.tensor(cu_seqlens))


def test_cu_seqlens_needs_batch_one_and_integers():
    q, k, v = qkv(batch=2)
    with pytest.raises(ValueError, match="batch dimension must be 1"):
        nala_attention(q, k, v, cu_seqlens=torch.tensor([0, 8]))
    q, k, v = qkv(batch=1)
    with pytest.raises(TypeError, match="integer dtype"):
        nala_attention(q, k, v, cu_seqlens=torch.tensor([0.0, 8.0]))


def test_state_shape_errors():
    q, k, v = qkv()
    good = LinearAttentionState.zeros(2, 2, 16, 8)
    bad_kv = LinearAttentionState(good.kv[:, :, :3], good.k_sum, good.count)
    with pytest.raises(ValueError, match=r"initial_state.kv must have shape \(2, 2, 16, 8\)"):
        nala_attention(q, k, v, causal=True, initial_state=bad_kv)
    bad_count = LinearAttentionState(good.kv, good.k_sum, good.count[:1])
    with pytest.raises(ValueError, match=r"initial_state\.count"):
        nala_attention(q, k, v, causal=True, initial_state=bad_count)
    with pytest.raises(TypeError, match="LinearAttentionState"):
        nala_attention(q, k, v, causal=True, initial_state=(good.kv, good.k_sum))


def test_rope_table_errors():
    q, k, v = qkv()
    cos, sin = rope_angles_1d(8, 8)
    with pytest.raises(ValueError, match="rope cos must have shape"):
        nala_attention(q, k, v, rope=(cos[:5], sin[:5]))
    with pytest.raises(ValueError, match="rope cos must have shape"):
        nala_attention(q, k, v, rope=(cos[:, :4], sin[:, :4]))
    with pytest.raises(TypeError, match="pair"):
        nala_attention(q, k, v, rope=cos)
    with pytest.raises(ValueError, match="multiple of 4"):
        rope_angles_2d(4, 4, 6)


def test_rope_2d_tables_follow_rows_then_columns():
    cos, sin = rope_angles_2d(3, 5, 8)
    assert cos.shape == (15, 8)
    # token (row 2, column 0): the column half has angle 0, the row half angle 2 * freq
    assert torch.allclose(cos[10, 4:], torch.ones(4)) and torch.allclose(sin[10, 4:], torch.zeros(4))
    assert torch.allclose(cos[10, :2], torch.cos(torch.tensor([2.0, 2.0])))


def test_rope_preserves_pair_norms_and_relative_positions():
    x = torch.randn(1, 6, 1, 8, dtype=torch.float64)
    y = torch.randn(1, 6, 1, 8, dtype=torch.float64)
    cos, sin = rope_angles_1d(6, 8)
    xr, yr = apply_rope(x, cos.double(), sin.double()), apply_rope(y, cos.double(), sin.double())
    assert torch.allclose(xr.norm(dim=-1), x.norm(dim=-1))
    # <R_s x, R_t y> depends on t - s only: shift both by 3 positions
    cos3, sin3 = rope_angles_1d(torch.arange(3, 9), 8)
    xs, ys = apply_rope(x, cos3.double(), sin3.double()), apply_rope(y, cos3.double(), sin3.double())
    assert torch.allclose(xr[0, :, 0] @ yr[0, :, 0].T, xs[0, :, 0] @ ys[0, :, 0].T)


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_zero_vectors_and_single_token_are_finite(causal):
    q, k, v = qkv(seq_len=1)
    q, k = torch.zeros_like(q).requires_grad_(), torch.zeros_like(k).requires_grad_()
    out = nala_attention(q, k, v, causal=causal)
    assert torch.isfinite(out).all() and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_large_inputs_are_finite(causal):
    q, k, v = qkv(seq_len=70, scale=1e3)
    for x in (q, k, v):
        x.requires_grad_()
    out = nala_attention(q, k, v, causal=causal, chunk_size=16)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_half_precision_inputs_match_fp32(dtype, causal):
    # keys of magnitude ~50: k^3 ~ 1e5 overflows fp16 unless the features are computed in fp32
    q, k, v = qkv(seq_len=50, dim=16)
    k = k * 50
    half = [x.to(dtype) for x in (q, k, v)]
    reference = nala_attention(*[x.float() for x in half], causal=causal)
    out = nala_attention(*half, causal=causal)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert relative_error(reference, out.float()) < 1e-2


def test_autocast_keeps_features_in_fp32():
    q, k, v = qkv(seq_len=40, dim=16)
    reference = nala_attention(q, k, v, causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nala_attention(q, k, v, causal=True)
    assert out.dtype == torch.float32
    assert_close("autocast", reference, out, ratio=1e-5)


def test_softmax_attention_masks_and_rope():
    q, k, v = qkv(seq_len=10, dim=8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :4] = False
    out = softmax_attention(q, k, v, causal=True, attention_mask=mask, rope=rope_angles_1d(10, 8))
    assert torch.isfinite(out).all() and torch.equal(out[0, :4], torch.zeros_like(out[0, :4]))
    # RoPE scores depend on relative positions only, so the unpadded call may start at position 0
    single = softmax_attention(q[:1, 4:], k[:1, 4:], v[:1, 4:], causal=True, rope=rope_angles_1d(6, 8))
    assert_close("padded row", single[0], out[0, 4:])
