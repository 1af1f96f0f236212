"""Attention transfer, recovery, and saving / loading a converted model, on tiny random models."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from nalaformer.convert import linearize, new_parameters, set_mode
from nalaformer.convert.saving import from_pretrained, save_pretrained
from nalaformer.convert.stages import (
    finish_recovery,
    freeze_for_transfer,
    make_teacher,
    prepare_recovery,
    recovery_loss,
    transfer_loss,
)
from tests.convert.test_swap import inputs, output, tiny


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("mixer", ["nala", "hedgehog"])
def test_attention_transfer_trains_only_new_parameters_and_lowers_the_loss(family, mixer):
    model = linearize(tiny(family), mixer=mixer)
    pretrained = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = freeze_for_transfer(model)
    assert {id(p) for p in trainable} == {id(p) for _, p in new_parameters(model)}
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    batch = inputs(12)
    losses = []
    for _ in range(15):
        loss, metrics = transfer_loss(model, batch, kl_weight=1.0, kl_max_len=16)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    assert set(metrics) == {"loss", "mse", "kl"}
    assert losses[-1] < 0.8 * losses[0]
    new = {name for name, _ in new_parameters(model)}
    for name, p in model.named_parameters():
        if name not in new:
            assert torch.equal(p, pretrained[name]), name
    assert all(module.mode == "linear" for module in model.modules() if hasattr(module, "mode"))


def test_kl_term_only_on_short_inputs():
    model = linearize(tiny("bert"), mixer="elu")
    _, short = transfer_loss(model, inputs(8), kl_max_len=8)
    _, long = transfer_loss(model, inputs(9), kl_max_len=8)
    assert "kl" in short and "kl" not in long


def test_transfer_sees_the_teacher_hidden_states():
    """In transfer mode the output is the pretrained model's, whatever the student does."""
    model = tiny("gpt2")
    batch = inputs()
    with torch.no_grad():
        reference = output(model, batch)
        linearize(model, mixer="relu")
        set_mode(model, "transfer")
        teacher = output(model, batch)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(teacher[valid], reference[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_lora_recovery_lowers_the_distillation_loss_and_merges(family):
    pytest.importorskip("peft", reason="LoRA recovery needs peft (pip install 'nalaformer[convert]')")
    model = linearize(tiny(family), mixer="nala")
    teacher = make_teacher(model)
    student = prepare_recovery(model, lora_rank=4)
    trainable = [p for p in student.parameters() if p.requires_grad]
    assert trainable and len(trainable) < len(list(student.parameters()))
    optimizer = torch.optim.Adam(trainable, lr=5e-3)
    batch = inputs(12)
    losses = []
    for _ in range(12):
        loss, _ = recovery_loss(student, teacher, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    with torch.no_grad():
        before = output(student, batch)
        merged = finish_recovery(student)
        torch.testing.assert_close(output(merged, batch), before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_save_pretrained_and_load_back_offline(family, tmp_path):
    model = linearize(tiny(family), mixer="hedgehog")
    with torch.no_grad():
        for _, p in new_parameters(model):
            p.add_(0.01 * torch.randn_like(p))  # trained-looking new parameters must round-trip
        batch = inputs()
        expected = output(model, batch)
    save_pretrained(model, tmp_path / "converted")
    loaded = from_pretrained(tmp_path / "converted")
    with torch.no_grad():
        torch.testing.assert_close(output(loaded, batch), expected)
    assert loaded.nalaformer_conversion["mixer"] == "hedgehog"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_converted_decoder_generates_the_same_with_and_without_its_cache(family):
    model = linearize(tiny(family), mixer="nala")
    prompt = torch.randint(1, 40, (1, 5))
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_loading_refuses_a_folder_that_is_not_a_conversion(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"conversion\.json"):
        from_pretrained(tmp_path)


def _distillation_case():
    """Three passages of 5, 3 and 1 real tokens: student and teacher hidden states, the mask, the batch, the outputs."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    outputs = SimpleNamespace(last_hidden_state=student), SimpleNamespace(last_hidden_state=teacher)
    return student, teacher, mask, {"attention_mask": mask}, outputs


def test_embedding_term_is_the_cosine_distance_of_mean_pooled_embeddings():
    from nalaformer.convert.stages import distillation_loss

    student, teacher, mask, batch, outputs = _distillation_case()
    plain, metrics = distillation_loss(*outputs, batch)
    assert set(metrics) == {"loss", "mse"}
    weighted, metrics = distillation_loss(*outputs, batch, embedding_weight=0.5)
    # reference: one passage at a time, its real tokens only
    distances = []
    for index in range(3):
        real = mask[index].bool()
        s, t = student[index, real].mean(0), teacher[index, real].mean(0)
        distances.append(1 - torch.nn.functional.cosine_similarity(s, t, dim=0))
    expected = sum(distances) / 3
    assert metrics["cosine_distance"] == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(weighted, plain + 0.5 * expected)
    # identical outputs: no distance
    same, metrics = distillation_loss(outputs[1], outputs[1], batch, embedding_weight=1.0)
    assert metrics["cosine_distance"] == pytest.approx(0.0, abs=1e-6) and float(same) == pytest.approx(0.0, abs=1e-6)


def test_similarity_term_is_the_mean_squared_gap_of_pairwise_embedding_similarities():
    from types import SimpleNamespace

    from nalaformer.convert.stages import distillation_loss

    student, teacher, mask, batch, outputs = _distillation_case()
    plain, _ = distillation_loss(*outputs, batch)
    weighted, metrics = distillation_loss(*outputs, batch, similarity_weight=2.0)
    assert "cosine_distance" not in metrics
    # reference: each passage's mean over its real tokens, then the cosine of every ordered pair of distinct passages
    pooled = [[h[i, mask[i].bool()].mean(0) for i in range(3)] for h in (student, teacher)]
    gaps = [
        torch.nn.functional.cosine_similarity(pooled[0][i], pooled[0][j], dim=0)
        - torch.nn.functional.cosine_similarity(pooled[1][i], pooled[1][j], dim=0)
        for i in range(3)
        for j in range(3)
        if i != j
    ]
    expected = sum(gap**2 for gap in gaps) / len(gaps)
    assert metrics["similarity_mse"] == pytest.approx(float(expected), rel=1e-5) and float(expected) > 0.01
    torch.testing.assert_close(weighted, plain + 2.0 * expected)
    # the same geometry up to a rotation of the embedding space: no similarity gap, though the hidden states differ
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    rotated = SimpleNamespace(last_hidden_state=teacher @ rotation)
    _, metrics = distillation_loss(rotated, outputs[1], batch, similarity_weight=1.0)
    assert metrics["similarity_mse"] == pytest.approx(0.0, abs=1e-10) and metrics["mse"] > 0.1
    with pytest.raises(ValueError, match="similarity_weight"):
        distillation_loss(
            SimpleNamespace(last_hidden_state=student[:1]), SimpleNamespace(last_hidden_state=teacher[:1]),
            {"attention_mask": mask[:1]}, similarity_weight=1.0,
        )  # fmt: skip
