"""The whole pipeline on tiny models: JSON, PNG files, the terminal table, the vision and language models, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nalaformer.diagnostics import capture_attention, diagnose, format_report_table, summarise
from nalaformer.diagnostics.analysis import analyse_attention
from nalaformer.layers import build_attention
from nalaformer.models import nalaformer_nano

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_diagnose_a_hybrid_vision_model_writes_json_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    model = nalaformer_nano(num_classes=10)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = diagnose(model, images, tmp_path, max_queries=16, max_samples=1, temperatures=(1.0, 4.0), max_panels=2)
    layers = report["summary"]["layers"]
    # the nano backbone: NaLa in the early stages, softmax in the last (the released hybrid layout)
    assert {layer["kind"] for layer in layers} == {"linear", "softmax"}
    # one sample, at most 16 query rows per block (the last stage of a 32x32 image has only 4 tokens)
    assert all(0 < head["queries"] <= 16 for layer in layers for head in layer["heads"])
    names = {Path(f).name for f in report["files"]}
    assert names == {
        "fig1_softmax_entropy_vs_norms.png",
        "fig4_linear_entropy_vs_query_norm.png",
        "same_sign_fraction.png",
        "fig3_top_pair_products.png",
        "nala_exponent_histogram.png",
        "controlled_entropy_vs_query_norm.png",
        "per_query.npz",
        "diagnostics.json",
    }
    for name in names - {"diagnostics.json", "per_query.npz"}:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    with np.load(tmp_path / "per_query.npz") as points:
        entropy = points["stages.0.blocks.0.attn/entropy"]
    assert entropy.shape == (len(layers[0]["heads"]), 16) and np.isfinite(entropy).all()
    saved = json.loads((tmp_path / "diagnostics.json").read_text())
    assert [layer["name"] for layer in saved["summary"]["layers"]] == [layer["name"] for layer in layers]
    assert saved["temperature_sweep"]["temperatures"] == [1.0, 4.0]
    table = format_report_table(report)
    assert all(layer["name"] in table for layer in layers) and "Controlled study" in table


def test_language_model_with_padding_is_captured_per_layer() -> None:
    lm = pytest.importorskip("nalaformer.models.lm")
    torch.manual_seed(0)
    config = lm.NaLaConfig.from_preset("tiny", layer_mixers=["nala", "softmax"], use_cache=False)
    model = lm.NaLaForCausalLM(config)
    input_ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    attention_mask[0, :3] = 0
    records = capture_attention(model, {"input_ids": input_ids, "attention_mask": attention_mask})
    assert len(records) == 2 and all(r.module.causal for r in records)
    layers = [analyse_attention(r, max_queries=64) for r in records]
    assert [layer.kind for layer in layers] == ["linear", "softmax"]
    # causal rows over real tokens only: row t of the padded sample sees t - 2 keys; no query of a padding token
    expected_keys = torch.cat([torch.arange(1, 10), torch.arange(1, 13)]).double().numpy()
    for layer in layers:
        assert (layer.values["num_keys"][0] == expected_keys).all()
    summary = summarise(layers)
    assert summary["layers"][0]["heads"][0]["queries"] == 21


def _recipe_run(tmp_path: Path) -> Path:
    """A run folder in the engine's format (config.json + checkpoints/step_*) for a NaLaFormer nano on digits."""
    image = pytest.importorskip("nalaformer.train.recipes.image")
    from nalaformer.train.checkpoint import save_checkpoint
    from nalaformer.train.config import save_config, to_dict

    config = image.default_config()
    config.data.name = "digits"
    config.data.augment = False
    datasets = image.build_datasets(config)
    torch.manual_seed(0)
    model = image.build_model(config.model, in_chans=datasets.channels, num_classes=datasets.num_classes)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config({"recipe": "image", **to_dict(config)}, run_dir / "config.json")
    save_checkpoint(run_dir / "checkpoints", 7, model=model, state={})
    return run_dir


def _parse(argv: list[str]) -> argparse.Namespace:
    from nalaformer.diagnostics import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_diagnoses_a_recipe_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nalaformer.diagnostics import cli

    run_dir = _recipe_run(tmp_path)
    out = tmp_path / "diagnosis"
    args = _parse(
        [
            *("--checkpoint", str(run_dir), "--out", str(out), "--batch-size", "3", "--max-queries", "8"),
            *("--temperatures", "1,4", "--no-plots", "--no-controlled"),
        ]
    )
    assert cli.run(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "diagnostics.json").read_text())
    assert saved["source"]["step"] == 7 and saved["source"]["recipe"] == "image"
    assert saved["source"]["samples"] == 3 and saved["controlled"] is None
    assert [layer["name"] for layer in saved["summary"]["layers"]] == [
        "stages.0.blocks.0.attn",
        "stages.1.blocks.0.attn",
        "stages.1.blocks.1.attn",
        "stages.2.blocks.0.attn",
    ]
    assert "stages.0.blocks.0.attn" in printed and "post hoc" in printed


def test_cli_controlled_only_and_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nalaformer.cli import main
    from nalaformer.diagnostics import cli

    # through the `nalaformer` dispatcher
    assert main(["diagnose", "--controlled-only", "--no-plots", "--out", str(tmp_path)]) == 0
    study = json.loads((tmp_path / "controlled.json").read_text())
    assert study["methods"]["relu"]["max_abs_change"] < 1e-6
    assert "NaLa (sign split)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--checkpoint is required"):
        cli.run(_parse(["--out", str(tmp_path)]))
    assert main(["diagnose", "--out", str(tmp_path)]) == 1
    assert "--checkpoint is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--max-queries"):
        cli.run(_parse(["--out", str(tmp_path), "--max-queries", "0"]))
    with pytest.raises(SystemExit):
        _parse(["--out", str(tmp_path), "--temperatures", "1,-2"])
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        cli.run(_parse(["--out", str(tmp_path), "--checkpoint", str(tmp_path / "missing")]))


def test_blocks_without_attention_weights_are_reported_as_skipped() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        build_attention("deltanet", 32, 2, causal=True), build_attention("nala", 32, 2, causal=True)
    )
    report = diagnose(model, torch.randn(1, 9, 32), controlled=False, plots=False, temperatures=())
    assert [item["name"] for item in report["skipped"]] == ["0"]
    assert [layer["name"] for layer in report["summary"]["layers"]] == ["1"]
    assert report["temperature_sweep"] is None and "skipped 0" in format_report_table(report)
