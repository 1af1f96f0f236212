"""Suite-wide fixtures: one intra-op thread per test process (tiny tensors; `make test` runs two processes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, so unseeded draws are reproducible too."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_lm_run(tmp_path_factory):
    """A two-step character-level run of `nalaformer train lm` (one NaLa and one softmax layer) on a small text;
    the run folder is ``<returned folder>/run``."""
    pytest.importorskip("transformers")
    from nalaformer.cli import main

    folder = tmp_path_factory.mktemp("lm_run")
    corpus = folder / "corpus.txt"
    corpus.write_text("Shall I compare thee to a summer's day?\n" * 12, encoding="utf-8")
    argv = ["train", "lm", "--data.name", str(corpus), "--data.block-size", "16", "--batch-size", "4", "--steps", "2"]
    argv += ["--model.hidden-size", "16", "--model.num-layers", "2", "--model.num-heads", "2", "--no-progress"]
    argv += ["--model.options", '{"hybrid_every": 2}', "--warmup-steps", "1", "--run-dir", str(folder / "run")]
    assert main(argv) == 0
    return folder
