"""The one rule for "beyond seed noise" (twice the standard error of the difference of the means), and the three
reports that call differences with it: the study's claims, the boundary summary and the conversion verdicts."""

from __future__ import annotations

import math

import pytest

from nalaformer.reproduce.boundary_report import summary_lines
from nalaformer.reproduce.boundary_stats import call_best
from nalaformer.reproduce.conversion_report import verdict
from nalaformer.reproduce.results import compare, fmt
from nalaformer.reproduce.seeds import mean_std, noise_threshold, seed_call, standard_error

# gap 0.06 over three seeds each, std 0.05: above the larger std (0.05), inside twice the standard error (0.0816)
LARGER_STD_ONLY = ({"mean": 0.90, "std": 0.05, "n": 3}, {"mean": 0.84, "std": 0.05, "n": 3})
# gap 0.095 over ten seeds each, std 0.1: inside the larger std (0.1), beyond twice the standard error (0.0894)
STANDARD_ERROR_ONLY = ({"mean": 0.895, "std": 0.1, "n": 10}, {"mean": 0.80, "std": 0.1, "n": 10})


def test_mean_std_is_the_sample_std_over_the_finite_values():
    stats = mean_std([1.0, 2.0, 3.0, None, float("nan")])
    assert stats == {"mean": pytest.approx(2.0), "std": pytest.approx(1.0), "n": 3}
    assert mean_std([4.0]) == {"mean": 4.0, "std": None, "n": 1}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_the_noise_is_twice_the_standard_error_of_the_difference():
    assert standard_error(0.05, 3, 0.02, 5) == pytest.approx(math.sqrt(0.05**2 / 3 + 0.02**2 / 5))
    assert noise_threshold(0.05, 3, 0.02, 5) == pytest.approx(2 * math.sqrt(0.05**2 / 3 + 0.02**2 / 5))
    # unequal seed counts weigh each side's spread by its own count
    assert noise_threshold(0.1, 2, 0.1, 8) == pytest.approx(2 * math.sqrt(0.01 / 2 + 0.01 / 8))
    assert noise_threshold(0.05, 1, 0.02, 5) is None and noise_threshold(None, 3, 0.02, 1) is None


def test_a_gap_above_the_larger_std_but_inside_two_standard_errors_is_within_noise():
    a, b = LARGER_STD_ONLY
    assert a["mean"] - b["mean"] > max(a["std"], b["std"])  # the old larger-std rule called this
    judged = seed_call(a, b)
    assert judged["noise"] == pytest.approx(2 * math.sqrt(2 * 0.05**2 / 3))
    assert judged["difference"] == pytest.approx(0.06) and judged["call"] == "within seed noise"


def test_a_gap_inside_the_larger_std_but_beyond_two_standard_errors_is_called():
    a, b = STANDARD_ERROR_ONLY
    assert a["mean"] - b["mean"] < max(a["std"], b["std"])  # the old larger-std rule did not call this
    assert seed_call(a, b)["call"] == "better" and seed_call(b, a)["call"] == "worse"
    assert seed_call(a, b)["noise"] == pytest.approx(2 * math.sqrt(2 * 0.01 / 10))


def test_lower_is_better_turns_the_call_not_the_threshold():
    a, b = STANDARD_ERROR_ONLY
    higher, lower = seed_call(a, b, higher_is_better=True), seed_call(a, b, higher_is_better=False)
    assert higher["call"] == "better" and lower["call"] == "worse"
    assert lower["gain"] == pytest.approx(-higher["gain"]) and lower["difference"] == higher["difference"]
    assert lower["noise"] == higher["noise"]
    assert seed_call(b, a, higher_is_better=False)["call"] == "better"


def test_one_seed_on_either_side_makes_no_call_however_large_the_gap():
    one = {"mean": 0.1, "std": None, "n": 1}
    seeded = {"mean": 0.9, "std": 0.01, "n": 3}
    for a, b in ((seeded, one), (one, seeded), (one, {**one, "mean": 0.99})):
        judged = seed_call(a, b)
        assert judged["call"] == "not called" and judged["noise"] is None and judged["standard_error"] is None


def test_equal_means_with_no_spread_are_within_noise():
    a = {"mean": 1.0, "std": 0.0, "n": 3}
    assert seed_call(a, dict(a))["call"] == "within seed noise"
    assert seed_call(a, {**a, "mean": 0.99})["call"] == "better"  # no spread at all: any gap is beyond it


def test_a_side_without_a_mean_is_an_error():
    with pytest.raises(ValueError, match="mean"):
        seed_call({"mean": None, "std": None, "n": 0}, {"mean": 0.5, "std": 0.1, "n": 3})


def _task(a: dict, b: dict, higher_is_better: bool = True) -> dict:
    return {"higher_is_better": higher_is_better, "mixers": {"a": a, "b": b}}


def test_the_three_reports_make_the_same_call():
    for (a, b), expected in ((LARGER_STD_ONLY, "within"), (STANDARD_ERROR_ONLY, "better")):
        for higher in (True, False):
            word = expected if expected == "within" or higher else "worse"
            study = compare(_task(a, b, higher), "a", "b")
            assert study["verdict"] == ("within noise" if word == "within" else word)
            assert study["noise"] == pytest.approx(seed_call(a, b)["noise"])
            conversion = verdict([a["mean"], a["std"]], a["n"], [b["mean"], b["std"]], b["n"], higher)
            assert conversion["verdict"] == ("within seed noise" if word == "within" else word)
            assert conversion["noise"] == pytest.approx(2 * conversion["standard_error"])
        boundary = call_best("t", {"a": a, "b": b})
        assert boundary["verdict"] == ("within seed noise" if expected == "within" else "ahead beyond seed noise")
        assert boundary["noise"] == pytest.approx(seed_call(a, b)["noise"])


def test_the_one_seed_words_of_each_report():
    a, b = {"mean": 0.9, "std": None, "n": 1}, {"mean": 0.5, "std": 0.1, "n": 3}
    study = compare(_task(a, b), "a", "b")
    assert study["verdict"] == "better (one seed, no noise estimate)" and study["noise"] is None
    assert call_best("t", {"a": a, "b": b})["verdict"] == "not called (one seed)"
    assert verdict([0.9, 0.0], 1, [0.5, 0.1], 3, True)["verdict"] == "one seed: no test"


def test_the_boundary_summary_states_the_rule_and_prints_its_threshold():
    a, b = LARGER_STD_ONLY
    row = call_best("t", {"a": a, "b": b})
    text = "\n".join(summary_lines(None, {"best": [row]}))
    assert "twice the standard error" in text and "larger std" not in text
    assert "| noise (2 SE) |" in text
    assert f"| t | a | b | {fmt(row['margin'])} | {fmt(row['noise'])} | 3 | within seed noise |" in text
