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
