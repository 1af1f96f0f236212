"""The delta-rule mixers inside the causal LM: cached decoding and ``generate`` equal full recomputation."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from nalaformer.layers import DeltaRuleState
from nalaformer.models.lm import NaLaCache, NaLaConfig, NaLaForCausalLM
from tests.assertions import assert_close, assert_greedy_tokens_match

NAMES = ["deltanet", "gated_deltanet", "nala_deltanet", "nala_gated_deltanet"]


def build(**overrides) -> NaLaForCausalLM:
    torch.manual_seed(0)
    return NaLaForCausalLM(NaLaConfig.from_preset("tiny", **overrides)).eval()


def random_ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, 96, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_equals_full_forward(name):
    model = build(mixer=name)
    ids = random_ids(2, 12)
    with torch.no_grad():
        full = model(ids).logits
        prefill = model(ids[:, :7], use_cache=True)
        cache = prefill.cache
        logits = [prefill.logits]
        for t in range(7, 12):
            logits.append(model(ids[:, t : t + 1], cache=cache).logits)
    assert isinstance(cache, NaLaCache)
    assert all(isinstance(state.attention, DeltaRuleState) for state in cache.states)
    assert_close("logits", full, torch.cat(logits, dim=1))


def test_generate_with_a_hybrid_delta_and_softmax_stack_equals_greedy_recomputation():
    model = build(layer_mixers=["nala_gated_deltanet", "softmax"])
    ids = random_ids(1, 6)
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        expected = ids
        for _ in range(6):
            next_id = model(expected).logits[:, -1].argmax(dim=-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    assert_greedy_tokens_match(model, expected, generated)
