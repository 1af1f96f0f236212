"""The vision backbone through the real timm: registry, pretrained cfgs, features_only, FX helpers, data config.

Runs under ``make test-ecosystem`` (its own environment with timm and torchvision); skipped elsewhere, since timm
imports torchvision, which does not load beside the project's CPU torch build.
"""

from __future__ import annotations

import math

import pytest
import torch

try:
    import timm
    from timm.data import resolve_data_config
    from timm.layers import create_feature_extractor, get_graph_node_names
except (ImportError, RuntimeError) as error:  # RuntimeError: a torchvision that cannot load beside this torch
    pytest.skip(f"needs timm with a working torchvision (make test-ecosystem): {error}", allow_module_level=True)

import nalaformer.models  # noqa: F401  (registers the entrypoints, as timm's own model modules do on import)
from nalaformer.layers import TokenMixer
from nalaformer.models.vision import MODEL_CONFIGS

VARIANTS = sorted(MODEL_CONFIGS)
# small enough for CPU; the nano model's stem has stride 2, the others stride 4
SIZE = {"nalaformer_nano": 32}
SMALL = ("nalaformer_nano", "nalaformer_xt")


def _input(name: str, batch: int = 1) -> torch.Tensor:
    size = SIZE.get(name, 64)
    return torch.randn(batch, 3, size, size)


def test_every_variant_is_listed_with_a_pretrained_cfg() -> None:
    assert timm.list_models("nalaformer*") == VARIANTS
    for name in VARIANTS:
        cfg = timm.get_pretrained_cfg(name)
        assert cfg is not None, name
        assert cfg.architecture == name and not cfg.url and not cfg.has_weights
        assert cfg.num_classes == MODEL_CONFIGS[name].get("num_classes", 1000)
        assert timm.get_pretrained_cfg_value(name, "first_conv") == "stem.0"
        assert timm.get_pretrained_cfg_value(name, "classifier") == "head.fc"
    assert timm.list_pretrained("nalaformer*") == []  # no published weights


@pytest.mark.parametrize("name", VARIANTS)
def test_create_model_forward_and_cfg_names(name: str) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=7).eval()
    state = model.state_dict()
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    x = _input(name, batch=2)
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    stride = 32 if name != "nalaformer_nano" else 8
    assert features.shape == (2, model.num_features, math.ceil(x.shape[2] / stride), math.ceil(x.shape[3] / stride))
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.jit.script(model)


@pytest.mark.parametrize("name", SMALL)
def test_default_input_size_matches_pool_size_and_head_widths(name: str) -> None:
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert features.shape[2:] == cfg["pool_size"] and features.shape[1] == model.num_features
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre_logits.shape
        model.reset_classifier(0, "")
        assert model(x).shape[2:] == cfg["pool_size"]
    unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert unpooled(x).shape[2:] == cfg["pool_size"]


@pytest.mark.parametrize("name", VARIANTS)
def test_features_only_returns_the_requested_stages(name: str) -> None:
    model = timm.create_model(name, features_only=True, out_indices=(1, 2)).eval()
    full = MODEL_CONFIGS[name]
    expected = [full["embed_dims"][i] for i in (1, 2)]
    assert model.feature_info.channels() == expected
    x = _input(name)
    with torch.no_grad():
        outputs = model(x)
    assert [o.shape[1] for o in outputs] == expected
    for o, reduction in zip(outputs, model.feature_info.reduction()):
        assert o.shape[2:] == (math.ceil(x.shape[2] / reduction), math.ceil(x.shape[3] / reduction))
    # the stages after the last requested one and the head are pruned
    assert not any(n.startswith(("model.stages.3", "model.head.fc.")) for n, _ in model.named_parameters())
    assert "classifier" not in model.pretrained_cfg


def test_features_only_default_is_every_stage_and_getter_class() -> None:
    model = timm.create_model("nalaformer_nano", features_only=True, feature_cls="getter").eval()
    assert type(model).__name__ == "FeatureGetterNet"
    assert model.feature_info.channels() == list(MODEL_CONFIGS["nalaformer_nano"]["embed_dims"])
    assert model.feature_info.reduction() == [2, 4, 8]
    with pytest.raises(ValueError, match="feature_cls"):
        timm.create_model("nalaformer_nano", features_only=True, feature_cls="hook")


@pytest.mark.parametrize("name", SMALL)
def test_forward_intermediates_agrees_with_forward_features_and_checkpointing(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
        assert [t.shape[1] for t in intermediates] == info.channels()
        model.set_grad_checkpointing()
        again, _ = model.forward_intermediates(x)
    torch.testing.assert_close(again, final)


def _fx_model(model: torch.nn.Module) -> torch.nn.Module:
    train_nodes, eval_nodes = get_graph_node_names(model)
    nodes = train_nodes if model.training else eval_nodes
    return create_feature_extractor(model, return_nodes=[nodes[-1]])


@pytest.mark.parametrize("name", SMALL)
def test_fx_forward_matches_eager(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(name)
    with torch.inference_mode():
        expected = model(x)
        traced = _fx_model(model)
        (out,) = traced(x).values()
    assert torch.equal(out, expected)
    # the mixers stay whole (FX leaves registered with timm)
    assert any(isinstance(m, TokenMixer) for m in traced.modules())


@pytest.mark.parametrize("name", SMALL)
def test_fx_backward_reaches_every_parameter(name: str) -> None:
    model = timm.create_model(name, num_classes=42).train()
    traced = _fx_model(model)
    (out,) = traced(_input(name, batch=2)).values()
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing


def test_resolve_data_config_uses_the_cfg() -> None:
    model = timm.create_model("nalaformer_nano")
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32)
    assert config["mean"] == (0.485, 0.456, 0.406) and config["std"] == (0.229, 0.224, 0.225)
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == 1.0
    features = timm.create_model("nalaformer_t", features_only=True)
    assert resolve_data_config({}, model=features)["input_size"] == (3, 224, 224)
