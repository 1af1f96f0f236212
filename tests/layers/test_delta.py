"""Delta-rule mixers (deltanet, gated_deltanet, nala_deltanet, nala_gated_deltanet) against a hand-built reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nalaformer.layers import DeltaRuleAttention, DeltaRuleState, MixerState, build_attention
from nalaformer.layers.delta import NALA_DELTA_LAM
from nalaformer.ops import nala_key_map, nala_query_map
from nalaformer.ops.delta import naive_recurrent_delta_rule
from tests.assertions import assert_close

DIM, HEADS = 32, 2
HEAD_DIM = DIM // HEADS
NAMES = ["deltanet", "gated_deltanet", "nala_deltanet", "nala_gated_deltanet"]


def tokens(batch: int = 2, seq_len: int = 11, seed: int = 0, dim: int = DIM) -> torch.Tensor:
    return torch.randn(batch, seq_len, dim, generator=torch.Generator().manual_seed(seed))


def reference_forward(mixer: DeltaRuleAttention, x: torch.Tensor) -> torch.Tensor:
    """The mixer written out step by step: projection, causal conv, maps, beta / decay, naive delta rule, norm, gate."""
    batch, seq_len, _ = x.shape
    q, k, v, g = mixer.in_proj(x).split(DIM, dim=-1)
    qkv = torch.cat([q, k, v], dim=-1).transpose(1, 2)
    conv = mixer.qkv_conv.conv
    qkv = F.conv1d(F.pad(qkv, (conv.kernel_size[0] - 1, 0)), conv.weight, conv.bias, groups=3 * DIM)
    q, k, v = (t.reshape(batch, seq_len, HEADS, HEAD_DIM) for t in qkv.transpose(1, 2).split(DIM, dim=-1))
    if mixer.feature_map.__class__.__name__ == "NaLaFeatureMap":
        lam = mixer.feature_map.lam
        phi_q, phi_k = nala_query_map(q, lam=lam), nala_key_map(k, lam=lam)
    else:
        phi_q, phi_k = F.silu(q), F.silu(k)
    phi_k = phi_k / phi_k.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    if mixer.query_norm == "l2":
        phi_q = phi_q / phi_q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    beta = torch.sigmoid(mixer.beta_proj(x))
    log_decay = None
    if mixer.gated:
        log_decay = -mixer.A_log.exp() * F.softplus(mixer.decay_proj(x) + mixer.dt_bias)
    o = naive_recurrent_delta_rule(phi_q, phi_k, F.silu(v), beta, g=log_decay)
    return mixer.out_proj(mixer.out_norm(o.reshape(batch, seq_len, DIM)) * F.silu(g))


@pytest.mark.parametrize("name", NAMES)
def test_mixer_equals_hand_built_reference(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True, chunk_size=4)
    x = tokens(seq_len=13)
    assert_close(name, reference_forward(mixer, x), mixer(x), ratio=1e-5)


@pytest.mark.parametrize("name", ["nala_deltanet", "nala_gated_deltanet"])
def test_nala_variant_without_query_norm_equals_reference(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True, chunk_size=4, query_norm="none")
    x = tokens(seq_len=13)
    assert_close(name, reference_forward(mixer, x), mixer(x), ratio=1e-5)


@pytest.mark.parametrize("name", ["nala_deltanet", "nala_gated_deltanet"])
def test_nala_delta_defaults_to_lambda_one_and_keeps_lambda_an_option(name):
    """NaLa+DN / NaLa+GDN default to lam = 1 (the linear-attention NaLa keeps the released 3); lam stays an option."""
    assert NALA_DELTA_LAM == 1.0
    assert build_attention(name, DIM, HEADS, causal=True).feature_map.lam == 1.0
    assert build_attention("nala", DIM, HEADS, causal=True).feature_map.lam == 3.0
    torch.manual_seed(0)
    released = build_attention(name, DIM, HEADS, causal=True, lam=3.0, chunk_size=4)
    assert released.feature_map.lam == 3.0
    x = tokens(seq_len=13)
    assert_close(name, reference_forward(released, x), released(x), ratio=1e-5)


def participation_ratio(features: torch.Tensor) -> torch.Tensor:
    """How many feature dimensions each vector spreads over: 1 / sum_i w_i^2 with w = phi^2 / ||phi||^2."""
    weights = features.pow(2) / features.pow(2).sum(-1, keepdim=True)
    return 1.0 / weights.pow(2).sum(-1)


def _spy_on_delta_rule(monkeypatch) -> dict:
    """Route the delta mixers' op through the naive recurrence and keep the q / k it was given (filled per call)."""
    import nalaformer.layers.delta as delta_module

    seen = {}

    def spy(q, k, v, beta, **kwargs):
        seen["q"], seen["k"] = q.detach(), k.detach()
        kwargs.pop("chunk_size")
        return naive_recurrent_delta_rule(q, k, v, beta, **kwargs)

    monkeypatch.setattr(delta_module, "delta_rule", spy)
    return seen


def test_default_lambda_spreads_the_delta_rules_features(monkeypatch):
    """The reason for the default: at lam = 3 the unit key / query features the delta rule stores and reads use a
    few of their 2D dimensions (fewer than DeltaNet's l2norm(silu) uses of D); lam = 1 spreads them over more."""
    seen = _spy_on_delta_rule(monkeypatch)
    spread = {}
    for name, options in [("gated_deltanet", {}), ("nala_gated_deltanet", {"lam": 3.0}), ("nala_gated_deltanet", {})]:
        torch.manual_seed(0)
        build_attention(name, 64, 2, causal=True, **options)(tokens(batch=4, seq_len=32, dim=64))
        spread[(name, bool(options))] = [float(participation_ratio(seen[t]).mean()) for t in ("q", "k")]
    deltanet, released, default = (
        spread[("gated_deltanet", False)],
        spread[("nala_gated_deltanet", True)],
        spread[("nala_gated_deltanet", False)],
    )
    for i, which in enumerate(("query", "key")):
        assert released[i] < 0.5 * deltanet[i], (which, released, deltanet)
        assert default[i] > 2.0 * released[i], (which, default, released)


@pytest.mark.parametrize("head_dim", [16, 32])
def test_nala_delta_reads_the_state_with_deltanets_query_scale(monkeypatch, head_dim):
    """The delta rule's read-out ``S_tᵀ phi_q`` has no normaliser: NaLa's raw query features (norm ~0.03 at D=32 with
    the released lam = 3) would read ~40x less than DeltaNet's unit queries. The default L2-normalises them (at any
    lam); keys are always unit."""
    seen = _spy_on_delta_rule(monkeypatch)
    norms = {}
    for name, options in [
        ("deltanet", {}),
        ("nala_deltanet", {}),
        ("nala_deltanet", {"query_norm": "none", "lam": 3.0}),
    ]:
        torch.manual_seed(0)
        build_attention(name, 2 * head_dim, 2, causal=True, **options)(tokens(seq_len=16, dim=2 * head_dim))
        norms[(name, bool(options))] = seen["q"].norm(dim=-1)
        assert_close("unit keys", torch.ones_like(seen["k"][..., 0]), seen["k"].norm(dim=-1), ratio=1e-6)
    assert_close("deltanet", torch.ones_like(norms[("deltanet", False)]), norms[("deltanet", False)], ratio=1e-6)
    assert_close("nala l2", torch.ones_like(norms[("nala_deltanet", False)]), norms[("nala_deltanet", False)], 1e-6)
    assert float(norms[("nala_deltanet", True)].median()) < 0.2


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True)
    x = tokens(seq_len=9).requires_grad_()
    mixer(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for parameter_name, parameter in mixer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize(
    ("name", "features"),
    [pytest.param("deltanet", HEAD_DIM, id="deltanet"), pytest.param("nala_gated_deltanet", 2 * HEAD_DIM, id="nala")],
)
def test_state_is_fixed_size_and_reorders(name, features):
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True)
    _, short = mixer(tokens(seq_len=3), use_cache=True)
    _, state = mixer(tokens(seq_len=40), use_cache=True)
    assert isinstance(state.attention, DeltaRuleState)
    assert state.attention.recurrent.shape == (2, HEADS, features, HEAD_DIM)
    assert state.attention.recurrent.dtype == torch.float32
    assert state.attention.conv.shape == (2, 3 * DIM, 3)
    assert short.nbytes() == state.nbytes()
    # Beam-search style reordering of the batch rows keeps each row's continuation.
    step = tokens(seq_len=1, seed=1)
    swapped = state.index_select(torch.tensor([1, 0]))
    assert isinstance(swapped, MixerState) and isinstance(swapped.attention, DeltaRuleState)
    out, _ = mixer(step, state=state, use_cache=True)
    out_swapped, _ = mixer(step.flip(0), state=swapped, use_cache=True)
    assert_close("reordered", out, out_swapped.flip(0), ratio=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_long_loud_input_stays_finite(name):
    """Unit keys keep the recurrence bounded even for large activations (NaLa keys are |k|^3 before normalising)."""
    torch.manual_seed(0)
    mixer = build_attention(name, DIM, HEADS, causal=True, allow_neg_eigval=True)
    _, state = mixer(10.0 * tokens(batch=1, seq_len=300), use_cache=True)
    assert torch.isfinite(state.attention.recurrent).all()
    assert state.attention.recurrent.abs().max() < 1e3


def test_options_reach_the_layer():
    mixer = build_attention("nala_deltanet", DIM, HEADS, causal=True, lam=2.0, inhibit="cosine", conv_size=0)
    assert (mixer.feature_map.lam, mixer.feature_map.inhibit) == (2.0, "cosine")
    assert mixer.qkv_conv is None and mixer.lepe is None and not mixer.gated
    gated = build_attention("gated_deltanet", DIM, HEADS, causal=True, gate=False, lepe=True, allow_neg_eigval=True)
    assert gated.gated and gated.allow_neg_eigval and gated.lepe is not None
    assert gated.in_proj.out_features == 3 * DIM
    y, state = gated(tokens(seq_len=5), use_cache=True)
    assert y.shape == (2, 5, DIM) and state.conv is not None and state.attention.conv is not None


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="is causal only"):
        build_attention("deltanet", DIM, HEADS)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lam'\] for attention 'deltanet'"):
        build_attention("deltanet", DIM, HEADS, causal=True, lam=2.0)
    with pytest.raises(ValueError, match="no RoPE"):
        build_attention("gated_deltanet", DIM, HEADS, causal=True, rope=True)
    with pytest.raises(ValueError, match="conv_size must be an int >= 0"):
        build_attention("deltanet", DIM, HEADS, causal=True, conv_size=-1)
    with pytest.raises(ValueError, match="no 2-D"):
        build_attention("nala_deltanet", DIM, HEADS, causal=True, layout="2d")
    mixer = build_attention("deltanet", DIM, HEADS, causal=True)
    with pytest.raises(TypeError, match="DeltaRuleState"):
        mixer(tokens(seq_len=1), state=MixerState(attention=torch.zeros(1), conv=None, position=torch.zeros(2)))
