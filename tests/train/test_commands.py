"""`nalaformer train image|lm` and `nalaformer eval` end to end on tiny runs, and the command dispatcher."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from nalaformer.cli import COMMANDS, main
from nalaformer.train import list_checkpoints, read_metrics

QUICK = ["--warmup-steps", "1", "--no-progress", "--log-every", "2"]
IMAGE_STANDIN = ["--data.name", "digits", "--model.name", "tests.train.standins:TinyConvNet", "--batch-size", "16"]
LM_STANDIN = ["--model.name", "tests.train.standins:TinyCausalLM", "--model.hidden-size", "8", "--batch-size", "8"]
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def _last_val(run_dir) -> dict:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "val"][-1]


def _eval(run_dir, capsys, *extra) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run_dir), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_image_then_eval_reproduces_the_final_validation(tmp_path, capsys):
    run_dir = tmp_path / "image"
    argv = ["train", "image", *IMAGE_STANDIN, *QUICK, "--steps", "4", "--checkpoint-every", "2"]
    assert main([*argv, "--run-dir", str(run_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["recipe"] == "image" and saved["data"]["name"] == "digits" and saved["train"]["steps"] == 4
    assert saved["dataset"]["val_size"] == 180 and len(saved["dataset"]["mean"]) == 1
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000002", "step_00000004"]

    evaluated = _eval(run_dir, capsys)
    assert evaluated["step"] == 4 and evaluated["samples"] == 180
    assert evaluated["accuracy"] == pytest.approx(_last_val(run_dir)["accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert (run_dir / "eval.jsonl").read_text().count("\n") == 1


def test_resume_from_the_command_line_continues_the_run(tmp_path, capsys):
    run_dir = tmp_path / "image"
    argv = ["train", "image", *IMAGE_STANDIN, *QUICK, "--run-dir", str(run_dir), "--checkpoint-every", "2"]
    assert main([*argv, "--steps", "4"]) == 0
    assert main([*argv, "--steps", "6", "--resume"]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["run"]["resumed_from"].endswith("step_00000004") and saved["train"]["steps"] == 6
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"] == [2, 4, 6]


def test_train_image_with_the_nalaformer_nano_backbone(tmp_path, capsys):
    argv = ["train", "image", "--data.name", "digits", "--model.mixer", "nala", "--batch-size", "8", *QUICK]
    assert main([*argv, "--steps", "2", "--eval-batches", "2", "--run-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert math.isfinite(summary["train_loss"]) and 0.0 <= summary["val_accuracy"] <= 1.0
    assert json.loads((tmp_path / "config.json").read_text())["dataset"]["model_parameters"] > 10_000


def test_train_lm_on_a_text_file_saves_the_tokenizer_and_evaluates(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 40, encoding="utf-8")
    run_dir = tmp_path / "lm"
    argv = ["train", "lm", *LM_STANDIN, *QUICK, "--data.name", str(corpus), "--data.block-size", "16"]
    assert main([*argv, "--data.val-fraction", "0.2", "--steps", "4", "--run-dir", str(run_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    vocabulary = json.loads((run_dir / "tokenizer" / "nalaformer_tokenizer.json").read_text())
    assert vocabulary["kind"] == "char" and "".join(vocabulary["vocab"]) == "".join(sorted(set(corpus.read_text())))
    evaluated = _eval(run_dir, capsys)
    assert evaluated["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert evaluated["perplexity"] == pytest.approx(math.exp(evaluated["loss"]), rel=1e-6)


def test_train_lm_on_mqar_reports_query_accuracy(tmp_path, capsys):
    argv = ["train", "lm", *LM_STANDIN, *QUICK, "--data.name", "mqar", "--data.block-size", "32"]
    argv += ["--data.mqar-pairs", "4", "--data.mqar-train-examples", "64", "--data.mqar-val-examples", "16"]
    assert main([*argv, "--steps", "3", "--run-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["val_loss"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["dataset"]["task"] == "mqar"


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="the language model needs the lm extra (transformers)")
def test_train_lm_with_the_nala_causal_lm(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Shall I compare thee to a summer's day?\n" * 20, encoding="utf-8")
    argv = ["train", "lm", *QUICK, "--data.name", str(corpus), "--data.block-size", "16", "--batch-size", "4"]
    argv += ["--model.hidden-size", "16", "--model.num-layers", "1", "--model.num-heads", "2"]
    assert main([*argv, "--steps", "2", "--run-dir", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert math.isfinite(summary["val_loss"])
    assert _eval(tmp_path / "run", capsys)["loss"] == pytest.approx(summary["val_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--lr", "-1"], "TrainConfig.lr must be > 0.0", id="bad-value"),
        pytest.param(
            ["--data.name", "fashion-mnist", "--data.root", "/nonexistent/fmnist"],
            "apt-get install -y dataset-fashion-mnist",
            id="missing-dataset",
        ),
        pytest.param(["--data.name", "cifar10", "--data.root", "/nonexistent"], "CIFAR-10", id="missing-cifar"),
        pytest.param(["--model.name", "no_such_model"], "no callable 'no_such_model'", id="unknown-model"),
    ],
)
def test_user_errors_print_one_line_and_exit_1(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "never"
    argv = ["train", "image", "--steps", "1", "--warmup-steps", "0", *argv]
    assert main([*argv, "--run-dir", str(run_dir), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("nalaformer train: error:") and message in error
    assert not (run_dir / "checkpoints").exists()


def test_help_lists_commands_without_importing_torch():
    script = (
        "import sys; from nalaformer import cli; cli.build_parser(None).format_help(); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    assert {"train", "eval"} <= set(COMMANDS)
