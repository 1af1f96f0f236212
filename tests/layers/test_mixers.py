"""Every registered token mixer: shapes, gradients, decoding, padding, images, and named errors."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import (
    MixerState,
    NaLaAttention,
    NaLaAttention2d,
    TokenMixer,
    attention_spec,
    build_attention,
    list_attentions,
)
from nalaformer.ops import nala_attention, rope_angles_1d, rope_angles_2d
from tests.assertions import assert_close
from tests.sequences import decode_in_steps, padding_mask

DIM, HEADS = 32, 2
NAMES = list_attentions()


def causal_names():
    return [n for n in NAMES if attention_spec(n).causal]


def image_names():
    return [n for n in NAMES if attention_spec(n).image and attention_spec(n).noncausal]


def tokens(batch=2, seq_len=11, dim=DIM, seed=0):
    return torch.randn(batch, seq_len, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [n for n in NAMES if attention_spec(n).noncausal])
def test_noncausal_1d_forward_backward(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS)
    x = tokens().requires_grad_()
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", image_names())
def test_2d_non_square_and_two_resolutions(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, layout="2d")
    for height, width in [(5, 7), (8, 3)]:
        image = torch.randn(2, DIM, height, width, requires_grad=True)
        out = mixer(image)
        assert out.shape == image.shape
        # the token layout with size=(H, W) gives the same result
        flat = image.flatten(2).transpose(1, 2)
        assert_close("tokens", out.flatten(2).transpose(1, 2), mixer(flat, size=(height, width)), ratio=1e-6)
        out.sum().backward()
        assert torch.isfinite(image.grad).all()


@pytest.mark.parametrize("name", causal_names())
def test_step_by_step_decoding_equals_full_forward(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True)
    x = tokens(seq_len=13)
    full = mixer(x)
    stepped, state = decode_in_steps(mixer, x, prefill=5)
    assert isinstance(state, MixerState)
    assert torch.equal(state.position, torch.full((2,), 13))
    assert_close("decode", full, stepped)


@pytest.mark.parametrize("name", causal_names())
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded(name, side):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True)
    lengths, total = [6, 10], 10
    x = tokens(seq_len=total)
    mask = padding_mask(lengths, total, side)
    y = mixer(x, attention_mask=mask)
    for row in range(2):
        keep = mask[row]
        assert_close(f"row {row}", mixer(x[row : row + 1, keep])[0], y[row, keep])


# one mixer per kind of decoding state: linear sums, a KV cache, a delta-rule matrix (with and without decay and NaLa)
DECODING_KINDS = ["nala", "softmax", "deltanet", "gated_deltanet", "nala_deltanet", "nala_gated_deltanet"]


@pytest.mark.parametrize("name", DECODING_KINDS)
def test_left_padded_prefill_then_decode_equals_unpadded(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True)
    x = tokens(seq_len=12)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False
    prefill, state = mixer(x[:, :8], attention_mask=mask, use_cache=True)
    outputs = [prefill]
    for t in range(8, 12):
        decoded, state = mixer(x[:, t : t + 1], state=state, use_cache=True)
        outputs.append(decoded)
    combined = torch.cat(outputs, dim=1)
    assert_close("row 0", mixer(x[:1, 3:])[0], combined[0, 3:])
    assert_close("row 1", mixer(x[1:])[0], combined[1])
    # RoPE positions count real tokens only: 5 + 4 in the left-padded row, 8 + 4 in the other
    assert torch.equal(state.position, torch.tensor([9, 12]))


def test_linear_state_is_fixed_size_and_softmax_cache_grows():
    nala = build_attention("nala", DIM, HEADS, causal=True)
    softmax = build_attention("softmax", DIM, HEADS, causal=True)
    sizes = {}
    for name, mixer in [("nala", nala), ("softmax", softmax)]:
        _, short = mixer(tokens(seq_len=4), use_cache=True)
        _, long = mixer(tokens(seq_len=40), use_cache=True)
        sizes[name] = (short.nbytes(), long.nbytes())
    assert sizes["nala"][0] == sizes["nala"][1]
    assert sizes["softmax"][1] > sizes["softmax"][0]


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_nala_layer_equals_operator_with_same_projections(causal):
    torch.manual_seed(0)
    layer = NaLaAttention(DIM, HEADS, causal=causal, lepe=False, gate=False)
    x = tokens(seq_len=9)
    q, k, v = layer.in_proj(x).split(DIM, dim=-1)
    heads = (2, 9, HEADS, DIM // HEADS)
    attended = nala_attention(
        q.reshape(heads), k.reshape(heads), v.reshape(heads), causal=causal, rope=rope_angles_1d(9, DIM // HEADS)
    )
    expected = layer.out_proj(layer.out_norm(attended.reshape(2, 9, DIM)))
    assert_close("layer", expected, layer(x), ratio=1e-6)


def test_nala_2d_layer_equals_operator_with_same_projections():
    torch.manual_seed(0)
    layer = NaLaAttention2d(DIM, HEADS)
    image = torch.randn(1, DIM, 4, 6)
    x = image.flatten(2).transpose(1, 2)
    q, k, v, g = layer.in_proj(x).split(DIM, dim=-1)
    heads = (1, 24, HEADS, DIM // HEADS)
    attended = nala_attention(
        q.reshape(heads), k.reshape(heads), v.reshape(heads), rope=rope_angles_2d(4, 6, DIM // HEADS)
    ).reshape(1, 24, DIM)
    local = layer.lepe(v.transpose(1, 2).reshape(1, DIM, 4, 6)).flatten(2).transpose(1, 2)
    expected = layer.out_proj(layer.out_norm(attended + local) * torch.nn.functional.silu(g))
    assert_close("layer", expected, layer(x, size=(4, 6)), ratio=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_is_finite(name):
    spec = attention_spec(name)
    mixer = build_attention(name, DIM, HEADS, causal=not spec.noncausal)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(tokens() * 4)
    assert torch.isfinite(y.float()).all()


def test_options_reach_the_feature_map():
    mixer = build_attention("nala", DIM, HEADS, lam=2.0, temperature=3.0, inhibit="cosine")
    assert (mixer.feature_map.lam, mixer.feature_map.temperature, mixer.feature_map.inhibit) == (2.0, 3.0, "cosine")
    ablation = build_attention("sign_split_power", DIM, HEADS, power=3.0)
    assert ablation.feature_map.power == 3.0 and ablation.feature_map.inhibit == "sign"
    plain = build_attention("nala", DIM, HEADS, rope=False, lepe=False, gate=False)
    assert plain.lepe is None and plain.in_proj.out_features == 3 * DIM


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown attention 'nope'; known: nala"):
        build_attention("nope", DIM, HEADS)
    with pytest.raises(ValueError, match="num_heads=3 must divide dim=32"):
        build_attention("nala", DIM, 3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lamda'\]"):
        build_attention("nala", DIM, HEADS, lamda=2.0)
    mixer = build_attention("nala", DIM, HEADS, layout="2d")
    with pytest.raises(ValueError, match="size=\\(3, 3\\) gives 9 tokens but x has 10"):
        mixer(torch.randn(1, 10, DIM), size=(3, 3))
    with pytest.raises(ValueError, match="need size=\\(H, W\\)"):
        mixer(torch.randn(1, 9, DIM))
    with pytest.raises(ValueError, match="must have C=32 channels"):
        mixer(torch.randn(1, 16, 3, 3))
    with pytest.raises(ValueError, match=r"x must be \[B, T, C=32\]"):
        build_attention("nala", DIM, HEADS)(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="causal"):
        build_attention("nala", DIM, HEADS)(tokens(), use_cache=True)
    with pytest.raises(ValueError, match="cannot be causal"):
        build_attention("nala", DIM, HEADS, causal=True, layout="2d")


def test_a_method_without_causal_form_rejects_causal():
    class BidirectionalOnly(TokenMixer):
        supports_causal = False

    with pytest.raises(ValueError, match="BidirectionalOnly cannot be causal"):
        BidirectionalOnly(DIM, HEADS, causal=True)
