"""The vision backbone under graph capture and feature extraction, without timm: torch.fx tracing (forward and
backward), features_only, TorchScript's refusal, and the shared RoPE tables under inference mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nalaformer.layers import TokenMixer, build_attention
from nalaformer.layers.tracing import FX_LEAF_MODULES, LeafTracer
from nalaformer.models import nalaformer_nano, nalaformer_xt
from nalaformer.models.vision import MODEL_CONFIGS
from nalaformer.models.vision.features import StageFeatures

# (entrypoint, input side): the nano model's stem has stride 2, xt's stride 4
SMALL_MODELS = [(nalaformer_nano, 16), (nalaformer_xt, 32)]


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    return torch.fx.GraphModule(model, LeafTracer().trace(model))


@pytest.mark.parametrize(("entrypoint", "side"), SMALL_MODELS)
def test_fx_trace_forward_matches_eager(entrypoint, side) -> None:
    model = entrypoint(num_classes=5).eval()
    traced = _trace(model)
    calls = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    mixers = [name for name, m in model.named_modules() if isinstance(m, FX_LEAF_MODULES)]
    assert mixers and all(name in calls for name in mixers)  # every mixer is one leaf call
    x = torch.randn(2, 3, side, side + 3)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(("entrypoint", "side"), SMALL_MODELS)
def test_fx_trace_backward_reaches_every_parameter(entrypoint, side) -> None:
    model = entrypoint(num_classes=5, drop_path_rate=0.1).train()
    traced = _trace(model)
    out = traced(torch.randn(2, 3, side, side))
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize(("entrypoint", "side"), SMALL_MODELS)
def test_features_only_returns_every_stage(entrypoint, side) -> None:
    reference = entrypoint().eval()
    features = entrypoint(features_only=True).eval()
    assert isinstance(features, StageFeatures)
    features.model.load_state_dict(reference.state_dict(), strict=False)  # pruned: the head is gone
    dims = list(MODEL_CONFIGS[entrypoint.__name__]["embed_dims"])
    assert features.feature_info.channels() == dims
    assert features.feature_info.module_name() == [f"stages.{i}" for i in range(len(dims))]
    assert "classifier" not in features.pretrained_cfg and features.pretrained_cfg["mean"]
    x = torch.randn(1, 3, side + 1, side)
    with torch.no_grad():
        outputs = features(x)
        _, expected = reference.forward_intermediates(x)
    assert len(outputs) == len(dims)
    for got, want, reduction in zip(outputs, expected, features.feature_info.reduction()):
        torch.testing.assert_close(got, want)
        assert got.shape[2] == -(-x.shape[2] // reduction) and got.shape[3] == -(-x.shape[3] // reduction)


def test_features_only_out_indices_prune_the_later_stages() -> None:
    features = nalaformer_xt(features_only=True, out_indices=(1, 2), output_fmt="NHWC").eval()
    assert features.feature_info.channels() == [64, 128] and features.feature_info.reduction() == [8, 16]
    assert len(features.model.stages) == 3 and features.model.num_classes == 0
    with torch.no_grad():
        outputs = features(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(1, 4, 4, 64), (1, 2, 2, 128)]


def test_features_only_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="feature_cls='hook'"):
        nalaformer_nano(features_only=True, feature_cls="hook")
    with pytest.raises(ValueError, match=r"\['out_indices'\] only apply with features_only=True"):
        nalaformer_nano(out_indices=(1,))
    with pytest.raises(ValueError, match="indices must lie in"):
        nalaformer_nano(features_only=True, out_indices=(3,))


def test_torchscript_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="does not support TorchScript"):
        torch.jit.script(nalaformer_nano())


def test_rope_tables_first_built_under_inference_mode_still_train() -> None:
    # The 2-D RoPE tables are cached per grid for every model; a table first built under inference_mode used to be
    # an inference tensor, and autograd then refused every later training step at that grid size.
    mixer = build_attention("nala", dim=24, num_heads=2, layout="2d")
    assert isinstance(mixer, TokenMixer)
    x = torch.randn(1, 24, 5, 11)
    with torch.inference_mode():
        expected = mixer(x)
    fresh = build_attention("nala", dim=24, num_heads=2, layout="2d")
    fresh.load_state_dict(mixer.state_dict())
    out = fresh(x.clone().requires_grad_())
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected)


def test_backbone_trains_after_inference_at_the_same_size() -> None:
    with torch.inference_mode():
        nalaformer_nano().eval()(torch.randn(1, 3, 18, 22))
    model = nalaformer_nano().train()
    model(torch.randn(2, 3, 18, 22)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
