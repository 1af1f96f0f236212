"""The ceiling suite: the no-attention model, the profile's attribution of time to parts, the rows and the command."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from nalaformer.bench import ceiling
from nalaformer.cli import main
from nalaformer.layers import build_attention
from nalaformer.layers.block import AttentionBlock
from nalaformer.ops.nala import common
from tests.assertions import assert_close


@pytest.mark.parametrize("name", ["nala", "softmax"])
@pytest.mark.parametrize("layout", ["1d", "2d"])
def test_attention_removed_leaves_the_block_around_an_identity(name, layout):
    torch.manual_seed(0)
    block = build_attention(name, 16, 2, causal=layout == "1d", layout=layout)
    x = torch.randn(2, 15, 16)
    size = (3, 5) if layout == "2d" else None
    with ceiling.attention_removed(block) as count:
        y = block(x, size=size)
    assert count == 1
    # the block with o = v: LePE added, norm, gate, output projection
    _, _, v, g = block._project(x)
    local, _ = block._lepe(v, size, None)
    expected = block.out_proj(block.out_norm(v + local) * F.silu(g))
    assert_close("block without attention", expected, y)
    # the block's own attention is back after the context
    assert "attend" not in vars(block)
    assert not torch.allclose(block(x, size=size), y)


def _tiny_lm(mixer):
    from nalaformer.bench.models import build_preset_lm

    return build_preset_lm(mixer, "tiny", 64, 32, "cpu")


def _lm_step(model):
    tokens = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    from nalaformer.bench.models import lm_loss, train_step

    return train_step(model, lambda m: lm_loss(m, tokens))


def test_the_model_without_attention_makes_no_attention_call():
    profiles = {}
    for name in ("softmax", "nala", "none"):
        model = ceiling.without_attention(_tiny_lm("softmax")) if name == "none" else _tiny_lm(name)
        profiles[name] = ceiling.profile_call(_lm_step(model), model)
    layers = len(_tiny_lm("softmax").model.layers)
    # forward and backward of every layer's attention op, and nothing of the kind without attention
    assert profiles["softmax"]["calls"]["aten::scaled_dot_product_attention"] == layers
    assert profiles["nala"]["calls"]["NaLaCausal"] == layers
    assert profiles["nala"]["calls"]["NaLaCausalBackward"] == layers
    assert profiles["none"]["calls"] == {}
    none = profiles["none"]["parts"]
    assert none["attention matmuls"] == 0 and none["feature maps"] == 0
    assert profiles["nala"]["parts"]["feature maps"] > 0 and profiles["softmax"]["parts"]["feature maps"] == 0


def test_profile_parts_add_up_and_backward_ops_follow_their_forward_part():
    model = _tiny_lm("nala")
    result = ceiling.profile_call(_lm_step(model), model)
    parts = result["parts"]
    assert set(parts) == set(ceiling.PARTS) and all(ms >= 0 for ms in parts.values())
    assert math.isclose(sum(parts.values()), result["total_ms"])
    assert all(0 <= result["aten"][part] <= parts[part] + 1e-9 for part in ceiling.PARTS)
    for part in ("attention matmuls", "feature maps", "linear layers", "norms", "convolutions", "optimizer"):
        assert parts[part] > 0, part
    ops = result["ops"]
    # backward-only ops land in the part of the forward op that made their autograd node
    assert ("convolutions", "aten::convolution_backward") in ops
    assert ("other", "aten::embedding_dense_backward") in ops
    assert not any(op == "aten::convolution_backward" and part != "convolutions" for part, op in ops)
    assert all(part in ceiling.PARTS for part, _ in ops)


def test_labels_are_removed_after_a_profile():
    model = _tiny_lm("nala")
    forward, backward, rotate = common.NaLaMap.forward, common.NaLaMap.backward, common.rotate
    ceiling.profile_call(_lm_step(model), model)
    assert (common.NaLaMap.forward, common.NaLaMap.backward, common.rotate) == (forward, backward, rotate)
    from nalaformer.ops.nala import noncausal

    assert noncausal.rotate is rotate
    for module in model.modules():
        assert "forward" not in vars(module)
        if isinstance(module, AttentionBlock):
            assert "attend" not in vars(module) and "_rope_tables" not in vars(module)


def test_run_ceiling_rows_at_tiny_sizes():
    settings = ceiling.CeilingSettings(
        cases=(("lm", 32), ("vision", 32), ("operator", 64)),
        preset="tiny",
        variant="nalaformer_nano",
        heads=2,
        head_dim=16,
        rounds=1,
        min_round_s=0.0,
    )
    rows = ceiling.run_ceiling(settings)
    steps = [row for row in rows if row["kind"] == "step"]
    assert [(row["model"], row["candidate"]) for row in steps] == [
        ("lm", "softmax"),
        ("lm", "nala"),
        ("lm", "none"),
        ("vision", "softmax"),
        ("vision", "nala"),
        ("vision", "none"),
        ("operator", "sdpa"),
        ("operator", "nala_rope"),
        ("operator", "nala"),
    ]
    assert all(row["median_ms"] > 0 and row["speedup_vs_softmax"] > 0 for row in steps)
    assert all(row["speedup_vs_softmax"] == 1.0 for row in steps if row["candidate"] in ("softmax", "sdpa"))
    for model, candidates in (("lm", 3), ("vision", 3), ("operator", 2)):
        parts = [row for row in rows if row["kind"] == "part" and row["model"] == model]
        assert len(parts) == candidates * len(ceiling.PARTS)
        for name in {row["candidate"] for row in parts}:
            assert math.isclose(sum(row["share"] for row in parts if row["candidate"] == name), 1.0)
    none_calls = [row for row in rows if row["kind"] == "calls" and row["candidate"] == "none"]
    assert none_calls == []
    text = ceiling.ceiling_markdown(rows)
    assert "| lm | 32 |" in text and "| operator | 64 |" in text and "Share of the profiled step, vision 32" in text


def test_bench_ceiling_command_writes_its_csv_and_summary(tmp_path, capsys):
    args = ["bench", "ceiling", "--tiny", "--cases", "lm:32", "operator:64", "--no-profile", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "## Ceiling" in capsys.readouterr().out
    (path,) = tmp_path.glob("ceiling-cpu-*.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["model"], row["candidate"]) for row in rows} == {
        ("lm", "softmax"),
        ("lm", "nala"),
        ("lm", "none"),
        ("operator", "sdpa"),
        ("operator", "nala_rope"),
        ("operator", "nala"),
    }
    assert all(row["kind"] == "step" and float(row["speedup_vs_softmax"]) > 0 for row in rows)
    (summary,) = tmp_path.glob("summary-ceiling-cpu-*.md")
    assert "| ceiling |" in summary.read_text() and "## Targets" not in summary.read_text()


def test_ceiling_cases_are_checked():
    assert ceiling.parse_cases(["lm:1024", "vision:512"]) == [("lm", 1024), ("vision", 512)]
    for bad in ("lm", "audio:10", "lm:x", "lm:0"):
        with pytest.raises(ValueError, match="MODEL:SIZE"):
            ceiling.parse_cases([bad])
