"""Properties of normalised linear attention checked on generated inputs (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nalaformer.ops import linear_attention, nala_attention, nala_key_map, nala_query_map, relu_feature_map

shapes = st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 2), st.sampled_from([4, 8, 12]))
scales = st.floats(min_value=0.05, max_value=20.0)


def sample(shape, seed, scale=1.0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype) * scale


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), scale=scales, inhibit=st.sampled_from(["sign", "none"]))
def test_features_are_non_negative(shape, seed, scale, inhibit):
    x = sample(shape, seed, scale)
    assert (nala_query_map(x, inhibit=inhibit) >= 0).all()
    assert (nala_key_map(x, inhibit=inhibit) >= 0).all()


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), causal=st.booleans())
def test_weights_form_a_distribution_without_rope(shape, seed, causal):
    """With one-hot values the output row is the effective attention row: non-negative, summing to 1 (up to eps)."""
    batch, seq_len, heads, _ = shape
    q, k = sample(shape, seed), sample(shape, seed + 1)
    one_hot = torch.eye(seq_len, dtype=torch.float64).expand(batch, heads, seq_len, seq_len).permute(0, 2, 1, 3)
    weights = nala_attention(q, k, one_hot.contiguous(), causal=causal, eps=0.0)
    phi_q, phi_k = nala_query_map(q), nala_key_map(k)
    scores = torch.einsum("bthf,bshf->bhts", phi_q, phi_k)
    if causal:
        scores = scores.tril()
    has_mass = (scores.sum(-1) > 0).transpose(1, 2)
    assert (weights >= -1e-12).all()
    row_sums = weights.sum(-1)
    assert torch.allclose(row_sums[has_mass], torch.ones_like(row_sums[has_mass]), atol=1e-9)
    # a query sharing no sign with any visible key gets zero weight everywhere instead of NaN
    assert torch.equal(row_sums[~has_mass], torch.zeros_like(row_sums[~has_mass]))


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), scale=scales, causal=st.booleans())
def test_homogeneous_map_is_query_norm_unaware(shape, seed, scale, causal):
    """Prop. 2 (docs/method.md §2.3): with phi(cq) = c phi(q) the output does not change when q is rescaled."""
    q, k, v = sample(shape, seed), sample(shape, seed + 1), sample(shape, seed + 2)
    phi_k = relu_feature_map(k)
    base = linear_attention(relu_feature_map(q), phi_k, v, causal=causal, eps=0.0)
    scaled = linear_attention(relu_feature_map(q * scale), phi_k, v, causal=causal, eps=0.0)
    assert torch.allclose(base, scaled, atol=1e-9)


def test_nala_output_depends_on_query_norm():
    q, k, v = sample((1, 64, 1, 16), 0), sample((1, 64, 1, 16), 1), sample((1, 64, 1, 16), 2)
    small = q / q.norm(dim=-1, keepdim=True) * 0.25
    large = q / q.norm(dim=-1, keepdim=True) * 4.0
    difference = (nala_attention(small, k, v) - nala_attention(large, k, v)).abs().max()
    assert difference > 1e-2
