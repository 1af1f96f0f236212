"""Swapping pretrained softmax attention for converted linear attention, on tiny random models of the real classes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from nalaformer.convert import (
    ConversionError,
    ConversionSpec,
    calibrate,
    converted_modules,
    explicit_attention,
    linearize,
    new_parameters,
    set_mode,
)
from nalaformer.convert.attention import softmax_reference
from nalaformer.ops import linear_attention

VOCAB = 40


def tiny(family: str, heads: int = 4, hidden: int = 32):
    if family == "bert":
        config = BertConfig(
            vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=64
        )
        return BertModel(config).eval()
    if family == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=2, n_head=heads, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=2,
        intermediate_size=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def inputs(seq_len: int = 9) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, seq_len))
    mask = torch.ones(2, seq_len, dtype=torch.long)
    mask[1, seq_len - 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def output(model, batch):
    out = model(**batch)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_softmax_mode_is_the_pretrained_model(family):
    model = tiny(family)
    batch = inputs()
    with torch.no_grad():
        reference = output(model, batch)
        linearize(model, mixer="elu")
        set_mode(model, "softmax")
        teacher = output(model, batch)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(teacher[valid], reference[valid], atol=1e-5, rtol=1e-5)
    assert len(list(converted_modules(model))) == 2


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("mixer", ["nala", "nala_cosine", "elu", "relu", "hedgehog", "cosformer"])
def test_every_linear_mixer_converts_and_runs(family, mixer):
    model = tiny(family)
    linearize(model, mixer=mixer)
    batch = inputs()
    out = output(model, batch)
    assert torch.isfinite(out).all()
    # the pretrained projections are shared, not copied: one parameter set plus the new ones
    names = {name for name, _ in new_parameters(model)}
    assert names and all(("adapter" in n) or ("feature_map" in n) for n in names)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_padding_does_not_change_real_tokens(family):
    model = linearize(tiny(family), mixer="nala")
    batch = inputs()
    with torch.no_grad():
        padded = output(model, batch)
        real = int(batch["attention_mask"][1].sum())
        alone = output(model, {"input_ids": batch["input_ids"][1:, :real], "attention_mask": torch.ones(1, real)})
    torch.testing.assert_close(padded[1, :real], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len", [1, 63])
def test_explicit_attention_matches_the_linear_attention_op(causal, seq_len):
    phi_q, phi_k = torch.rand(2, seq_len, 3, 10), torch.rand(2, seq_len, 3, 10)
    v = torch.randn(2, seq_len, 3, 6)
    mask = torch.ones(2, seq_len, dtype=torch.bool)
    mask[0, : seq_len // 3] = False
    o, weights = explicit_attention(phi_q, phi_k, v, causal=causal, key_mask=mask)
    expected = linear_attention(phi_q, phi_k, v, causal=causal, attention_mask=mask)
    # the op zeroes padded queries; the explicit form still answers them (the caller masks)
    torch.testing.assert_close(o[mask], expected[mask], atol=1e-5, rtol=1e-4)
    assert torch.allclose(weights.sum(-1)[mask[:, None, :].expand(-1, 3, -1)], torch.ones(()), atol=1e-4)


def test_decoding_against_cached_keys_matches_the_full_sequence():
    phi_q, phi_k, v = torch.rand(1, 7, 2, 8), torch.rand(1, 7, 2, 8), torch.randn(1, 7, 2, 4)
    full, _ = explicit_attention(phi_q, phi_k, v, causal=True)
    last, _ = explicit_attention(phi_q[:, -1:], phi_k, v, causal=True)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_window_covering_everything_is_softmax():
    q, k, v = torch.randn(1, 6, 2, 8), torch.randn(1, 6, 2, 8), torch.randn(1, 6, 2, 8)
    teacher, _, scores = softmax_reference(q, k, v, scaling=8**-0.5, causal=True, key_mask=None)
    hybrid, _ = explicit_attention(q.abs(), k.abs(), v, causal=True, window=6, scores=scores, eps=0.0)
    torch.testing.assert_close(hybrid, teacher.float(), atol=1e-5, rtol=1e-5)


def test_sliding_window_hybrid_runs_and_differs_from_pure_linear():
    batch = inputs(12)
    torch.manual_seed(1)
    pure = linearize(tiny("gpt2"), mixer="elu")
    torch.manual_seed(1)
    hybrid = linearize(tiny("gpt2"), ConversionSpec(mixer="elu", window=3))
    with torch.no_grad():
        a, b = output(pure, batch), output(hybrid, batch)
    assert torch.isfinite(b).all() and not torch.allclose(a, b)


def test_nala_block_conversion_keeps_block_weights_and_decodes_with_the_library_cache():
    pytest.importorskip("transformers")
    from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

    config = NaLaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mixer="softmax")
    model = NaLaForCausalLM(config).eval()
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        reference = model(ids).logits
        linearize(model, mixer="nala")
        set_mode(model, "softmax")
        torch.testing.assert_close(model(ids).logits, reference)
        set_mode(model, "linear")
        full = model(ids).logits
        prefix = model(ids[:, :6], use_cache=True)
        step = model(ids[:, 6:], past_key_values=prefix.past_key_values, use_cache=True).logits
    torch.testing.assert_close(step, full[:, 6:], atol=1e-4, rtol=1e-4)
    assert model.model.has_bounded_context is False


def test_calibrate_sets_nala_temperature_to_the_median_query_norm():
    model = linearize(tiny("bert"), mixer="nala")
    batch = inputs()
    medians = calibrate(model, [batch])
    path, module = next(iter(converted_modules(model)))
    with torch.no_grad():
        hidden = model.embeddings(batch["input_ids"])
        q = module.query(hidden).view(2, 9, 4, 8).norm(dim=-1).flatten(0, 1)
    torch.testing.assert_close(torch.tensor(medians[path]), q.median(dim=0).values, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(module.adapter.query_log_scale.exp(), 1 / q.median(dim=0).values, atol=1e-3, rtol=1e-3)
    # maps that are not NaLa's keep scale 1
    other = linearize(tiny("bert"), mixer="elu")
    assert calibrate(other, [batch]) == {}


# --- bad input: a clear error naming the module and the reason, before anything is replaced -----------------------


def test_unknown_attention_names_the_module():
    class MysteryAttention(torch.nn.Module):
        def forward(self, x):
            return x

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), MysteryAttention())
    with pytest.raises(ConversionError, match=r"module '1' \(MysteryAttention\) is an attention the converter"):
        linearize(model)


def test_model_without_attention():
    with pytest.raises(ConversionError, match="Sequential has no softmax self-attention"):
        linearize(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_causal_only_mixer_for_an_encoder_names_the_module():
    model = tiny("bert")
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(ConversionError, match=r"module 'encoder.layer.0.attention.self' \(BertSelfAttention\) is "
                                              r"bidirectional .* causal only"):  # fmt: skip
        linearize(model, mixer="deltanet")
    assert not list(converted_modules(model))
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_head_dim_the_mixer_cannot_take_names_the_module():
    model = tiny("bert", heads=32, hidden=32 * 3)  # head width 3: PolaFormer splits each value head in two
    with pytest.raises(ConversionError, match=r"encoder.layer.0.attention.self.*width 3.*polaformer.*even"):
        linearize(model, mixer="polaformer")
    assert not list(converted_modules(model))


def test_non_linear_mixer_and_unknown_mixer_are_refused():
    with pytest.raises(ConversionError, match="not a feature-map linear attention"):
        linearize(tiny("gpt2"), mixer="softmax")
    with pytest.raises(ConversionError, match="unknown attention 'nope'"):
        linearize(tiny("gpt2"), mixer="nope")


def test_already_converted_model_is_refused():
    model = linearize(tiny("gpt2"))
    with pytest.raises(ConversionError, match="already converted"):
        linearize(model)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len", [1, 63])
@pytest.mark.parametrize("head_dim", [16, 60])
def test_nala_fast_path_matches_the_explicit_reference(causal, seq_len, head_dim):
    from nalaformer.convert.attention import LinearizedAttention

    layer = LinearizedAttention("nala", {}, 2, head_dim, causal, 0, 1e-6)
    with torch.no_grad():
        layer.adapter.query_log_scale.fill_(-1.5)
        layer.adapter.query_weight.add_(0.05 * torch.randn_like(layer.adapter.query_weight))
    q, k, v = (torch.randn(2, seq_len, 2, head_dim) for _ in range(3))
    mask = torch.ones(2, seq_len, dtype=torch.bool)
    mask[1, : seq_len // 2] = False
    for key_mask in (None, mask):
        fast, _ = layer.student(q, k, v, key_mask=key_mask)
        reference, _ = layer.student(q, k, v, key_mask=key_mask, want_weights=True)
        rows = torch.ones_like(mask) if key_mask is None else mask
        if causal and key_mask is not None:
            rows = rows & (mask.long().cumsum(1) > 0)
        torch.testing.assert_close(fast[rows], reference[rows].to(fast.dtype), atol=1e-5, rtol=1e-4)


def test_nala_with_its_own_learned_temperature_converts_and_is_not_calibrated():
    model = linearize(tiny("bert"), mixer="nala_learned_t")
    assert calibrate(model, [inputs()]) == {}
    assert any("log_temperature" in name for name, _ in new_parameters(model))
    assert torch.isfinite(output(model, inputs())).all()
