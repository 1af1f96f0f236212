"""NaLa op inputs that used to give silent NaN or out-of-range outputs: options, huge keys, the cosine boundary."""

from __future__ import annotations

import math

import pytest
import torch

from nalaformer.ops import nala_attention, nala_key_map, nala_query_map, rope_angles_1d
from nalaformer.ops.nala import common


def qkv(seq_len=16, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, seq_len, 2, dim, generator=g) for _ in range(3))


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("lam", math.nan, "lam must be finite and > 0, got nan"),
        ("lam", 0.0, "lam must be finite and > 0, got 0.0"),
        ("lam", -3.0, "lam must be finite and > 0, got -3.0"),
        ("power", -1.0, "power must be finite and > 0, got -1.0"),
        ("power", math.inf, "power must be finite and > 0, got inf"),
        ("tau", math.nan, "tau must be a finite number, got nan"),
        ("temperature", math.nan, "temperature must be finite and > 0, got nan"),
        ("alpha", 0.0, "alpha must be finite and > 0"),
    ],
)
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_bad_options_raise_naming_the_option(option, value, match, causal):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=match):
        nala_attention(q, k, v, causal=causal, **{option: value})


def test_bad_options_raise_in_the_maps():
    q = torch.randn(2, 8)
    with pytest.raises(ValueError, match="lam must be finite and > 0, got nan"):
        nala_query_map(q, lam=math.nan)
    with pytest.raises(ValueError, match=r"lam must be finite and > 0, got -1\.0"):
        nala_key_map(q, lam=-1.0)
    with pytest.raises(ValueError, match=r"power must be finite and > 0, got -2\.0"):
        nala_query_map(q, power=-2.0)
    with pytest.raises(TypeError, match="lam must be a real number"):
        nala_query_map(q, lam="3")


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_keys_whose_cube_overflows_fp32_raise_instead_of_nan(causal):
    q, k, v = qkv(seq_len=64)
    with pytest.raises(ValueError, match=r"k: largest \|k\| = .* overflows torch.float32"):
        nala_attention(q, 1e13 * k, v, causal=causal)
    with pytest.raises(ValueError, match=r"k: largest \|k\|"):
        nala_attention(q, 1e13 * k, v, causal=causal, inhibit="cosine")
    # queries of any size are fine (the map reads q / ||q|| and tanh(||q||)); so are large but safe keys
    assert torch.isfinite(nala_attention(1e13 * q, 1e11 * k, v, causal=causal)).all()


@pytest.mark.parametrize("blocks", [False, True], ids=["one-block", "blocks"])
@pytest.mark.parametrize("rope", [False, True], ids=["no-rope", "rope"])
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_huge_keys_raise_on_every_fast_route(causal, rope, blocks, monkeypatch):
    # the fast path checks the key range only when the features' sums overflow: one huge key among ordinary ones,
    # with RoPE, and in a sequence cut into blocks (the sums carried from block to block) still raises
    if blocks:
        monkeypatch.setattr(common, "SINGLE_BLOCK_ELEMENTS", 0)
        monkeypatch.setattr(common, "BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(common, "MIN_BLOCK_ELEMENTS", 1)
    q, k, v = qkv(seq_len=200)
    k[0, 100, 1] = 1e13 * k[0, 100, 1].sign()
    table = rope_angles_1d(200, 8) if rope else None
    with pytest.raises(ValueError, match=r"k: largest \|k\| = .* overflows torch.float32"):
        nala_attention(q, k, v, causal=causal, rope=table, chunk_size=16)


def test_huge_key_raises_in_a_decoding_step():
    q, k, v = qkv(seq_len=8)
    _, state = nala_attention(q, k, v, causal=True, output_final_state=True)
    step = (x[:, :1].clone() for x in (q, k, v))
    q1, k1, v1 = step
    with pytest.raises(ValueError, match=r"k: largest \|k\|"):
        nala_attention(q1, 1e13 * k1, v1, causal=True, initial_state=state, output_final_state=True)
    # an ordinary step goes through
    o, _ = nala_attention(q1, k1, v1, causal=True, initial_state=state, output_final_state=True)
    assert torch.isfinite(o).all()


@pytest.mark.parametrize("dim", [2, 4, 16])
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_cosine_inhibit_stays_in_the_value_range_when_all_signs_disagree(dim, causal):
    # every query dimension negative, every key dimension positive: exact kernel 0; in fp32 the old [cos, sin]
    # pair left a residue of either sign and outputs up to 22 with v = 1
    g = torch.Generator().manual_seed(0)
    q = -torch.ones(1, 32, 1, dim) * (torch.rand(1, 32, 1, 1, generator=g) + 0.5)
    k = 10.0 * torch.ones(1, 32, 1, dim) * (torch.rand(1, 32, 1, 1, generator=g) + 0.5)
    out = nala_attention(q, k, torch.ones(1, 32, 1, dim), causal=causal, inhibit="cosine")
    assert float(out.abs().max()) <= 1.0 + 1e-5
    phi_q, phi_k = nala_query_map(q, inhibit="cosine"), nala_key_map(k, inhibit="cosine")
    assert bool((phi_q >= 0).all()) and bool((phi_k >= 0).all())
    if dim <= 4:  # alpha * |x_hat| >= 10: tanh is exactly 1 in fp32, the angles are at the boundary, the kernel is 0
        assert float(torch.einsum("bthf,bshf->bhts", phi_q, phi_k).abs().max()) == 0.0


def test_cosine_features_keep_the_paper_kernel():
    # the rotated pair [cos(pi/4 - theta), sin(pi/4 - theta)] has the kernel of [cos(theta), sin(theta)]
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 12, dtype=torch.float64, generator=g), torch.randn(7, 12, dtype=torch.float64, generator=g)

    def paper(x: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        theta = (math.pi / 4) * torch.tanh(20.0 * x / x.norm(dim=-1, keepdim=True))
        return torch.cat([magnitude * torch.cos(theta), magnitude * torch.sin(theta)], dim=-1)

    q_hat = q / q.norm(dim=-1, keepdim=True)
    power = 3.0 * (0.5 + torch.tanh(q.norm(dim=-1, keepdim=True)))
    expected = paper(q, q_hat.abs() ** power) @ paper(k, k.abs() ** 3).T
    got = nala_query_map(q, inhibit="cosine") @ nala_key_map(k, inhibit="cosine").T
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)
