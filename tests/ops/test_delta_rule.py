"""Delta rule / gated delta rule: every form against the naive recurrence, padding, varlen, resume, dtypes, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from nalaformer.ops.delta import chunk_delta_rule, delta_rule, naive_recurrent_delta_rule, recurrent_delta_rule
from tests.assertions import assert_close

FORMS = {"naive": naive_recurrent_delta_rule, "chunk": chunk_delta_rule, "recurrent": recurrent_delta_rule}
GATED = [pytest.param(False, id="deltanet"), pytest.param(True, id="gated")]


def make_inputs(
    batch: int,
    length: int,
    heads: int,
    key_dim: int,
    value_dim: int,
    *,
    gated: bool,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    beta_max: float = 1.0,
    num_states: int | None = None,
) -> dict[str, torch.Tensor | None]:
    """Leaf tensors: L2-normalised keys, beta in (0, beta_max), log decays in about (-2, 0), a random state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, heads, key_dim, generator=gen)
    k = F.normalize(torch.randn(batch, length, heads, key_dim, generator=gen), dim=-1)
    v = torch.randn(batch, length, heads, value_dim, generator=gen)
    beta = beta_max * torch.rand(batch, length, heads, generator=gen).clamp(0.02, 0.98)
    g = F.logsigmoid(torch.randn(batch, length, heads, generator=gen) + 2.0) if gated else None
    states = batch if num_states is None else num_states
    h0 = 0.5 * torch.randn(states, heads, key_dim, value_dim, generator=gen)
    tensors = {"q": q, "k": k, "v": v, "beta": beta, "g": g, "initial_state": h0}
    return {name: None if x is None else x.to(dtype).requires_grad_() for name, x in tensors.items()}


def run(form, inputs: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return form(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["beta"],
        g=inputs["g"],
        initial_state=inputs["initial_state"],
        output_final_state=True,
        **kwargs,
    )


def grads(inputs: dict, o: torch.Tensor, state: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """Gradients of a random linear function of (o, final state) w.r.t. every leaf input."""
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen)).sum() + (state * torch.randn(state.shape, generator=gen)).sum()
    leaves = {name: x for name, x in inputs.items() if x is not None}
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def assert_form_matches_naive(form, inputs: dict, ratio: float, **kwargs) -> None:
    o_ref, s_ref = run(naive_recurrent_delta_rule, inputs)
    o, s = run(form, inputs, **kwargs)
    assert_close("o", o_ref, o, ratio=ratio)
    assert_close("final_state", s_ref, s, ratio=ratio)
    g_ref, g_got = grads(inputs, o_ref, s_ref), grads(inputs, o, s)
    assert set(g_ref) == set(g_got)
    for name in g_ref:
        assert_close(f"d{name}", g_ref[name], g_got[name], ratio=ratio)


CHUNK_SHAPES = [
    pytest.param(1, 1, 1, 16, 8, 64, 1.0, id="B1-T1-H1-Dk16-Dv8-C64"),
    pytest.param(2, 63, 2, 16, 24, 64, 1.0, id="B2-T63-H2-Dk16-Dv24-C64"),
    pytest.param(2, 63, 2, 60, 20, 16, 1.0, id="B2-T63-H2-Dk60-Dv20-C16"),
    pytest.param(1, 257, 2, 60, 32, 64, 1.0, id="B1-T257-H2-Dk60-Dv32-C64"),
    pytest.param(2, 40, 1, 16, 12, 8, 2.0, id="B2-T40-H1-Dk16-Dv12-C8-beta2"),
]


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize(("batch", "length", "heads", "key_dim", "value_dim", "chunk_size", "beta_max"), CHUNK_SHAPES)
def test_chunk_matches_naive(batch, length, heads, key_dim, value_dim, chunk_size, beta_max, gated):
    inputs = make_inputs(batch, length, heads, key_dim, value_dim, gated=gated, beta_max=beta_max)
    assert_form_matches_naive(chunk_delta_rule, inputs, 1e-5, chunk_size=chunk_size)


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize(
    ("batch", "length", "heads", "key_dim", "value_dim"),
    [pytest.param(2, 1, 2, 16, 8, id="B2-T1-H2-Dk16-Dv8"), pytest.param(1, 63, 2, 60, 24, id="B1-T63-H2-Dk60-Dv24")],
)
def test_recurrent_matches_naive(batch, length, heads, key_dim, value_dim, gated):
    inputs = make_inputs(batch, length, heads, key_dim, value_dim, gated=gated)
    assert_form_matches_naive(recurrent_delta_rule, inputs, 1e-5)


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("form", ["naive", "chunk", "recurrent"])
def test_unit_write_is_retrieved(form, gated):
    """With beta = 1 and unit keys, the state returns exactly v_t for k_t right after writing it (any decay)."""
    inputs = make_inputs(2, 21, 2, 16, 8, gated=gated, seed=3)
    k, v = inputs["k"].detach(), inputs["v"].detach()
    g = None if inputs["g"] is None else inputs["g"].detach()
    beta = torch.ones(k.shape[:3])
    extra = {"chunk_size": 8} if form == "chunk" else {}
    o = FORMS[form](k, k, v, beta, g=g, scale=1.0, initial_state=inputs["initial_state"].detach(), **extra)
    assert_close("o", v, o, ratio=1e-5)


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_gradcheck_float64(form, gated):
    inputs = make_inputs(1, 5, 1, 3, 2, gated=gated, dtype=torch.float64)
    names = [name for name, x in inputs.items() if x is not None]
    extra = {"chunk_size": 2} if form == "chunk" else {}

    def fn(*tensors):
        named = dict.fromkeys(inputs)
        named.update(zip(names, tensors))
        return run(FORMS[form], named, **extra)

    assert torch.autograd.gradcheck(fn, [inputs[name] for name in names])


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize(
    ("form", "split"),
    [
        pytest.param("chunk", 1, id="chunk-split1"),
        pytest.param("chunk", 30, id="chunk-split30"),
        pytest.param("chunk", 62, id="chunk-split62"),
        pytest.param("recurrent", 17, id="recurrent-split17"),
    ],
)
def test_split_and_resume_equals_one_call(form, split, gated):
    inputs = make_inputs(2, 63, 2, 16, 12, gated=gated, seed=5)
    extra = {"chunk_size": 16} if form == "chunk" else {}
    o_full, s_full = run(FORMS[form], inputs, **extra)
    first = {n: None if x is None or n == "initial_state" else x[:, :split] for n, x in inputs.items()}
    second = {n: None if x is None or n == "initial_state" else x[:, split:] for n, x in inputs.items()}
    first["initial_state"] = inputs["initial_state"]
    o1, s1 = run(FORMS[form], first, **extra)
    second["initial_state"] = s1
    o2, s2 = run(FORMS[form], second, **extra)
    assert_close("o", o_full, torch.cat([o1, o2], dim=1), ratio=1e-5)
    assert_close("final_state", s_full, s2, ratio=1e-5)


@pytest.mark.parametrize("gated", GATED)
def test_cached_decoding_equals_full_forward(gated):
    """Chunked prefill, then token-by-token decoding through ``delta_rule(mode="auto")`` with the carried state."""
    inputs = {n: None if x is None else x.detach() for n, x in make_inputs(2, 50, 2, 16, 12, gated=gated).items()}
    o_full, s_full = run(delta_rule, inputs, mode="chunk", chunk_size=16)
    prefix = 37
    step = {n: None if x is None or n == "initial_state" else x[:, :prefix] for n, x in inputs.items()}
    step["initial_state"] = inputs["initial_state"]
    o, state = run(delta_rule, step, chunk_size=16)
    outputs = [o]
    for t in range(prefix, 50):
        step = {n: None if x is None or n == "initial_state" else x[:, t : t + 1] for n, x in inputs.items()}
        step["initial_state"] = state
        o, state = run(delta_rule, step)
        outputs.append(o)
    assert_close("o", o_full, torch.cat(outputs, dim=1), ratio=1e-5)
    assert_close("final_state", s_full, state, ratio=1e-5)


MASKS = [
    pytest.param([[1] * 12 + [0] * 5, [0] * 4 + [1] * 13], id="right-and-left-padding"),
    pytest.param([[1, 0, 1, 1, 0, 0, 1] + [1] * 10, [1] * 16 + [0]], id="holes"),
]


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("form", ["naive", "chunk", "recurrent"])
@pytest.mark.parametrize("mask", MASKS)
def test_attention_mask_equals_unpadded_calls(form, gated, mask):
    mask = torch.tensor(mask, dtype=torch.bool)
    inputs = {n: None if x is None else x.detach() for n, x in make_inputs(2, 17, 2, 16, 8, gated=gated).items()}
    # Garbage (NaN) at padded positions must not leak into the state or any output.
    padded = {n: None if x is None or n == "initial_state" else x.clone() for n, x in inputs.items()}
    padded["initial_state"] = inputs["initial_state"]
    for name in ("q", "k", "v", "beta", "g"):
        if padded[name] is not None:
            padded[name][~mask] = float("nan")
    extra = {"chunk_size": 8} if form == "chunk" else {}
    o, state = run(FORMS[form], padded, attention_mask=mask.long(), **extra)
    assert (o[~mask] == 0).all()
    for row in range(2):
        real = {
            n: None if x is None or n == "initial_state" else x[row : row + 1, mask[row]] for n, x in inputs.items()
        }
        real["initial_state"] = inputs["initial_state"][row : row + 1]
        o_row, s_row = run(naive_recurrent_delta_rule, real)
        assert_close(f"o[{row}]", o_row, o[row : row + 1, mask[row]], ratio=1e-5)
        assert_close(f"final_state[{row}]", s_row, state[row : row + 1], ratio=1e-5)


@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("form", ["naive", "chunk", "recurrent"])
def test_cu_seqlens_equals_separate_calls(form, gated):
    bounds = [0, 5, 6, 30, 41]
    inputs = make_inputs(1, 41, 2, 16, 8, gated=gated, num_states=4)
    extra = {"chunk_size": 8} if form == "chunk" else {}
    o, state = run(FORMS[form], inputs, cu_seqlens=torch.tensor(bounds), **extra)
    o_sep, s_sep = [], []
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        part = {name: None if x is None or name == "initial_state" else x[:, start:end] for name, x in inputs.items()}
        part["initial_state"] = inputs["initial_state"][n : n + 1]
        o_n, s_n = run(naive_recurrent_delta_rule, part)
        o_sep.append(o_n)
        s_sep.append(s_n)
    assert_close("o", torch.cat(o_sep, dim=1), o, ratio=1e-5)
    assert_close("final_state", torch.cat(s_sep, dim=0), state, ratio=1e-5)
    g_packed = grads(inputs, o, state)
    g_separate = grads(inputs, torch.cat(o_sep, dim=1), torch.cat(s_sep, dim=0))
    for name in g_packed:
        assert_close(f"d{name}", g_separate[name], g_packed[name], ratio=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_half_inputs_compute_in_fp32(mode, dtype):
    inputs = {n: None if x is None else x.detach() for n, x in make_inputs(2, 33, 2, 16, 8, gated=True).items()}
    low = {n: None if x is None or n in ("beta", "g", "initial_state") else x.to(dtype) for n, x in inputs.items()}
    low.update(beta=inputs["beta"], g=inputs["g"], initial_state=inputs["initial_state"])
    o, state = run(delta_rule, low, mode=mode)
    assert o.dtype == dtype and state.dtype == torch.float32
    # Reference: the same rounded inputs in fp32, so the only difference is the final cast of o.
    rounded = {n: None if x is None else x.float() for n, x in low.items()}
    o_ref, s_ref = run(naive_recurrent_delta_rule, rounded)
    assert_close("o", o_ref, o.float(), ratio=1e-2)
    assert_close("final_state", s_ref, state, ratio=1e-5)


def test_autocast_is_disabled_inside():
    inputs = {n: None if x is None else x.detach() for n, x in make_inputs(1, 20, 2, 16, 8, gated=True).items()}
    o_ref, s_ref = run(chunk_delta_rule, inputs, chunk_size=8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        o, state = run(chunk_delta_rule, inputs, chunk_size=8)
    assert o.dtype == torch.float32 and state.dtype == torch.float32
    assert_close("o", o_ref, o, ratio=1e-6)
    assert_close("final_state", s_ref, state, ratio=1e-6)


@pytest.mark.parametrize("mode", ["auto", "naive", "chunk", "recurrent"])
@pytest.mark.parametrize("length", [1, 4, 19], ids=["T1", "T4", "T19"])
def test_delta_rule_modes_agree_and_scale(mode, length):
    inputs = {n: None if x is None else x.detach() for n, x in make_inputs(2, length, 2, 16, 8, gated=True).items()}
    o_ref, s_ref = run(naive_recurrent_delta_rule, inputs)
    o, state = run(delta_rule, inputs, mode=mode, chunk_size=8)
    assert_close("o", o_ref, o, ratio=1e-5)
    assert_close("final_state", s_ref, state, ratio=1e-5)
    # An explicit scale multiplies the queries; the default is Dk ** -0.5.
    rescaled = dict(inputs, q=inputs["q"] * 16**-0.5 / 3.0)
    o_scaled = run(delta_rule, rescaled, mode=mode, chunk_size=8, scale=3.0)[0]
    assert_close("o(scale)", o_ref, o_scaled, ratio=1e-5)


def test_without_final_state_returns_output_only():
    inputs = make_inputs(1, 9, 1, 16, 8, gated=False)
    o = delta_rule(inputs["q"], inputs["k"], inputs["v"], inputs["beta"])
    assert isinstance(o, torch.Tensor) and o.shape == (1, 9, 1, 8)


def _bad(**changes):
    return changes


BAD_INPUTS = [
    pytest.param(_bad(q=torch.zeros(2, 5, 16)), ValueError, "q must have 4 dimensions", id="q-rank3"),
    pytest.param(_bad(k=torch.zeros(2, 5, 2, 15)), ValueError, "k must have the shape of q", id="k-wrong-Dk"),
    pytest.param(_bad(v=torch.zeros(2, 6, 2, 8)), ValueError, "v must have [B, T, H]", id="v-wrong-T"),
    pytest.param(_bad(beta=torch.zeros(2, 5, 3)), ValueError, "beta must have shape", id="beta-wrong-H"),
    pytest.param(_bad(g=torch.zeros(1, 5, 2)), ValueError, "g must have shape", id="g-wrong-B"),
    pytest.param(_bad(q=torch.zeros(2, 5, 2, 16, dtype=torch.long)), TypeError, "floating-point dtype", id="q-int"),
    pytest.param(_bad(beta=torch.ones(2, 5, 2, dtype=torch.int32)), TypeError, "beta must have", id="beta-int"),
    pytest.param(_bad(v=torch.zeros(2, 5, 2, 8, dtype=torch.float64)), TypeError, "share one dtype", id="v-dtype"),
    pytest.param(_bad(q=[0.0]), TypeError, "q must be a torch.Tensor", id="q-list"),
    pytest.param(_bad(q=torch.zeros(2, 0, 2, 16)), ValueError, "T >= 1", id="T0"),
    pytest.param(_bad(scale="big"), TypeError, "scale must be a real number", id="scale-str"),
    pytest.param(_bad(initial_state=torch.zeros(2, 2, 8, 16)), ValueError, "initial_state must have", id="state-T"),
    pytest.param(_bad(attention_mask=torch.ones(2, 4)), ValueError, "attention_mask must have shape", id="mask-shape"),
    pytest.param(_bad(attention_mask=torch.full((2, 5), 2)), ValueError, "only 0/1", id="mask-values"),
    pytest.param(_bad(cu_seqlens=torch.tensor([0, 5])), ValueError, "the batch dimension must be 1", id="cu-B2"),
    pytest.param(_bad(chunk_size=0), ValueError, "chunk_size must be a positive int, got 0", id="chunk0"),
    pytest.param(_bad(chunk_size=-3), ValueError, "chunk_size must be a positive int, got -3", id="chunk-neg"),
    pytest.param(_bad(mode="fused"), ValueError, "mode must be one of", id="mode"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD_INPUTS)
def test_invalid_inputs_raise_clear_errors(changes, error, message):
    args = {
        "q": torch.zeros(2, 5, 2, 16),
        "k": torch.zeros(2, 5, 2, 16),
        "v": torch.zeros(2, 5, 2, 8),
        "beta": torch.zeros(2, 5, 2),
        "g": None,
    }
    args.update(changes)
    q, k, v, beta = (args.pop(name) for name in ("q", "k", "v", "beta"))
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        delta_rule(q, k, v, beta, **args)


BAD_CU_SEQLENS = [
    pytest.param(torch.tensor([0.0, 5.0]), TypeError, "integer dtype", id="float"),
    pytest.param(torch.tensor([1, 5]), ValueError, "start at 0", id="not-from-0"),
    pytest.param(torch.tensor([0, 3, 3, 5]), ValueError, "strictly increasing", id="repeated"),
    pytest.param(torch.tensor([0, 4]), ValueError, "end at the total packed length T=5", id="short"),
    pytest.param(torch.tensor([[0, 5]]), ValueError, "1-D integer tensor", id="2d"),
]


@pytest.mark.parametrize(("cu_seqlens", "error", "message"), BAD_CU_SEQLENS)
def test_invalid_cu_seqlens_raise_clear_errors(cu_seqlens, error, message):
    q = torch.zeros(1, 5, 2, 16)
    with pytest.raises(error, match=message):
        chunk_delta_rule(q, q, torch.zeros(1, 5, 2, 8), torch.zeros(1, 5, 2), cu_seqlens=cu_seqlens)


def test_cu_seqlens_state_count_and_mask_conflict():
    q = torch.zeros(1, 5, 2, 16)
    v, beta = torch.zeros(1, 5, 2, 8), torch.zeros(1, 5, 2)
    with pytest.raises(ValueError, match=r"initial_state must have shape \[B, H, Dk, Dv\] = \(2, 2, 16, 8\)"):
        delta_rule(q, q, v, beta, cu_seqlens=torch.tensor([0, 2, 5]), initial_state=torch.zeros(1, 2, 16, 8))
    with pytest.raises(ValueError, match="either attention_mask or cu_seqlens"):
        delta_rule(q, q, v, beta, cu_seqlens=torch.tensor([0, 5]), attention_mask=torch.ones(1, 5))
