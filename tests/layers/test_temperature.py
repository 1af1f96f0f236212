"""NaLa's norm temperature options: per-head T by query scaling, data-dependent initialisation, gradients, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from nalaformer.layers import NaLaAttention, NaLaFeatureMap, build_attention
from nalaformer.ops import nala_attention, nala_query_map, rope_angles_1d
from tests.assertions import assert_close
from tests.sequences import decode_in_steps


def queries(shape=(2, 9, 3, 16), scale=3.0, seed=0, dtype=torch.float64):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("inhibit", ["sign", "cosine"])
@pytest.mark.parametrize("head_dim", [16, 60])
def test_per_head_scaling_equals_the_map_with_that_temperature(inhibit, head_dim):
    q = queries((2, 7, 3, head_dim))
    k = queries((2, 7, 3, head_dim), scale=1.0, seed=1)
    feature_map = NaLaFeatureMap(temperature="learned", inhibit=inhibit, num_heads=3).double()
    with torch.no_grad():
        feature_map.log_temperature.copy_(torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64).log())
        feature_map.temperature_initialised.fill_(True)  # a set T_h: no initialisation from the first batch
    ((phi_q, _),) = feature_map(q, k, torch.arange(7))
    for head, temperature in enumerate([0.5, 2.0, 7.0]):
        expected = nala_query_map(q[:, :, head], temperature=temperature, inhibit=inhibit)
        assert_close(f"head {head}", expected, phi_q[:, :, head], ratio=1e-12, atol=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_layer_with_per_head_temperature_equals_the_op_per_head(causal):
    torch.manual_seed(0)
    layer = NaLaAttention(32, 2, causal=causal, temperature="learned", lepe=False, gate=False)
    x = torch.randn(2, 63, 32)
    out = layer(x)  # initialises T_h from this batch
    temperatures = layer.feature_map.head_temperatures().detach()
    q, k, v = (t.reshape(2, 63, 2, 16) for t in layer.in_proj(x).split(32, dim=-1))
    rope = rope_angles_1d(63, 16)
    heads = [
        nala_attention(
            q[:, :, h : h + 1], k[:, :, h : h + 1], v[:, :, h : h + 1], causal=causal, rope=rope, temperature=float(t)
        )
        for h, t in enumerate(temperatures)
    ]
    expected = layer.out_proj(layer.out_norm(torch.cat(heads, dim=2).reshape(2, 63, 32)))
    assert_close("layer", expected, out, ratio=1e-5)


def test_first_batch_sets_the_median_norm_and_later_batches_do_not():
    feature_map = NaLaFeatureMap(temperature="learned", num_heads=3)
    q = queries((4, 5, 3, 16), dtype=torch.float32)
    k = torch.randn_like(q)
    feature_map(q, k, torch.arange(5))
    median = q.norm(dim=-1).reshape(-1, 3).median(dim=0).values
    assert_close("T_h", median, feature_map.head_temperatures(), ratio=1e-6)
    # the median query sits at tanh(1): in tanh's linear range, far from the ceiling
    assert bool(feature_map.temperature_initialised)
    feature_map(10 * q, k, torch.arange(5))
    assert_close("unchanged", median, feature_map.head_temperatures(), ratio=1e-6)
    # a loaded checkpoint keeps its T_h: the fresh map does not re-initialise from its first batch
    fresh = NaLaFeatureMap(temperature="learned", num_heads=3)
    fresh.load_state_dict(feature_map.state_dict())
    fresh(0.01 * q, k, torch.arange(5))
    assert_close("loaded", median, fresh.head_temperatures(), ratio=1e-6)


def test_initialised_map_is_not_saturated_where_the_released_one_is():
    # queries of the trained models' typical norm (~3): saturated with T = 1, responsive with the learned T_h
    q = queries((8, 16, 2, 32), scale=0.6, dtype=torch.float32)
    learned = NaLaFeatureMap(temperature="learned", num_heads=2)
    learned(q, q, torch.arange(16))
    norm = q.norm(dim=-1)
    cap = 3.0 * 1.5
    released = 3.0 * (0.5 + torch.tanh(norm))
    trained = 3.0 * (0.5 + torch.tanh(norm / learned.head_temperatures().detach()))
    assert float((released >= 0.99 * cap).float().mean()) > 0.9
    assert float((trained >= 0.99 * cap).float().mean()) < 0.05


def test_gradient_reaches_the_temperature_and_matches_finite_differences():
    q = queries((1, 6, 2, 16))
    feature_map = NaLaFeatureMap(temperature="learned", num_heads=2).double()
    feature_map(q, q, torch.arange(6))  # initialise
    weights = torch.randn(1, 6, 2, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss() -> torch.Tensor:
        return (feature_map(q, q, torch.arange(6))[0][0] * weights).sum()

    loss().backward()
    grad = feature_map.log_temperature.grad.clone()
    assert torch.all(grad != 0)
    step = 1e-6
    for head in range(2):
        with torch.no_grad():
            feature_map.log_temperature[head] += step
            up = loss()
            feature_map.log_temperature[head] -= 2 * step
            down = loss()
            feature_map.log_temperature[head] += step
        assert math.isclose(float(grad[head]), float((up - down) / (2 * step)), rel_tol=1e-5)


@pytest.mark.parametrize("temperature", ["learned", "running", "sqrt_d", 2.5])
def test_decoding_equals_full_forward(temperature):
    torch.manual_seed(0)
    mixer = build_attention("nala", 32, 2, causal=True, temperature=temperature).eval()
    x = torch.randn(2, 13, 32)
    full = mixer(x)
    assert_close("decode", full, decode_in_steps(mixer, x, prefill=1)[0])


def test_running_temperature_moves_with_training_steps_only():
    feature_map = NaLaFeatureMap(temperature="running", num_heads=2, momentum=0.5)
    q = queries((2, 8, 2, 16), scale=1.0, dtype=torch.float32)
    feature_map(q, q, torch.arange(8))
    first = feature_map.head_temperatures().clone()
    # a forward alone (inference, decoding, evaluation) leaves it
    feature_map(4 * q, q, torch.arange(8))
    assert torch.equal(first, feature_map.head_temperatures())
    # a trained-on forward moves it half-way to this batch's median when the gradient flows back
    scaled = (4 * q).requires_grad_()
    feature_map(scaled, q, torch.arange(8))[0][0].sum().backward()
    assert_close("half-way to 4x", 2.5 * first, feature_map.head_temperatures(), ratio=1e-5)
    assert torch.isfinite(scaled.grad).all()
    feature_map.eval()
    before = feature_map.head_temperatures().clone()
    feature_map(100 * q.requires_grad_(), q, torch.arange(8))[0][0].sum().backward()
    assert torch.equal(before, feature_map.head_temperatures())


def test_sqrt_d_is_the_float_temperature_sqrt_d():
    q = queries((1, 5, 2, 60))
    feature_map = NaLaFeatureMap(temperature="sqrt_d", head_dim=60)
    ((phi_q, _),) = feature_map(q, q, torch.arange(5))
    assert_close("sqrt_d", nala_query_map(q, temperature=math.sqrt(60)), phi_q, ratio=1e-12)


def test_bad_temperatures_are_named():
    with pytest.raises(ValueError, match="temperature must be a number > 0 or one of"):
        NaLaFeatureMap(temperature="median")
    with pytest.raises(ValueError, match="needs num_heads"):
        NaLaFeatureMap(temperature="learned")
    with pytest.raises(ValueError, match="needs head_dim"):
        NaLaFeatureMap(temperature="sqrt_d")
    with pytest.raises(ValueError, match="temperature must be finite and > 0, got nan"):
        NaLaFeatureMap(temperature=float("nan"))
    feature_map = NaLaFeatureMap(temperature="learned", num_heads=2)
    with pytest.raises(ValueError, match="H=3 heads"):
        feature_map(queries((1, 2, 3, 8)).float(), queries((1, 2, 3, 8)).float(), torch.arange(2))
