"""The hand-written autograd functions against the plain formulas they replace: values, gradients, double backward."""

from __future__ import annotations

import pytest
import torch

from nalaformer.ops import nala_key_map, nala_query_map
from nalaformer.ops.feature_maps import reference_sign_split_power
from nalaformer.ops.fused_features import SignSplitOptions, SignSplitPower, fused_path_applies
from nalaformer.ops.linear_attn.chunk import CausalChunkSums, reference_causal_sums
from nalaformer.ops.linear_attn.parallel import parallel_core, reference_parallel
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
