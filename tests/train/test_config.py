"""Configuration dataclasses: validation names the field, command-line overrides, JSON round trip."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from nalaformer.train import TrainConfig, add_config_arguments, apply_arguments, from_dict, to_dict
from nalaformer.train.recipes import image, lm


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        pytest.param({"lr": -1.0}, ValueError, r"TrainConfig\.lr must be > 0.0, got -1\.0", id="negative-lr"),
        pytest.param({"steps": 0}, ValueError, r"TrainConfig\.steps must be >= 1, got 0", id="zero-steps"),
        pytest.param({"precision": "fp16"}, ValueError, r"TrainConfig\.precision must be one of", id="precision"),
        pytest.param({"lr": float("nan")}, ValueError, r"TrainConfig\.lr must be a finite number", id="nan-lr"),
        pytest.param({"steps": "10"}, TypeError, r"TrainConfig\.steps must be int, got '10'", id="string-steps"),
        pytest.param({"progress": 1}, TypeError, r"TrainConfig\.progress must be bool", id="int-for-bool"),
        pytest.param({"batch_size": 10, "grad_accum": 4}, ValueError, r"batch_size=10 must be divisible", id="accum"),
        pytest.param({"warmup_steps": -1}, ValueError, r"TrainConfig\.warmup_steps must be >= 0", id="warmup"),
        pytest.param({"device": "tpu"}, ValueError, r"TrainConfig\.device must be", id="device"),
        pytest.param({"resume": "auto"}, ValueError, r"resume='auto' needs TrainConfig\.run_dir", id="resume"),
        pytest.param({"min_lr_ratio": 1.5}, ValueError, r"TrainConfig\.min_lr_ratio must be <= 1\.0", id="ratio"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_name(overrides, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**overrides)


@pytest.mark.parametrize(
    ("section", "overrides", "message"),
    [
        pytest.param(image.ImageDataConfig, {"name": "imagenet"}, r"ImageDataConfig\.name must be one of", id="data"),
        pytest.param(image.ImageModelConfig, {"options": "[1]"}, r"options must be a JSON object", id="options"),
        pytest.param(lm.LMDataConfig, {"name": "mqar", "block_size": 8}, r"block_size=8 must be >= 4", id="mqar"),
        pytest.param(lm.LMModelConfig, {"num_layers": 0}, r"LMModelConfig\.num_layers must be >= 1", id="layers"),
    ],
)
def test_recipe_sections_validate_their_fields(section, overrides, message):
    with pytest.raises(ValueError, match=message):
        section(**overrides)


def _parse(argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, image.default_config())
    return apply_arguments(image.default_config(), parser.parse_args(argv))


def test_command_line_overrides_only_the_given_fields():
    config = _parse(
        ["--steps", "70", "--lr", "3e-4", "--model.mixer", "nala", "--no-data.augment", "--resume", "--run-dir", "r"]
    )
    default = image.default_config()
    assert (config.train.steps, config.train.lr, config.train.resume) == (70, 3e-4, "auto")
    assert config.model.mixer == "nala" and config.data.augment is False
    assert config.train.batch_size == default.train.batch_size and config.data.name == default.data.name


def test_command_line_values_are_validated_before_training():
    with pytest.raises(ValueError, match=r"TrainConfig\.lr must be > 0\.0"):
        _parse(["--lr", "-0.1"])
    with pytest.raises(SystemExit):
        _parse(["--data.name", "imagenet"])


def test_dict_round_trip_and_unknown_keys():
    config = lm.default_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=50))
    data = json.loads(json.dumps(to_dict(config)))
    assert from_dict(lm.LMRecipeConfig, data) == config
    with pytest.raises(ValueError, match=r"unknown fields \['stepz'\]"):
        from_dict(TrainConfig, {"stepz": 3})
