"""The fast NaLa path (``nala_attention``) against the generic route it replaces (feature maps, ``apply_rope``,
``linear_attention``): outputs, gradients of q / k / v / the initial state, the final state, for every option."""

from __future__ import annotations

import pytest
import torch

from nalaformer.ops import LinearAttentionState, linear_attention, nala_attention, rope_angles_1d
from nalaformer.ops.nala import common, reference_nala_attention
from tests.assertions import assert_close


@pytest.fixture(params=[False, True], ids=["one-block", "blocks"])
def blocks(request, monkeypatch):
    """Run each case as one block and cut into blocks of at least a chunk (the long-sequence code path)."""
    if request.param:
        monkeypatch.setattr(common, "SINGLE_BLOCK_ELEMENTS", 0)
        monkeypatch.setattr(common, "BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(common, "MIN_BLOCK_ELEMENTS", 1)
    return request.param


def make_case(batch, seq_len, heads, dim, value_dim, *, rope=None, mask=False, state=False, features=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(batch, seq_len, heads, dim)] * 2 + [(batch, seq_len, heads, value_dim)]
    q, k, v = (torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_() for shape in shapes)
    kwargs = {}
    if rope == "1d":
        kwargs["rope"] = tuple(x.double() for x in rope_angles_1d(seq_len, dim))
    elif rope == "batched":
        positions = torch.arange(seq_len).expand(batch, seq_len) + torch.arange(batch)[:, None] * 3
        kwargs["rope"] = tuple(x.double() for x in rope_angles_1d(positions, dim))
    if mask:
        attention_mask = torch.ones(batch, seq_len, dtype=torch.bool)
        attention_mask[0, : seq_len // 3] = False  # left padding
        attention_mask[-1, seq_len - seq_len // 4 :] = False  # right padding
        kwargs["attention_mask"] = attention_mask
    inputs = [q, k, v]
    if state:
        width = features or 2 * dim
        kv = torch.rand(batch, heads, width, value_dim, generator=generator, dtype=torch.float64).requires_grad_()
        k_sum = torch.rand(batch, heads, width, generator=generator, dtype=torch.float64).requires_grad_()
        kwargs["initial_state"] = LinearAttentionState(kv, k_sum, torch.full((batch,), 5.0, dtype=torch.float64))
        kwargs["output_final_state"] = True
        inputs += [kv, k_sum]
    return inputs, kwargs


def run(fn, inputs, kwargs, seed=1):
    """Outputs and the gradients of a random cotangent of ``o`` (and of the final state) for every input."""
    result = fn(*inputs[:3], **kwargs)
    o, state = result if isinstance(result, tuple) else (result, None)
    generator = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum()
    if state is not None:
        loss = loss + (state.kv * torch.randn(state.kv.shape, generator=generator, dtype=o.dtype)).sum()
        loss = loss + (state.k_sum * torch.randn(state.k_sum.shape, generator=generator, dtype=o.dtype)).sum()
    return o, state, torch.autograd.grad(loss, inputs)


def assert_matches_reference(inputs, kwargs):
    o, state, grads = run(nala_attention, inputs, kwargs)
    ref_o, ref_state, ref_grads = run(reference_nala_attention, inputs, kwargs)
    assert_close("o", ref_o, o, ratio=1e-9, atol=1e-12)
    for name, ref, out in zip(["dq", "dk", "dv", "d kv0", "d k_sum0"], ref_grads, grads):
        assert_close(name, ref, out, ratio=1e-9, atol=1e-12)
    if ref_state is not None:
        for name in ("kv", "k_sum", "count"):
            assert_close(name, getattr(ref_state, name), getattr(state, name), ratio=1e-9, atol=1e-12)


CASES = [
    pytest.param(dict(), id="plain"),
    pytest.param(dict(rope="1d"), id="rope"),
    pytest.param(dict(rope="batched", mask=True), id="batched-rope-mask"),
    pytest.param(dict(mask=True), id="mask"),
    pytest.param(dict(rope="1d", options=dict(inhibit="cosine", alpha=5.0)), id="rope-cosine"),
    pytest.param(dict(options=dict(inhibit="none"), features=1), id="inhibit-none"),
    pytest.param(dict(rope="1d", options=dict(temperature=3.0, lam=2.0)), id="rope-temperature-lam"),
    pytest.param(dict(options=dict(power=2.0, eps=1e-3)), id="constant-power-eps"),
    pytest.param(dict(rope="1d", options=dict(tau=0.2)), id="rope-exponent-below-1"),
]
SHAPES = [
    pytest.param((2, 1, 2, 16, 8), id="T1-D16"),
    pytest.param((2, 63, 3, 16, 8), id="T63-D16"),
    pytest.param((1, 257, 1, 60, 60), id="T257-D60"),
]


def build(shape, case, state=False):
    batch, seq_len, heads, dim, value_dim = shape
    features = dim if case.get("features") else None
    inputs, kwargs = make_case(
        batch, seq_len, heads, dim, value_dim, rope=case.get("rope"), mask=case.get("mask", False), state=state,
        features=features,
    )  # fmt: skip
    kwargs.update(case.get("options", {}))
    return inputs, kwargs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES)
def test_noncausal_fast_path_matches_reference(shape, case, blocks):
    assert_matches_reference(*build(shape, case))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("state", [False, True], ids=["no-state", "carried-state"])
def test_causal_fast_path_matches_reference(shape, case, state, blocks):
    inputs, kwargs = build(shape, case, state)
    assert_matches_reference(inputs, dict(kwargs, causal=True, chunk_size=16))


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("rope", [None, "1d"], ids=["no-rope", "rope"])
def test_packed_sequences_match_reference(causal, rope, blocks):
    inputs, kwargs = make_case(1, 70, 2, 8, 6, rope=rope, state=causal)
    if causal:
        state = kwargs["initial_state"]
        # three sequences: the state has one row per sequence
        kv, k_sum = (x.detach().expand(3, *x.shape[1:]).clone().requires_grad_() for x in (state.kv, state.k_sum))
        kwargs["initial_state"] = LinearAttentionState(kv, k_sum, torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64))
        inputs[3:] = [kv, k_sum]
    kwargs["cu_seqlens"] = torch.tensor([0, 9, 40, 70])
    assert_matches_reference(inputs, dict(kwargs, causal=causal, chunk_size=8))


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_fast_path_gradcheck_and_double_backward(causal, blocks):
    inputs, kwargs = make_case(2, 9, 1, 4, 3, rope="1d", mask=True, state=causal)
    kwargs.update(causal=causal, chunk_size=4)

    def fn(*tensors):
        if causal:
            q, k, v, kv, k_sum = tensors
            state = LinearAttentionState(kv, k_sum, kwargs["initial_state"].count)
            o, final = nala_attention(q, k, v, **dict(kwargs, initial_state=state))
            return o, final.kv, final.k_sum
        return nala_attention(*tensors, **kwargs)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_every_option_takes_the_fast_path():
    """RoPE, masks, packing, state, both inhibits, temperatures: one of the two fast autograd functions."""
    inputs, _ = make_case(1, 9, 2, 8, 8)
    q, k, v = inputs
    mask = torch.ones(1, 9, dtype=torch.bool)
    rope = rope_angles_1d(9, 8)
    for causal, name in ((False, "NaLaNonCausalBackward"), (True, "NaLaCausalBackward")):
        for kwargs in [
            dict(),
            dict(rope=rope),
            dict(attention_mask=mask),
            dict(cu_seqlens=torch.tensor([0, 4, 9])),
            dict(inhibit="cosine"),
            dict(tau=0.2, temperature=2.0),
        ]:
            o = nala_attention(q, k, v, causal=causal, **kwargs)
            assert type(o.grad_fn).__name__ in (name, "IndexBackward0", "UnsqueezeBackward0", "ToCopyBackward0")


def test_decoding_step_matches_the_chunked_form_and_keeps_its_input_state():
    inputs, kwargs = make_case(2, 12, 2, 8, 4, rope="batched", mask=True, state=True)
    q, k, v = (x.detach() for x in inputs[:3])
    state = LinearAttentionState(*(x.detach() for x in (inputs[3], inputs[4])), kwargs["initial_state"].count)
    before = [x.clone() for x in (state.kv, state.k_sum, state.count)]
    full, full_state = nala_attention(q, k, v, causal=True, **dict(kwargs, initial_state=state))
    cos, sin = kwargs["rope"]
    mask = kwargs["attention_mask"]
    outputs, state_t = [], state
    for t in range(12):
        o, state_t = nala_attention(
            q[:, t : t + 1],
            k[:, t : t + 1],
            v[:, t : t + 1],
            causal=True,
            rope=(cos[:, t : t + 1], sin[:, t : t + 1]),
            attention_mask=mask[:, t : t + 1],
            initial_state=state_t,
            output_final_state=True,
        )
        outputs.append(o)
    assert_close("o", full, torch.cat(outputs, dim=1), ratio=1e-10, atol=1e-12)
    for name in ("kv", "k_sum", "count"):
        assert_close(name, getattr(full_state, name), getattr(state_t, name), ratio=1e-10, atol=1e-12)
    for name, old, now in zip(("kv", "k_sum", "count"), before, (state.kv, state.k_sum, state.count)):
        assert torch.equal(old, now), f"the step modified the caller's initial_state.{name}"


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_bfloat16_inputs_are_computed_in_float32(causal):
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 40, 2, 16, generator=generator) for _ in range(3))
    rope = rope_angles_1d(40, 16)
    low = nala_attention(*(x.bfloat16() for x in (q, k, v)), causal=causal, rope=rope)
    full = nala_attention(*(x.bfloat16().float() for x in (q, k, v)), causal=causal, rope=rope)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, full.bfloat16())


@pytest.mark.parametrize("rope", [None, "1d"], ids=["no-rope", "rope"])
@pytest.mark.parametrize("bad", ["k", "v", "k-inf"])
@pytest.mark.parametrize("position", [0, 37, 99])
def test_a_bad_token_never_changes_earlier_outputs(rope, bad, position, blocks):
    """A NaN or infinity at token t: outputs before t equal the clean run's, in the fast path and every causal form
    of ``linear_attention`` (the chunked form's matmuls would spread it to every position)."""
    inputs, kwargs = make_case(2, 100, 2, 8, 4, rope=rope)
    q, k, v = (x.detach() for x in inputs)
    dirty_k, dirty_v = k.clone(), v.clone()
    value = float("inf") if bad == "k-inf" else float("nan")
    (dirty_v if bad == "v" else dirty_k)[1, position, 0, 2] = value
    clean = nala_attention(q, k, v, causal=True, chunk_size=16, **kwargs)
    dirty = nala_attention(q, dirty_k, dirty_v, causal=True, chunk_size=16, **kwargs)
    assert_close("o before the bad token", clean[:, :position], dirty[:, :position], ratio=1e-12, atol=1e-14)
    assert not dirty[1, position:].isfinite().all()
    phi_q, phi_k = torch.rand(2, 100, 2, 6, dtype=torch.float64), torch.rand(2, 100, 2, 6, dtype=torch.float64)
    dirty_phi_k = phi_k.clone()
    dirty_phi_k[1, position, 0, 1] = value
    for mode in ("chunk", "naive", "recurrent"):
        clean = linear_attention(phi_q, phi_k, v, causal=True, mode=mode, chunk_size=16)
        dirty = linear_attention(
            phi_q, dirty_phi_k if bad != "v" else phi_k, dirty_v, causal=True, mode=mode, chunk_size=16
        )
        assert_close(
            f"{mode}: o before the bad token", clean[:, :position], dirty[:, :position], ratio=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("empty", ["B", "H", "D"])
def test_empty_batch_heads_or_channels_give_empty_results(causal, empty):
    sizes = dict(B=2, H=3, D=8)
    sizes[empty] = 0
    q = torch.randn(sizes["B"], 5, sizes["H"], sizes["D"])
    v = torch.randn(sizes["B"], 5, sizes["H"], 4)
    o = nala_attention(q, q, v, causal=causal)
    assert o.shape == (sizes["B"], 5, sizes["H"], 4)
    features = torch.rand(sizes["B"], 5, sizes["H"], 2 * sizes["D"])
    o = linear_attention(features, features, v, causal=causal)
    assert o.shape == (sizes["B"], 5, sizes["H"], 4)
    if causal:
        o, state = nala_attention(q, q, v, causal=True, output_final_state=True)
        assert state.kv.shape == (sizes["B"], sizes["H"], 2 * sizes["D"], 4)
        assert state.count.shape == (sizes["B"],)


def test_mixed_precision_inputs_are_rejected_by_name():
    q = torch.randn(1, 4, 2, 8, dtype=torch.float64)
    k = torch.randn(1, 4, 2, 8)
    with pytest.raises(TypeError, match=r"k has dtype torch.float32.*q has torch.float64"):
        nala_attention(q, k, k.double())
    with pytest.raises(TypeError, match=r"v has dtype torch.float32"):
        linear_attention(q.abs(), q.abs(), k)


@pytest.mark.parametrize("chunk_size", [24, 48, 64])
def test_causal_rope_denominator_in_pieces_of_other_lengths_than_the_chunks(chunk_size, blocks):
    # with RoPE the denominator's running sums go in pieces of 16 tokens when 16 divides the chunk size (48, 64),
    # else in whole chunks (24); 150 tokens leave a partial chunk and a partial piece
    inputs, kwargs = make_case(2, 150, 2, 8, 6, rope="batched", mask=True, state=True)
    assert_matches_reference(inputs, dict(kwargs, causal=True, chunk_size=chunk_size))


def test_block_plan_keeps_the_small_lm_batch_and_a_4096_token_sequence_in_one_block():
    """The thresholds of the block plan: the small LM's training batch (2 x 1024 tokens, 6 heads of 128 sign-split
    features) and 4096 tokens of 4 such heads run as one block (they ran 1.14-1.30x faster that way than in 64- and
    256-token blocks), while 8192 tokens of 4 heads and longer sequences are cut into blocks of whole chunks."""
    assert common.block_length(2, 6, 128, 1024) == 1024
    assert common.causal_block_length(2, 6, 128, 1024, 64) == 1024
    assert common.block_length(1, 4, 128, 4096) == 4096
    assert common.block_length(1, 4, 128, 8192) == 512
    assert common.causal_block_length(1, 4, 128, 16384, 64) == 512
