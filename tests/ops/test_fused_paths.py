"""The hand-written autograd functions against the plain formulas they replace: values, gradients, double backward."""

from __future__ import annotations

import pytest
import torch

from nalaformer.ops import nala_attention, nala_blocked, nala_key_map, nala_query_map
from nalaformer.ops.feature_maps import reference_sign_split_power
from nalaformer.ops.fused_features import SignSplitOptions, SignSplitPower, fused_path_applies
from nalaformer.ops.linear_attention.chunk import CausalChunkSums, reference_causal_sums
from nalaformer.ops.linear_attention.parallel import parallel_core, reference_parallel
from nalaformer.ops.nala_blocked import (
    BlockedCausalNaLaAttention,
    BlockedNaLaAttention,
    block_length,
    causal_block_length,
    reference_causal_nala,
    reference_nala,
)
from tests.assertions import assert_close

MAPS = [
    pytest.param(True, dict(lam=3.0, tau=0.5, temperature=1.0, power=None), id="query-default"),
    pytest.param(True, dict(lam=3.0, tau=0.5, temperature=4.0, power=None), id="query-temperature4"),
    pytest.param(True, dict(lam=2.0, tau=0.5, temperature=1.0, power=None), id="query-lam2-tau0.5"),
    pytest.param(True, dict(lam=3.0, tau=0.5, temperature=1.0, power=2.5), id="query-constant-power"),
    pytest.param(False, dict(lam=3.0, tau=0.0, temperature=1.0, power=None), id="key-lam3"),
    pytest.param(False, dict(lam=2.2, tau=0.0, temperature=1.0, power=None), id="key-lam2.2"),
]


def features_input(shape, dtype, seed=0):
    """Random inputs with exact zeros: a zero row, single zero components and a row below the norm floor."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x[0, 0] = 0.0
    x[0, 1, ..., 3] = 0.0
    x[-1, -1] *= 1e-8
    return x.requires_grad_()


def fused(x, normalise, lam, tau, temperature, power, eps=1e-6):
    return SignSplitPower.apply(x, SignSplitOptions(normalise, lam, tau, temperature, power, eps))


@pytest.mark.parametrize("normalise,options", MAPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", [(2, 7, 3, 16), (3, 5, 60)], ids=["B2-T7-H3-D16", "rank3-D60"])
def test_sign_split_features_match_reference(normalise, options, dtype, shape):
    x = features_input(shape, dtype)
    ref = reference_sign_split_power(x, normalise, eps=1e-6, **options)
    out = fused(x, normalise, **options)
    assert_close("phi", ref, out, ratio=1e-6)
    cotangent = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (ref_grad,) = torch.autograd.grad(ref, x, cotangent)
    (out_grad,) = torch.autograd.grad(out, x, cotangent)
    assert_close("dx", ref_grad, out_grad, ratio=1e-5)


def test_four_dim_features_are_stored_head_major():
    """``[B, T, H, D]`` in, ``[B, T, H, 2D]`` out, stored as ``[B, H, T, 2D]`` for the per-head matmuls."""
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(5))
    phi = nala_query_map(x)
    assert phi.shape == (2, 5, 3, 8)
    assert phi.transpose(1, 2).is_contiguous()
    assert_close("phi", reference_sign_split_power(x, True, 3.0, 0.5, 1.0, None, 1e-6), phi, ratio=1e-6)


@pytest.mark.parametrize("normalise", [True, False], ids=["query", "key"])
def test_sign_split_gradcheck_and_double_backward(normalise):
    x = torch.randn(2, 3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    fn = lambda x: fused(x, normalise, 3.0, 0.5, 1.0, None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize(
    "lam,tau,power,expected",
    [(3.0, 0.5, None, True), (3.0, 0.3, None, False), (3.0, -0.4, None, False), (3.0, 0.5, 1.0, False)],
    ids=["default", "p-may-drop-below-1", "negative-tau", "constant-power-1"],
)
def test_fused_path_only_where_exponent_exceeds_one(lam, tau, power, expected):
    assert fused_path_applies(lam, tau, power, normalise=True) is expected
    # outside it the public maps fall back to the reference formulas and stay finite at exact zeros
    q = torch.tensor([[0.0, 1.0, -2.0, 0.0]], requires_grad=True)
    nala_query_map(q, lam=lam, tau=tau, power=power).sum().backward()
    assert torch.isfinite(q.grad).all()
    assert not fused_path_applies(1.0, 0.0, None, normalise=False)
    assert torch.equal(nala_key_map(torch.tensor([2.0, -3.0]), lam=1.0), torch.tensor([2.0, 0.0, 0.0, 3.0]))


def attention_inputs(batch, heads, seq_len, features, value_dim, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k, qn, kn = (torch.rand(batch, heads, seq_len, features, generator=generator, dtype=dtype) for _ in range(4))
    v = torch.randn(batch, heads, seq_len, value_dim, generator=generator, dtype=dtype)
    return [x.requires_grad_() for x in (q, k, qn, kn, v)]


def vjp(fn, inputs, seed=3):
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    generator = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outs]
    wanted = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    return outs, torch.autograd.grad(outs, wanted, cotangents)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-features", "separate-numerator"])
@pytest.mark.parametrize("seq_len", [1, 63, 257], ids=lambda t: f"T{t}")
def test_parallel_functions_match_reference(shared, seq_len):
    q, k, qn, kn, v = attention_inputs(2, 3, seq_len, 12, 7)
    valid = torch.ones(2, seq_len)
    valid[1, : seq_len // 2] = 0.0
    inv_count = 1.0 / valid.sum(dim=1).clamp_min(1.0)
    if shared:
        inputs = [q, k, v]
        out_fn = lambda q, k, v: parallel_core(q, k, q, k, v, valid, 1e-6)  # noqa: E731
        ref_fn = lambda q, k, v: reference_parallel(q, k, q, k, v, inv_count, 1e-6)  # noqa: E731
    else:
        inputs = [q, k, qn, kn, v]
        out_fn = lambda q, k, qn, kn, v: parallel_core(q, k, qn, kn, v, valid, 1e-6)  # noqa: E731
        ref_fn = lambda q, k, qn, kn, v: reference_parallel(q, k, qn, kn, v, inv_count, 1e-6)  # noqa: E731
    (ref,), ref_grads = vjp(ref_fn, inputs)
    (out,), out_grads = vjp(out_fn, inputs)
    assert_close("o", ref, out)
    for index, (r, o) in enumerate(zip(ref_grads, out_grads)):
        assert_close(f"grad {index}", r, o)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-features", "separate-numerator"])
def test_parallel_double_backward(shared):
    q, k, qn, kn, v = attention_inputs(1, 2, 5, 4, 3, dtype=torch.float64)
    valid = torch.ones(1, 5, dtype=torch.float64)
    if shared:
        inputs, fn = (q, k, v), lambda q, k, v: parallel_core(q, k, q, k, v, valid, 1e-6)
    else:
        inputs, fn = (q, k, qn, kn, v), lambda q, k, qn, kn, v: parallel_core(q, k, qn, kn, v, valid, 1e-6)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize(
    "seq_len,chunk_size",
    [(1, 64), (63, 64), (257, 64), (257, 7), (100, 1), (128, 32)],
    ids=["T1-C64", "T63-C64", "T257-C64", "T257-C7", "T100-C1", "T128-C32"],
)
@pytest.mark.parametrize("with_initial", [False, True], ids=["zero-state", "initial-state"])
def test_causal_chunk_sums_match_reference(seq_len, chunk_size, with_initial):
    a, b, _, _, c = attention_inputs(2, 2, seq_len, 10, 6)
    generator = torch.Generator().manual_seed(6)
    initial = torch.randn(2, 2, 10, 6, generator=generator).requires_grad_() if with_initial else None
    inputs = [a, b, c, initial]
    (ref_out, ref_total), ref_grads = vjp(reference_causal_sums, inputs)
    (out, total), out_grads = vjp(lambda *x: CausalChunkSums.apply(*x, chunk_size), inputs)
    assert_close("out", ref_out, out)
    assert_close("total", ref_total, total)
    for name, r, o in zip(["da", "db", "dc", "d_initial"], ref_grads, out_grads):
        assert_close(name, r, o)


def test_causal_chunk_sums_double_backward():
    a, b, _, _, c = attention_inputs(1, 1, 6, 3, 2, dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    initial = torch.randn(1, 1, 3, 2, dtype=torch.float64, generator=generator).requires_grad_()
    fn = lambda a, b, c, s: CausalChunkSums.apply(a, b, c, s, 4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b, c, initial))
    assert torch.autograd.gradgradcheck(fn, (a, b, c, initial))


BLOCKED = [
    pytest.param(1, 1, 2, 16, 16, id="B1-T1-H2-D16"),
    pytest.param(2, 63, 3, 16, 8, id="B2-T63-H3-D16-Dv8"),
    pytest.param(1, 257, 1, 60, 60, id="B1-T257-H1-D60"),
]


@pytest.mark.parametrize("batch,seq_len,heads,dim,value_dim", BLOCKED)
@pytest.mark.parametrize(
    "query",
    [SignSplitOptions(True), SignSplitOptions(True, temperature=3.0), SignSplitOptions(True, power=2.0)],
    ids=["default", "temperature3", "constant-power"],
)
@pytest.mark.parametrize("single_block", [True, False], ids=["one-block", "blocks-of-64"])
def test_blocked_nala_matches_reference(batch, seq_len, heads, dim, value_dim, query, single_block, monkeypatch):
    if not single_block:
        monkeypatch.setattr(nala_blocked, "SINGLE_BLOCK_ELEMENTS", 0)
        monkeypatch.setattr(nala_blocked, "BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(nala_blocked, "MIN_BLOCK_ELEMENTS", 1)
    generator = torch.Generator().manual_seed(8)
    shapes = [(batch, seq_len, heads, dim)] * 2 + [(batch, seq_len, heads, value_dim)]
    q, k, v = (torch.randn(shape, generator=generator).requires_grad_() for shape in shapes)
    with torch.no_grad():
        q[0, 0, 0] = 0.0
    key = SignSplitOptions(False)
    (ref,), ref_grads = vjp(lambda q, k, v: reference_nala(q, k, v, query, key, 1e-6), [q, k, v])
    (out,), out_grads = vjp(lambda q, k, v: BlockedNaLaAttention.apply(q, k, v, query, key, 1e-6), [q, k, v])
    assert_close("o", ref, out)
    for name, r, o in zip(["dq", "dk", "dv"], ref_grads, out_grads):
        assert_close(name, r, o)


def test_blocked_nala_block_length_and_double_backward(monkeypatch):
    assert block_length(1, 1, 120, 100) == 100
    long = block_length(1, 1, 120, 10**6)
    assert long * 120 <= nala_blocked.BLOCK_ELEMENTS < (long + 1) * 120
    # mid-length sequences get 16 blocks (of at least MIN_BLOCK_ELEMENTS features)
    assert block_length(1, 4, 128, 4096) == 4096 // 16
    assert block_length(64, 8, 128, 10**6) == 64
    monkeypatch.setattr(nala_blocked, "SINGLE_BLOCK_ELEMENTS", 0)
    monkeypatch.setattr(nala_blocked, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(nala_blocked, "MIN_BLOCK_ELEMENTS", 1)
    q, k, v = (
        torch.randn(1, 7, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    inputs = tuple(x.requires_grad_() for x in (q, k, v))
    fn = lambda q, k, v: BlockedNaLaAttention.apply(q, k, v, SignSplitOptions(True), SignSplitOptions(False), 1e-6)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize(
    "seq_len,chunk_size",
    [(1, 64), (63, 64), (257, 64), (257, 7), (200, 1)],
    ids=["T1-C64", "T63-C64", "T257-C64", "T257-C7", "T200-C1"],
)
@pytest.mark.parametrize("single_block", [True, False], ids=["one-block", "blocks"])
def test_blocked_causal_nala_matches_reference(seq_len, chunk_size, single_block, monkeypatch):
    if not single_block:
        monkeypatch.setattr(nala_blocked, "SINGLE_BLOCK_ELEMENTS", 0)
        monkeypatch.setattr(nala_blocked, "BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(nala_blocked, "MIN_BLOCK_ELEMENTS", 1)
    generator = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, seq_len, 2, 12, generator=generator).requires_grad_() for _ in range(3))
    query, key = SignSplitOptions(True, temperature=2.0), SignSplitOptions(False)
    (ref,), ref_grads = vjp(lambda q, k, v: reference_causal_nala(q, k, v, query, key, 1e-6), [q, k, v])
    (out,), out_grads = vjp(
        lambda q, k, v: BlockedCausalNaLaAttention.apply(q, k, v, query, key, 1e-6, chunk_size), [q, k, v]
    )
    assert_close("o", ref, out)
    for name, r, o in zip(["dq", "dk", "dv"], ref_grads, out_grads):
        assert_close(name, r, o)


def test_blocked_causal_nala_block_length_and_double_backward(monkeypatch):
    assert causal_block_length(1, 4, 128, 10**6, 64) % 64 == 0
    assert causal_block_length(1, 4, 128, 10**6, 1000) == 1000
    monkeypatch.setattr(nala_blocked, "SINGLE_BLOCK_ELEMENTS", 0)
    monkeypatch.setattr(nala_blocked, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(nala_blocked, "MIN_BLOCK_ELEMENTS", 1)
    generator = torch.Generator().manual_seed(10)
    inputs = tuple(torch.randn(1, 9, 1, 4, dtype=torch.float64, generator=generator).requires_grad_() for _ in range(3))
    options = (SignSplitOptions(True), SignSplitOptions(False), 1e-6, 4)
    fn = lambda q, k, v: BlockedCausalNaLaAttention.apply(q, k, v, *options)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_nala_attention_takes_the_blocked_path_only_where_it_applies():
    """The released configuration runs the blocked functions; RoPE, masks, state and other maps the generic path."""
    q, k, v = (torch.randn(1, 9, 2, 8, generator=torch.Generator().manual_seed(i)).requires_grad_() for i in range(3))

    def backward_name(**kwargs):
        return type(nala_attention(q, k, v, **kwargs).grad_fn).__name__

    assert backward_name() == "BlockedNaLaAttentionBackward"
    assert backward_name(causal=True) == "BlockedCausalNaLaAttentionBackward"
    mask = torch.ones(1, 9, dtype=torch.bool)
    for kwargs in [
        dict(attention_mask=mask),
        dict(causal=True, attention_mask=mask),
        dict(causal=True, mode="recurrent"),
        dict(inhibit="cosine"),
        dict(tau=0.2),
        dict(mode="naive"),
    ]:
        assert not backward_name(**kwargs).startswith("Blocked"), kwargs
    _, state = nala_attention(q, k, v, causal=True, output_final_state=True)
    assert state.kv.shape == (1, 2, 16, 8)
