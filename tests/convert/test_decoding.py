"""Converted decoders (GPT-2, Llama-style, NaLaForCausalLM) decode with a state that does not grow with the context."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from nalaformer.convert import linearize, new_parameters, set_mode
from nalaformer.convert.cache import LinearStateLayer, cache_nbytes
from nalaformer.convert.families import AdaptedFeatureMap, AdaptedNaLaFeatureMap
from nalaformer.convert.saving import from_pretrained, save_pretrained
from nalaformer.layers import NaLaFeatureMap
from tests.convert.test_swap import VOCAB, tiny

DECODERS = ["gpt2", "llama", "nala_block"]


def tiny_decoder(family: str):
    if family == "nala_block":
        from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

        config = NaLaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mixer="softmax"
        )
        return NaLaForCausalLM(config).eval()
    return tiny(family)


def converted(family: str, mixer: str = "nala", seed: int = 0):
    torch.manual_seed(seed)
    model = linearize(tiny_decoder(family), mixer=mixer)
    with torch.no_grad():
        for _, p in new_parameters(model):
            p.add_(0.05 * torch.randn_like(p))  # trained-looking adapters: not the identity
    return model


def decode_in_steps(model, ids: torch.Tensor, prefix: int):
    """Logits of a prefill of ``prefix`` tokens then one token per call, and the cache after each call."""
    out = model(ids[:, :prefix], use_cache=True)
    cache = out.past_key_values
    logits, sizes = [out.logits], [cache_nbytes(cache)]
    for t in range(prefix, ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        logits.append(out.logits)
        sizes.append(cache_nbytes(cache))
    return torch.cat(logits, dim=1), cache, sizes


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("mixer", ["nala", "hedgehog"])
def test_cached_decoding_matches_the_full_forward_with_a_constant_state(family, mixer):
    model = converted(family, mixer)
    ids = torch.randint(1, VOCAB, (2, 30))
    with torch.no_grad():
        full = model(ids).logits
        stepped, cache, sizes = decode_in_steps(model, ids, prefix=6)
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    # the state after 6 tokens and after 30 tokens holds the same bytes (a KV cache would hold 5x more)
    assert sizes[0] > 0 and len(set(sizes)) == 1, sizes
    if family != "nala_block":
        assert all(isinstance(layer, LinearStateLayer) for layer in cache.layers)
        assert all(layer.get_seq_length() == 30 for layer in cache.layers)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_teacher_mode_still_grows_its_key_value_cache():
    """The reference point of the test above: the same model in softmax mode keeps every key and value."""
    model = converted("gpt2")
    set_mode(model, "softmax")
    ids = torch.randint(1, VOCAB, (1, 20))
    with torch.no_grad():
        _, _, sizes = decode_in_steps(model, ids, prefix=5)
    assert sizes[-1] == sizes[0] * 4


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_left_padded_generation_gives_each_row_its_own_tokens(family):
    model = converted(family, "nala", seed=1)
    short, long = torch.randint(1, VOCAB, (1, 4)), torch.randint(1, VOCAB, (1, 7))
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, **settings)
        alone = [model.generate(x, attention_mask=torch.ones_like(x), **settings) for x in (short, long)]
    assert torch.equal(together[0, 3:], alone[0][0])
    assert torch.equal(together[1], alone[1][0])


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("family", DECODERS)
def test_beam_search_with_the_state_matches_beam_search_without_a_cache(family):
    model = converted(family, "elu")
    prompt = torch.randint(1, VOCAB, (1, 5))
    settings = dict(max_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **settings)
        uncached = model.generate(prompt, use_cache=False, **settings)
    assert torch.equal(cached, uncached)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_softmax_cache_cannot_be_continued_by_the_converted_layers():
    model = converted("llama")
    ids = torch.randint(1, VOCAB, (1, 6))
    with torch.no_grad():
        set_mode(model, "softmax")
        cache = model(ids, use_cache=True).past_key_values
        set_mode(model, "linear")
        with pytest.raises(ValueError, match="already holds 6 keys from softmax attention"):
            model(ids[:, :1], past_key_values=cache, use_cache=True)


def test_converted_nala_block_runs_the_fast_nala_op_and_matches_the_generic_features():
    model = converted("nala_block")
    reference = copy.deepcopy(model)
    for layer in reference.model.layers:
        block = layer.mixer.student_block
        assert isinstance(block.feature_map, AdaptedNaLaFeatureMap)  # LinearAttention sends it to nala_attention
        plain = copy.deepcopy(block.feature_map)
        adapter = plain.adapter
        del plain.adapter
        plain.__class__ = NaLaFeatureMap
        block.feature_map = AdaptedFeatureMap(plain, adapter)  # the generic route: features, then linear_attention
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("family", DECODERS)
def test_saved_decoder_loads_offline_and_decodes_with_a_constant_state(family, tmp_path):
    model = converted(family, "nala")
    ids = torch.randint(1, VOCAB, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    save_pretrained(model, tmp_path / "converted")
    loaded = from_pretrained(tmp_path / "converted")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected)
        stepped, _, sizes = decode_in_steps(loaded, ids, prefix=4)
    torch.testing.assert_close(stepped, expected, atol=1e-4, rtol=1e-4)
    assert len(set(sizes)) == 1
