"""The one-token paths of the shared block against the general forms they stand in for."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import ShortConvolution, build_attention
from nalaformer.layers.block import _cached_rope_frequencies, _rope_1d
from nalaformer.ops import rope_angles_1d
from tests.assertions import assert_close


@pytest.mark.parametrize("channels", [16, 60])
@pytest.mark.parametrize("kernel_size", [1, 4])
@pytest.mark.parametrize("seq_len", [1, 63, 257])
def test_short_conv_steps_equal_one_call(channels, kernel_size, seq_len):
    """Outputs, input and weight gradients, and the carried state of token-by-token steps equal one causal call."""
    torch.manual_seed(0)
    conv = ShortConvolution(channels, kernel_size, causal=True).double()
    x = torch.randn(2, seq_len, channels, dtype=torch.float64, requires_grad=True)
    full, full_state = conv(x)
    grads_full = torch.autograd.grad(full.square().sum(), (x, conv.conv.weight, conv.conv.bias))

    # the first token starts from zeros through the convolution; every later one takes the one-token path
    outputs, state = [], None
    for t in range(seq_len):
        y, state = conv(x[:, t : t + 1], state)
        outputs.append(y)
    stepped = torch.cat(outputs, dim=1)
    grads_stepped = torch.autograd.grad(stepped.square().sum(), (x, conv.conv.weight, conv.conv.bias))
    assert_close("outputs", full, stepped)
    assert_close("state", full_state, state)
    for name, a, b in zip(("x", "weight", "bias"), grads_full, grads_stepped):
        assert_close(f"grad {name}", a, b)


@pytest.mark.parametrize("dim", [16, 60])
def test_cached_rope_frequencies_give_the_same_tables(dim):
    positions = torch.tensor([[0, 1, 2, 70000], [5, 6, 7, 8]])
    for pos in (positions, positions[0], torch.arange(257)):
        expected = rope_angles_1d(pos, dim, 500.0)
        got = _rope_1d(pos, dim, 500.0)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_tables_first_built_in_inference_mode_serve_training():
    """The frequencies are cached: a first call under inference_mode must not leave an inference tensor behind."""
    torch.manual_seed(0)
    mixer = build_attention("nala", 16 * 2, 2, causal=True, rope_base=1234.5)
    x = torch.randn(1, 5, 32)
    with torch.inference_mode():
        mixer(x)
    assert not _cached_rope_frequencies(16, 1234.5, x.device).is_inference()
    mixer(x.requires_grad_()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
