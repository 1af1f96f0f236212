"""Weight-decay groups, the warm-up + cosine schedule and the EMA against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nalaformer.train import WarmupCosine, build_ema, parameter_groups


class WithNoDecayList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.pos = nn.Parameter(torch.zeros(3, 4))
        self.frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def test_parameter_groups_decay_only_matrices_not_listed():
    model = WithNoDecayList()
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["embed.weight", "proj.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["norm.bias", "norm.weight", "pos", "proj.bias"]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


@pytest.mark.parametrize(("warmup", "total", "floor"), [(0, 10, 0.0), (3, 17, 0.1), (5, 5, 0.5), (9, 4, 0.2)], ids=str)
def test_warmup_cosine_matches_the_formula(warmup, total, floor):
    schedule = WarmupCosine(warmup, total, floor)
    warmup = min(warmup, total)
    for step in range(total + 2):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            expected = floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2
        assert schedule(step) == pytest.approx(expected, abs=1e-12), step
    if warmup < total:
        assert schedule(total) == pytest.approx(floor)


def test_ema_follows_the_exponential_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = build_ema(model, 0.75)
    reference = {k: v.clone().float() for k, v in model.state_dict().items()}
    for update in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(5, 3))
        ema.update_parameters(model)
        for name, value in model.state_dict().items():
            # The first update copies the model; later ones move 25% of the way towards it.
            reference[name] = value.float().clone() if update == 0 else 0.75 * reference[name] + 0.25 * value.float()
    for name, value in ema.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, reference[name], rtol=1e-6, atol=1e-6, msg=name)
    assert build_ema(model, 0.0) is None
