"""A save_pretrained folder through lm-evaluation-harness's own Hugging Face model type (``--model hf``), which needs
no nalaformer import: its scores equal the ``nalaformer`` model type's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from lm_eval.models.huggingface import HFLM

from nalaformer.data.tokenizers import GPT2Tokenizer
from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM
from nalaformer.train.harness import NaLaHarnessLM

PAIRS = [("Shall I compare thee", " to a summer's day"), ("Thou art", " more lovely"), ("A", " B")]


def test_hf_model_type_scores_like_the_nalaformer_model_type(tmp_path) -> None:
    tokenizer = GPT2Tokenizer()
    torch.manual_seed(0)
    model = NaLaForCausalLM(NaLaConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    # in this process "nala" is registered, so trust_remote_code is not needed (a fresh process passes it: see
    # tests/models/test_lm.py for the load without any nalaformer import)
    hf = HFLM(pretrained=str(tmp_path), device="cpu", batch_size=2)
    ours = NaLaHarnessLM(str(tmp_path), batch_size=2, tokenizer="gpt2")
    assert isinstance(hf.model, NaLaForCausalLM)
    requests = [SimpleNamespace(args=pair) for pair in PAIRS]
    for (score, greedy), (reference, reference_greedy) in zip(hf.loglikelihood(requests), ours.loglikelihood(requests)):
        assert score == pytest.approx(reference, rel=1e-5, abs=1e-5) and greedy == reference_greedy
