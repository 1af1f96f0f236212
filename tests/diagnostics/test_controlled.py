"""The controlled study reproduces Prop. 1 and 2 and NaLa's saturating dependence (docs/method.md §2, §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nalaformer.diagnostics import controlled_entropy_study, format_controlled_table, temperature_method

SCALES = tuple(2.0**e for e in range(-2, 5))
ODD_SCALES = (0.3, 0.7, 1.1, 2.9, 5.3, 13.7)


@pytest.fixture(scope="module")
def study() -> dict:
    return controlled_entropy_study(dim=60, num_keys=63, trials=3, seed=5, temperatures=(2.0, 4.0))


def _rounding_tolerance(study: dict) -> float:
    # features come from the library's ops (fp32 or fp64): allow a few hundred ulps of that dtype in nats
    return 500 * torch.finfo(getattr(torch, study["feature_dtype"])).eps


@pytest.mark.parametrize("method", ["relu", "relu3"])
@pytest.mark.parametrize("scales", [SCALES, ODD_SCALES], ids=["powers_of_two", "odd_scales"])
def test_homogeneous_maps_are_exactly_flat(method: str, scales: tuple[float, ...]) -> None:
    result = controlled_entropy_study(dim=60, num_keys=63, scales=scales, methods=(method,), temperatures=(), trials=3)
    curve = result["methods"][method]
    assert curve["max_abs_change"] <= _rounding_tolerance(result)
    # and not trivially flat: the row is far from uniform
    assert np.mean(curve["entropy_mean"]) < result["max_entropy"] - 0.02


def test_elu_is_only_nearly_invariant(study: dict) -> None:
    curve = study["methods"]["elu"]
    assert _rounding_tolerance(study) < curve["max_abs_change"] < 1e-2


def test_softmax_entropy_falls_monotonically(study: dict) -> None:
    curve = study["methods"]["softmax"]
    assert curve["monotone_non_increasing"]
    assert curve["entropy_mean"][0] == pytest.approx(study["max_entropy"], abs=0.01)
    assert curve["drop"] > 1.0
    assert curve["saturation_norm"] is None


@pytest.mark.parametrize("method", ["nala", "nala_cosine"])
def test_nala_falls_then_saturates(study: dict, method: str) -> None:
    curve = study["methods"][method]
    scales = np.asarray(study["scales"])
    mean = np.asarray(curve["entropy_mean"])
    assert curve["monotone_non_increasing"]
    assert curve["drop"] > 0.05
    # tanh(||q||) saturates near ||q|| = 2: the curve settles there and barely moves from 4 to 16
    assert 1.0 <= curve["saturation_norm"] <= 4.0
    assert abs(mean[scales >= 4.0][0] - mean[-1]) < 0.01 * curve["drop"]
    np.testing.assert_allclose(curve["exponent"][-1], 4.5, atol=1e-6)


def test_temperature_moves_the_saturation_to_larger_norms(study: dict) -> None:
    base = study["methods"]["nala"]
    scales = study["scales"]
    saturation = [base["saturation_norm"]]
    for temperature in (2.0, 4.0):
        curve = study["methods"][temperature_method(temperature)]
        saturation.append(curve["saturation_norm"])
        # p depends on ||q|| / T only and the direction is fixed: H_T(c) = H_1(c / T) on the grid
        for index, scale in enumerate(scales):
            if scale / temperature in scales:
                expected = base["entropy_mean"][scales.index(scale / temperature)]
                assert curve["entropy_mean"][index] == pytest.approx(expected, abs=1e-9)
    assert saturation[0] < saturation[1] < saturation[2]


def test_study_is_seeded_and_json_ready(study: dict) -> None:
    import json

    again = controlled_entropy_study(dim=60, num_keys=63, trials=3, seed=5, temperatures=(2.0, 4.0))
    assert again["methods"]["softmax"]["entropy"] == study["methods"]["softmax"]["entropy"]
    json.dumps(study, allow_nan=False)
    table = format_controlled_table(study)
    assert "NaLa (sign split), T = 4" in table and f"{study['max_entropy']:.4f}" in table
    assert study["max_entropy"] == pytest.approx(math.log(63))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"trials": 1.5}, "trials"),
        ({"scales": (2.0, 1.0)}, "scales"),
        ({"scales": (1.0,)}, "scales"),
        ({"methods": ("gelu",)}, "methods"),
        ({"temperatures": (0.0,)}, "temperatures"),
        ({"key_std": -1.0}, "key_std"),
    ],
    ids=["dim", "trials", "decreasing-scales", "one-scale", "method", "temperature", "key-std"],
)
def test_invalid_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        controlled_entropy_study(**kwargs)
