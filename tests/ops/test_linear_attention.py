"""Every form of normalised linear attention against the quadratic reference: outputs, gradients, carried state."""

from __future__ import annotations

import pytest
import torch

from nalaformer.ops import LinearAttentionState, nala_attention, rope_angles_1d
from tests.assertions import assert_close
from tests.sequences import padding_mask

SHAPES = [
    pytest.param(2, 1, 2, 16, id="B2-T1-H2-D16"),
    pytest.param(1, 63, 3, 16, id="B1-T63-H3-D16"),
    pytest.param(2, 257, 2, 60, id="B2-T257-H2-D60"),
    pytest.param(1, 100, 1, 32, id="B1-T100-H1-D32"),
]


def make_inputs(batch, seq_len, heads, dim, dtype=torch.float32, value_dim=None, seed=0, requires_grad=True):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(batch, seq_len, heads, dim)] * 2 + [(batch, seq_len, heads, value_dim or dim)]
    return [torch.randn(s, generator=generator, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


def grads_of(fn, inputs, seed=1):
    """Run ``fn(*inputs)``, backprop a fixed random cotangent, return (output, grads of every input)."""
    out = fn(*inputs)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad((out * cotangent).sum(), inputs)
    return out, grads


@pytest.mark.parametrize("batch,seq_len,heads,dim", SHAPES)
@pytest.mark.parametrize("use_rope", [False, True], ids=["plain", "rope"])
def test_noncausal_parallel_matches_naive(batch, seq_len, heads, dim, use_rope):
    inputs = make_inputs(batch, seq_len, heads, dim)
    rope = rope_angles_1d(seq_len, dim) if use_rope else None
    ref, ref_grads = grads_of(lambda q, k, v: nala_attention(q, k, v, rope=rope, mode="naive"), inputs)
    out, out_grads = grads_of(lambda q, k, v: nala_attention(q, k, v, rope=rope, mode="parallel"), inputs)
    assert_close("o", ref, out)
    for name, r, o in zip("qkv", ref_grads, out_grads):
        assert_close(f"d{name}", r, o)


@pytest.mark.parametrize("batch,seq_len,heads,dim", SHAPES)
@pytest.mark.parametrize("mode,chunk_size", [("chunk", 64), ("chunk", 7), ("chunk", 1), ("recurrent", 64)])
@pytest.mark.parametrize("use_rope", [False, True], ids=["plain", "rope"])
def test_causal_forms_match_naive(batch, seq_len, heads, dim, mode, chunk_size, use_rope):
    if mode == "recurrent" and seq_len > 100:
        pytest.skip("the step-by-step loop is covered on shorter sequences")
    inputs = make_inputs(batch, seq_len, heads, dim)
    state_gen = torch.Generator().manual_seed(3)
    features = 2 * dim
    state = LinearAttentionState(
        kv=torch.randn(batch, heads, features, dim, generator=state_gen).requires_grad_(),
        k_sum=torch.rand(batch, heads, features, generator=state_gen).requires_grad_(),
        count=torch.full((batch,), 5.0),
    )
    rope = rope_angles_1d(torch.arange(5, 5 + seq_len), dim) if use_rope else None
    all_inputs = [*inputs, state.kv, state.k_sum]

    def run(run_mode):
        def fn(q, k, v, kv, k_sum):
            return nala_attention(
                q,
                k,
                v,
                causal=True,
                rope=rope,
                mode=run_mode,
                chunk_size=chunk_size,
                initial_state=LinearAttentionState(kv, k_sum, state.count),
            )

        return fn

    ref_fn, out_fn = run("naive"), run(mode)
    ref, ref_grads = grads_of(ref_fn, all_inputs)
    out, out_grads = grads_of(out_fn, all_inputs)
    assert_close("o", ref, out)
    for name, r, o in zip(["dq", "dk", "dv", "dkv0", "dk_sum0"], ref_grads, out_grads):
        assert_close(name, r, o)


@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_final_state_matches_naive(mode):
    q, k, v = make_inputs(2, 45, 2, 16, requires_grad=False)
    _, ref = nala_attention(q, k, v, causal=True, mode="naive", output_final_state=True)
    _, out = nala_attention(q, k, v, causal=True, mode=mode, chunk_size=8, output_final_state=True)
    assert_close("kv", ref.kv, out.kv)
    assert_close("k_sum", ref.k_sum, out.k_sum)
    assert torch.equal(out.count, torch.full((2,), 45.0))


@pytest.mark.parametrize("split", [1, 17, 64, 99], ids=lambda s: f"split{s}")
@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_split_and_resume_equals_one_call(split, mode):
    seq_len, dim = 100, 16
    q, k, v = make_inputs(2, seq_len, 2, dim, requires_grad=False)
    cos, sin = rope_angles_1d(seq_len, dim)
    full, full_state = nala_attention(q, k, v, causal=True, rope=(cos, sin), output_final_state=True, chunk_size=16)
    first, state = nala_attention(
        q[:, :split],
        k[:, :split],
        v[:, :split],
        causal=True,
        rope=(cos[:split], sin[:split]),
        output_final_state=True,
        mode=mode,
        chunk_size=16,
    )
    second, final = nala_attention(
        q[:, split:],
        k[:, split:],
        v[:, split:],
        causal=True,
        rope=(cos[split:], sin[split:]),
        initial_state=state,
        output_final_state=True,
        mode=mode,
        chunk_size=16,
    )
    assert_close("o", full, torch.cat([first, second], dim=1))
    assert_close("kv", full_state.kv, final.kv)
    assert_close("k_sum", full_state.k_sum, final.k_sum)
    assert torch.equal(full_state.count, final.count)


def test_gradcheck_float64():
    q, k, v = make_inputs(1, 6, 1, 4, dtype=torch.float64, seed=4)
    kv0 = torch.randn(1, 1, 8, 4, dtype=torch.float64, requires_grad=True)
    k_sum0 = torch.rand(1, 1, 8, dtype=torch.float64, requires_grad=True)
    count0 = torch.tensor([2.0], dtype=torch.float64)
    rope = rope_angles_1d(6, 4)
    rope = (rope[0].double(), rope[1].double())

    def causal_chunk(q, k, v, kv0, k_sum0):
        state = LinearAttentionState(kv0, k_sum0, count0)
        return nala_attention(q, k, v, causal=True, rope=rope, chunk_size=4, initial_state=state)

    def noncausal(q, k, v):
        return nala_attention(q, k, v, rope=rope)

    assert torch.autograd.gradcheck(causal_chunk, (q, k, v, kv0, k_sum0))
    assert torch.autograd.gradcheck(noncausal, (q, k, v))


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_varlen_packed_equals_separate_calls(causal):
    lengths = [5, 1, 33, 17]
    dim = 16
    q, k, v = make_inputs(1, sum(lengths), 2, dim, requires_grad=False)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    states = LinearAttentionState(
        torch.randn(len(lengths), 2, 2 * dim, dim), torch.rand(len(lengths), 2, 2 * dim), torch.arange(4.0)
    )
    kwargs = dict(causal=True, initial_state=states, output_final_state=True, chunk_size=8) if causal else {}
    packed = nala_attention(q, k, v, cu_seqlens=cu_seqlens, **kwargs)
    if causal:
        packed, packed_state = packed
    for index, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        single_kwargs = dict(kwargs)
        if causal:
            single_kwargs["initial_state"] = LinearAttentionState(
                states.kv[index : index + 1], states.k_sum[index : index + 1], states.count[index : index + 1]
            )
        single = nala_attention(q[:, start:end], k[:, start:end], v[:, start:end], **single_kwargs)
        if causal:
            single, single_state = single
            assert_close(f"kv[{index}]", single_state.kv[0], packed_state.kv[index])
            assert torch.equal(single_state.count[0], packed_state.count[index])
        assert_close(f"o[{index}]", single, packed[:, start:end])


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded(causal, side):
    lengths, total, dim = [9, 20], 20, 16
    q, k, v = make_inputs(2, total, 2, dim, requires_grad=False)
    mask = padding_mask(lengths, total, side)
    # garbage in padded slots must not leak into the result
    garbage = torch.full_like(q, 1e4)
    q, k, v = (torch.where(mask[:, :, None, None], x, garbage) for x in (q, k, v))
    out, state = (
        nala_attention(q, k, v, causal=True, attention_mask=mask, output_final_state=True, chunk_size=8)
        if causal
        else (nala_attention(q, k, v, attention_mask=mask), None)
    )
    for row in range(2):
        keep = mask[row]
        single = nala_attention(
            q[row : row + 1, keep],
            k[row : row + 1, keep],
            v[row : row + 1, keep],
            causal=causal,
            output_final_state=causal,
        )
        if causal:
            single, single_state = single
            assert_close("kv", single_state.kv[0], state.kv[row])
            assert float(state.count[row]) == lengths[row]
        assert_close("o", single[0], out[row, keep])
        assert torch.equal(out[row, ~keep], torch.zeros_like(out[row, ~keep]))


def test_no_quadratic_tensor_saved_for_backward():
    """The parallel and chunked forms keep memory linear in T: nothing of size T*T is saved for backward."""
    seq_len, dim = 512, 16
    q, k, v = make_inputs(1, seq_len, 1, dim)
    for kwargs in [dict(), dict(causal=True, chunk_size=64)]:
        largest = 0

        def pack(t):
            nonlocal largest
            largest = max(largest, t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = nala_attention(q, k, v, **kwargs)
        out.sum().backward()
        assert largest < seq_len * seq_len // 4, f"{kwargs}: a saved tensor has {largest} elements"
