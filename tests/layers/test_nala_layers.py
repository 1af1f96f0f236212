"""The NaLa layers run the fast op; the generic route (feature maps + ``linear_attention``) is their reference."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import NaLaAttention, NaLaAttention2d
from nalaformer.layers.linear import LinearAttention
from tests.assertions import assert_close
from tests.sequences import decode_in_steps

DIM, HEADS = 32, 2


def generic(layer: LinearAttention):
    """``layer.attend`` through the feature map's streams and ``linear_attention``."""

    def attend(q, k, v, *, inputs, rope, positions, attention_mask, state, use_cache):
        return layer.attend_streams(
            q, k, v, rope=rope, positions=positions, attention_mask=attention_mask, state=state, use_cache=use_cache
        )

    return attend


def outputs_and_grads(layer, call):
    layer.zero_grad()
    y = call(layer)
    y = y[0] if isinstance(y, tuple) else y
    cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    (y * cotangent).sum().backward()
    return y.detach(), {name: p.grad.clone() for name, p in layer.named_parameters()}


def assert_fast_equals_generic(layer, call, monkeypatch):
    fast, fast_grads = outputs_and_grads(layer, call)
    with monkeypatch.context() as patch:
        patch.setattr(layer, "attend", generic(layer))
        ref, ref_grads = outputs_and_grads(layer, call)
    assert_close("y", ref, fast, ratio=1e-10, atol=1e-12)
    for name in ref_grads:
        assert_close(f"d {name}", ref_grads[name], fast_grads[name], ratio=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("options", [{}, {"inhibit": "cosine", "temperature": 2.0}], ids=["default", "cosine-T2"])
def test_sequence_layer_fast_path_equals_generic_route(causal, options, monkeypatch):
    torch.manual_seed(0)
    layer = NaLaAttention(DIM, HEADS, causal=causal, eps=1e-4, **options).double()
    x = torch.randn(2, 37, DIM, dtype=torch.float64)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[0, :5] = False
    assert_fast_equals_generic(layer, lambda m: m(x, attention_mask=mask), monkeypatch)


def test_image_layer_fast_path_equals_generic_route(monkeypatch):
    torch.manual_seed(0)
    layer = NaLaAttention2d(DIM, HEADS).double()
    image = torch.randn(2, DIM, 5, 7, dtype=torch.float64)
    assert_fast_equals_generic(layer, lambda m: m(image), monkeypatch)


def test_decoding_with_the_fast_step_equals_the_generic_route(monkeypatch):
    torch.manual_seed(0)
    layer = NaLaAttention(DIM, HEADS, causal=True).double()
    x = torch.randn(2, 12, DIM, dtype=torch.float64)

    with torch.no_grad():
        fast, fast_state = decode_in_steps(layer, x, prefill=5)
        with monkeypatch.context() as patch:
            patch.setattr(layer, "attend", generic(layer))
            ref, ref_state = decode_in_steps(layer, x, prefill=5)
    assert_close("y", ref, fast, ratio=1e-10, atol=1e-12)
    for name in ("kv", "k_sum", "count"):
        assert_close(name, getattr(ref_state.attention[0], name), getattr(fast_state.attention[0], name), ratio=1e-10)
