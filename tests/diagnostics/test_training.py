"""Norm-awareness statistics during training: saturation, exponent spread, entropy-norm correlation, the engine hook."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nalaformer.diagnostics.training import norm_awareness, norm_awareness_hook, saturation_threshold
from nalaformer.layers import build_attention
from nalaformer.train import TrainConfig, train


class Classifier(nn.Module):
    """Tokens -> one mixer -> mean pool -> linear; ``scale`` multiplies the inputs (and so the query norms)."""

    def __init__(self, mixer: str, scale: float = 1.0, **options) -> None:
        super().__init__()
        self.scale = scale
        self.mixer = build_attention(mixer, 16, 2, causal=True, **options)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mixer(self.scale * x).mean(dim=1))


def test_threshold_is_one_percent_of_the_ceiling():
    lam, tau = 3.0, 0.5
    assert lam * (tau + saturation_threshold(tau)) == pytest.approx(0.99 * lam * (tau + 1.0))


def test_large_queries_saturate_the_released_map_but_not_the_learned_temperature():
    x = torch.randn(4, 24, 16)
    released = norm_awareness(Classifier("nala", scale=20.0), x)
    assert released["saturated_fraction"] > 0.9
    assert released["exponent_std"] < 0.05
    learned = norm_awareness(Classifier("nala_learned_t", scale=20.0), x)
    assert learned["saturated_fraction"] < 0.2
    assert learned["exponent_std"] > 0.1
    heads = [key for key in learned if key.startswith("pearson_entropy_q_norm/")]
    assert len(heads) == 2
    assert -1.0 <= learned["pearson_entropy_q_norm"] <= 1.0


def test_constant_power_and_softmax_report_the_correlation_only():
    x = torch.randn(2, 16, 16)
    for mixer in ("sign_split_power", "softmax"):
        stats = norm_awareness(Classifier(mixer), x)
        assert "saturated_fraction" not in stats
        assert "pearson_entropy_q_norm" in stats


def test_engine_logs_the_hook_at_each_evaluation(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 12, 16)
    y = (x[:, :, 0].sum(dim=1) > 0).long()
    data = TensorDataset(x, y)

    def loss_fn(model, batch):
        inputs, labels = batch
        loss = F.cross_entropy(model(inputs), labels)
        return loss, {}

    config = TrainConfig(
        steps=4, batch_size=8, warmup_steps=1, eval_every=2, progress=False, run_dir=str(tmp_path / "run")
    )
    result = train(Classifier("nala_learned_t"), data, loss_fn, config, val_data=data, eval_hook=norm_awareness_hook(4))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    norm = [r for r in records if r["split"] == "norm"]
    assert [r["step"] for r in norm] == [2, 4]
    assert all(0.0 <= r["saturated_fraction"] <= 1.0 for r in norm)
    assert "norm_saturated_fraction" in result.metrics
    assert result.model.training  # the hook's eval mode does not leak into training
