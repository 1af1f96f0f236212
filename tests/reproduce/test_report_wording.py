"""The report's wording rules and plot-axis choices (each replaced a misleading form)."""

from __future__ import annotations

import itertools

import pytest

from nalaformer.reproduce.claims import (
    CONSTANT_SHARE,
    describe_gain,
    exponent_verdict,
    paper_reference,
    task_claims,
)
from nalaformer.reproduce.report import accuracy_axis, log_axis_labels


def test_a_signed_gain_is_said_as_better_or_worse_by_its_size():
    assert describe_gain(-0.451) == "worse by 0.451"
    assert describe_gain(0.012) == "better by 0.012"
    assert describe_gain(0.0) == "equal"


def test_the_exponent_verdict_uses_one_threshold_for_every_mode():
    # the quick run's 86.9% and the full run's 97.7% saturated queries get the same words
    quick, full = exponent_verdict(0.869), exponent_verdict(0.977)
    assert quick.startswith("effectively constant") and full.startswith("effectively constant")
    assert f"{100 * CONSTANT_SHARE:.0f}%" in quick
    assert exponent_verdict(0.1).startswith("dynamic")
    assert exponent_verdict(0.5).startswith("partly saturated")


def _task(nala: float, softmax: float, n: int = 1) -> dict:
    std = 0.01 if n > 1 else None
    return {
        "metric": "val_loss",
        "higher_is_better": False,
        "mixers": {
            "nala": {"mean": nala, "std": std, "n": n},
            "softmax": {"mean": softmax, "std": std, "n": n},
        },
    }


def test_claims_on_a_lower_is_better_metric_say_worse_by():
    claims = {c["id"]: c for c in task_claims("lm", _task(nala=2.451, softmax=2.0))}
    versus = claims["nala_vs_softmax_lm"]
    assert versus["ours"] == "NaLa vs softmax: worse by 0.451" and "better direction" not in versus["ours"]
    assert versus["verdict"].startswith("worse")


def test_imagenet_numbers_are_labelled_as_such_off_the_image_task():
    claims = {c["id"]: c for c in task_claims("mqar", _task(0.9, 0.95))}
    assert claims["nala_vs_softmax_mqar"]["paper"].startswith("the paper's ImageNet claim, applied to mqar")
    image = {c["id"]: c for c in task_claims("image", _task(0.9, 0.95))}
    assert image["nala_vs_softmax_image"]["paper"].startswith("Table 6 (ImageNet-1K")
    assert paper_reference("image", "x") == "x"


def _entry(means: list[float], std: float | None, n: int) -> dict:
    return {"mixers": {f"m{i}": {"mean": m, "std": std, "n": n} for i, m in enumerate(means)}}


def test_one_seed_panels_start_at_zero_and_say_one_seed():
    layout = accuracy_axis(_entry([0.958, 0.975], None, 1))
    assert layout["ylim"][0] == 0.0 and layout["ylim"][1] >= 0.975
    assert "one seed" in layout["note"]


def test_panels_with_seeds_zoom_to_cover_the_error_bars():
    layout = accuracy_axis(_entry([0.958, 0.975], 0.004, 3))
    low, high = layout["ylim"]
    assert 0.0 < low < 0.958 - 0.004 and high > 0.975 + 0.004
    assert layout["note"] == "mean ± std over 3 seeds"


def test_log_axes_label_only_the_measured_lengths():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axis = plt.subplots()
    axis.loglog([256, 1024, 4096], [3.0, 4.0, 5.0])
    log_axis_labels(axis, [256, 1024, 4096])
    figure.canvas.draw()
    assert [t.get_text() for t in axis.get_xticklabels()] == ["256", "1024", "4096"]
    assert isinstance(axis.yaxis.get_minor_formatter(), NullFormatter)
    assert all(not t.get_text() for t in axis.get_yticklabels(minor=True))
    plt.close(figure)


def _spikiness_results(level: float) -> dict:
    spikiness = {
        "analysed": True,
        "saturation_tanh": level,
        "pearson_entropy_q_norm": -0.1,
        "spearman_entropy_q_norm": -0.1,
        "pearson_entropy_k_norm": 0.0,
        "same_sign_fraction_mean": 0.5,
        "q_norm_mean": 3.0,
        "exponent_saturated_fraction": 0.9,
    }
    norm = {"saturated_fraction": {"mean": 0.5, "std": None, "n": 1}}
    return {"tasks": {"image": {"mixers": {"nala": {"spikiness": spikiness, "norm": norm}}}}}


def test_the_report_states_one_saturation_threshold_the_training_statistics_share():
    from nalaformer.diagnostics.training import saturation_threshold
    from nalaformer.reproduce.claims import SATURATION_TANH, exponent_claim, saturation_words
    from nalaformer.reproduce.report import _section_spikiness

    assert abs(SATURATION_TANH - saturation_threshold(0.5)) < 1e-12  # p within 1% of 4.5, as logged in training
    assert saturation_words(SATURATION_TANH) == "p within 1.0% of its ceiling 4.5 (tanh(‖q‖) >= 0.985)"
    assert saturation_words(0.95) == "p within 3.3% of its ceiling 4.5 (tanh(‖q‖) >= 0.950)"
    results = _spikiness_results(SATURATION_TANH)
    text = "\n".join(_section_spikiness(results, {}))
    assert text.count("tanh(‖q‖) >=") == 1 and "(1%)" not in text and text.count("| p saturated |") == 2
    claim = exponent_claim(results["tasks"])
    assert claim["ours"] == f"trained NaLa models: 90.0% of queries saturated ({saturation_words(SATURATION_TANH)})"
    # a folder measured at the earlier level says so, with its own level, in the table's note and the claim
    earlier = _spikiness_results(0.95)
    text = "\n".join(_section_spikiness(earlier, {}))
    assert "measured before the study used that threshold: there saturated means p within 3.3%" in text
    assert saturation_words(0.95) in exponent_claim(earlier["tasks"])["ours"]


def test_the_frontier_plot_labels_its_byte_axis_inside_a_decade_without_overlap():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nalaformer.reproduce.boundary_report import byte_axis_labels, byte_label, byte_ticks

    # the map's state sizes span under one decade: no power of ten inside, so matplotlib alone labels nothing
    sizes = [18_456, 21_008, 34_384, 35_352, 37_392]
    assert byte_ticks(sizes) == [20_000.0, 30_000.0]
    assert byte_ticks([18_456, 1_052_176]) == [100_000.0, 1_000_000.0]
    assert byte_ticks([100, 104]) == [100.0, 104.0]  # no round value inside: the two ends
    assert [byte_label(v) for v in (512, 20_000, 1_500_000)] == ["512", "20k", "1.5M"]
    for values in (sizes, [18_456, 1_052_176], [256, 4_096, 65_536, 1_048_576]):
        figure, axis = plt.subplots(figsize=(4.2, 3.6))
        axis.set_xscale("log")
        axis.plot(values, [0.5] * len(values), "o")
        byte_axis_labels(axis, values)
        figure.canvas.draw()
        labels = [t for t in axis.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2 and not any(t.get_text() for t in axis.get_xticklabels(minor=True))
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda box: box.x0)
        assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes)), [t.get_text() for t in labels]
        plt.close(figure)


def test_the_committed_full_report_states_its_claims_in_the_current_words():
    """benchmarks/reproduce-full keeps its claims as the current code words them from its own results.json (its
    run folders are not committed, so only the claims table can be rewritten there)."""
    import json
    from pathlib import Path

    from nalaformer.reproduce.claims import assess_claims
    from nalaformer.reproduce.report import _section_claims

    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce-full"
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert results["claims"] == assess_claims(results)
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert "\n".join(_section_claims(results)) in report
    assert "in the better direction" not in report
