"""NaLaFormer vision backbone: configs, forward/backward, timm API, official checkpoints, complexity counts."""

from __future__ import annotations

import importlib.machinery
import itertools
import math
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.layers import LinearAttention, SoftmaxAttention, attention_spec, list_attentions
from nalaformer.models import (
    NaLaFormer,
    checkpoint_filter_fn,
    nalaformer_b,
    nalaformer_l,
    nalaformer_nano,
    nalaformer_s,
    nalaformer_t,
    nalaformer_xt,
)
from nalaformer.models.vision import MODEL_CONFIGS, resolve_mixers
from nalaformer.models.vision import nalaformer as vision_module
from nalaformer.models.vision.complexity import count_macs, count_parameters

VARIANTS = {
    "xt": nalaformer_xt,
    "t": nalaformer_t,
    "s": nalaformer_s,
    "b": nalaformer_b,
    "l": nalaformer_l,
}
LAYOUTS = ["released", "nala", "softmax"]
# Mixers with a non-causal image form (the delta rules are causal 1-D only).
IMAGE_MIXERS = [name for name in list_attentions() if attention_spec(name).image and attention_spec(name).noncausal]
SEQUENCE_ONLY_MIXERS = [name for name in list_attentions() if name not in IMAGE_MIXERS]
# Published parameters (M) and GMACs at 224² (paper Table 1 / official README).
PUBLISHED = {"xt": (8, 1.0), "t": (15, 2.7), "s": (26, 5.1), "b": (52, 11.8), "l": (95, 17.7)}

# A two-stage model small enough to run every check in milliseconds.
TINY = dict(
    embed_dims=(16, 32),
    depths=(1, 2),
    num_heads=(1, 2),
    mlp_ratios=2.0,
    head_hidden_size=24,
    num_classes=7,
    drop_path_rate=0.0,
)


def tiny(**overrides) -> NaLaFormer:
    torch.manual_seed(0)
    return NaLaFormer(**{**TINY, **overrides})


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def mixer_kind(block: nn.Module) -> str:
    attn = block.attn
    if isinstance(attn, SoftmaxAttention):
        return "softmax"
    assert isinstance(attn, LinearAttention)
    return type(attn.feature_map).__name__


# Configurations -------------------------------------------------------------------------------------------------


def analytic_parameters(
    embed_dims, depths, mlp_ratios, head_hidden_size=1024, num_classes=1000, in_chans=3, layer_scale=True
) -> int:
    """Parameter count of the released architecture, written out from its description (docs/method.md §5.2)."""

    def conv(cin, cout, k, groups=1):
        return cout * (cin // groups) * k * k + cout

    def linear(cin, cout):
        return cin * cout + cout

    half = embed_dims[0] // 2
    total = conv(in_chans, half, 3) + 2 * conv(half, half, 3) + conv(half, embed_dims[0], 3)
    total += 2 * (3 * half + embed_dims[0])  # BatchNorm weight and bias
    for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
        if i > 0:
            total += conv(embed_dims[i - 1], dim, 3) + 2 * dim
        hidden = int(mlp_ratios * dim)
        block = 2 * conv(dim, dim, 3, groups=dim) + 2 * 2 * dim  # two CPEs, two LayerNorms
        block += linear(dim, 4 * dim) + conv(dim, dim, 5, groups=dim) + 2 * dim + linear(dim, dim)  # mixer
        block += linear(dim, hidden) + conv(hidden, hidden, 3, groups=hidden) + linear(hidden, dim)  # FFN
        block += 2 * dim if layer_scale else 0
        total += depth * block
    total += linear(embed_dims[-1], head_hidden_size) + 2 * head_hidden_size + linear(head_hidden_size, num_classes)
    return total


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_and_layout_builds_with_the_released_structure(variant: str, layout: str) -> None:
    config = MODEL_CONFIGS[f"nalaformer_{variant}"]
    with torch.device("meta"):
        model = VARIANTS[variant](mixers=layout)
    assert count_parameters(model) == analytic_parameters(config["embed_dims"], config["depths"], config["mlp_ratios"])
    blocks = [block for stage in model.stages for block in stage.blocks]
    assert len(blocks) == sum(config["depths"])
    expected = {"released": ["NaLaFeatureMap"] * 2 + ["softmax"] * 2, "nala": ["NaLaFeatureMap"] * 4}
    expected["softmax"] = ["softmax"] * 4
    assert [mixer_kind(stage.blocks[0]) for stage in model.stages] == expected[layout]
    assert {mixer_kind(block) for block in model.stages[2].blocks} == {expected[layout][2]}
    # drop-path schedule: linear from 0 to the released rate over all blocks
    rates = [block.drop_path1.drop_prob for block in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(config["drop_path_rate"])
    assert all(b > a for a, b in itertools.pairwise(rates))


def test_parameter_counts_of_the_released_configs() -> None:
    counts = {}
    for variant, build in VARIANTS.items():
        with torch.device("meta"):
            counts[variant] = count_parameters(build())
    assert counts == {"xt": 6142248, "t": 15907752, "s": 25654184, "b": 52002952, "l": 95426760}
    for variant in ("s", "b", "l"):
        assert abs(counts[variant] / 1e6 / PUBLISHED[variant][0] - 1) < 0.03, variant


@pytest.mark.parametrize("variant", ["s", "b", "l"])
def test_macs_at_224_match_the_published_gflops(variant: str) -> None:
    with torch.device("meta"):
        model = VARIANTS[variant]()
    macs = count_macs(model, 224)
    assert abs(macs / 1e9 / PUBLISHED[variant][1] - 1) < 0.03


def test_count_macs_against_hand_counts() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (10, 12)) == 10 * 12 * 8 * 3 * 9

    class FusedAttention(nn.Module):
        in_chans = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = x.flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, N, C]
            return F.scaled_dot_product_attention(q, q, q)

    # the CPU fused kernel must count as Q K^T plus A V
    assert count_macs(FusedAttention(), (5, 6)) == 2 * 30 * 30 * 4


def test_resolve_mixers_and_bad_layouts() -> None:
    assert resolve_mixers("hybrid", (1, 1, 2)) == [["nala"], ["nala"], ["softmax", "softmax"]]
    assert resolve_mixers(["elu", ("nala", "softmax")], (1, 2)) == [["elu"], ["nala", "softmax"]]
    with pytest.raises(ValueError, match="one entry per stage"):
        resolve_mixers(["nala"], (1, 1))
    with pytest.raises(ValueError, match=r"mixers\[1\]"):
        resolve_mixers(["nala", ("nala",)], (1, 2))
    # an unregistered name is refused when the layout is read, naming where it stands
    with pytest.raises(ValueError, match=r"mixers\[1\]\[0\]='nope' is not a registered mixer"):
        resolve_mixers(["nala", ("nope", "nala")], (1, 2))
    with pytest.raises(ValueError, match="no_such_mixer"):
        tiny(mixers="no_such_mixer")
    for name in SEQUENCE_ONLY_MIXERS:
        with pytest.raises(ValueError, match=name):
            tiny(mixers=name)


# Forward and backward ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixer", IMAGE_MIXERS)
def test_nano_forward_backward_with_every_mixer(mixer: str) -> None:
    torch.manual_seed(0)
    model = nalaformer_nano(mixers=mixer, in_chans=1, drop_path_rate=0.1)
    logits = model(images(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    logits.logsumexp(-1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_variants_forward_on_tiny_inputs(variant: str) -> None:
    torch.manual_seed(0)
    model = VARIANTS[variant]().eval()
    with torch.no_grad():
        logits = model(images(1, 3, 32, 40))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    # LayerScale starts at the released per-stage values
    inits = MODEL_CONFIGS[f"nalaformer_{variant}"]["layer_scale_init"]
    inits = inits if isinstance(inits, tuple) else (inits,) * 4
    for stage, value in zip(model.stages, inits):
        for block in stage.blocks:
            assert torch.all(block.layer_scale1.gamma == value) and torch.all(block.layer_scale2.gamma == value)


def reference_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The released block written plainly in NCHW (docs/method.md §5.2), reusing the block's weights."""
    channels = x.shape[1]

    def depthwise(conv: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)

    def channel_norm(norm: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:
        mean = t.mean(1, keepdim=True)
        var = t.var(1, unbiased=False, keepdim=True)
        return (t - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)

    def pointwise(linear: nn.Linear, t: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", linear.weight, t) + linear.bias.view(1, -1, 1, 1)

    x = x + depthwise(block.cpe1, x)
    x = x + block.layer_scale1.gamma.view(1, channels, 1, 1) * block.attn(channel_norm(block.norm1, x))
    x = x + depthwise(block.cpe2, x)
    hidden = F.gelu(pointwise(block.ffn.fc1, channel_norm(block.norm2, x)))
    hidden = hidden + depthwise(block.ffn.dwconv, hidden)
    return x + block.layer_scale2.gamma.view(1, channels, 1, 1) * pointwise(block.ffn.fc2, hidden)


@pytest.mark.parametrize("mixer", ["nala", "softmax"])
def test_block_matches_plain_reference(mixer: str) -> None:
    model = tiny(mixers=mixer, layer_scale_init=0.5).eval()
    block = model.stages[1].blocks[0]
    x = images(2, 32, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_block(block, x), rtol=1e-5, atol=1e-5)


def test_head_matches_released_order() -> None:
    """proj (per position) -> BatchNorm -> Swish -> average pool -> classifier."""
    model = tiny().eval()
    with torch.no_grad():
        for module in model.head.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
        x = images(2, 32, 3, 4)
        head = model.head
        h = torch.einsum("oc,bchw->bohw", head.proj.weight, x) + head.proj.bias.view(1, -1, 1, 1)
        h = F.batch_norm(h, head.norm.running_mean, head.norm.running_var, head.norm.weight, head.norm.bias)
        pooled = (h * torch.sigmoid(h)).mean(dim=(2, 3))
        torch.testing.assert_close(model.forward_head(x, pre_logits=True), pooled)
        torch.testing.assert_close(model.forward_head(x), head.fc(pooled))


@pytest.mark.parametrize("size", [(32, 32), (40, 72), (50, 33), (7, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_input_size_stage_shapes(size: tuple[int, int]) -> None:
    model = tiny(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), mixers="released").eval()
    height, width = size
    with torch.no_grad():
        features = model.forward_intermediates(images(1, 3, height, width), intermediates_only=True)
        logits = model(images(1, 3, height, width))
    for i, feature in enumerate(features):
        stride = 2 ** (i + 2)
        assert feature.shape == (1, model.embed_dims[i], math.ceil(height / stride), math.ceil(width / stride))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_grad_checkpointing_gives_identical_outputs_and_gradients() -> None:
    x = images(2, 3, 24, 20)
    results = []
    for checkpointing in (False, True):
        model = tiny(drop_path_rate=0.5, mixers=["nala", "softmax"])
        model.set_grad_checkpointing(checkpointing)
        model.train()
        torch.manual_seed(1)
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (logits_plain, grads_plain), (logits_ckpt, grads_ckpt) = results
    torch.testing.assert_close(logits_ckpt, logits_plain, rtol=0, atol=0)
    assert grads_ckpt.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-6, atol=1e-7, msg=name)


def test_eval_mode_is_deterministic_and_train_mode_drops_paths() -> None:
    model = tiny(drop_path_rate=0.5).eval()
    x = images(3, 3, 20, 28)
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = model(x[1:2])
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        # eval mode uses BatchNorm running statistics, so a sample does not depend on its batch
        torch.testing.assert_close(alone, first[1:2], rtol=1e-5, atol=1e-5)
        model.train()
        torch.manual_seed(3)
        assert not torch.allclose(model.forward_features(x), model.forward_features(x))


# timm API -------------------------------------------------------------------------------------------------------


def test_feature_info_and_forward_intermediates() -> None:
    model = tiny(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)).eval()
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]
    assert [info["num_chs"] for info in model.feature_info] == [8, 16, 16, 32]
    assert [info["module"] for info in model.feature_info] == [f"stages.{i}" for i in range(4)]
    assert model.num_features == 32 and model.head_hidden_size == 24
    x = images(2, 3, 64, 48)
    with torch.no_grad():
        reference, h = [], model.stem(x)
        for stage in model.stages:
            h = stage(h)
            reference.append(h)
        final, every = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        for got, want in zip(every, reference):
            torch.testing.assert_close(got, want)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape[1] for t in last_two] == [16, 32]
        picked = model.forward_intermediates(x, indices=[0, -2], output_fmt="NHWC", intermediates_only=True)
        torch.testing.assert_close(picked[0], reference[0].permute(0, 2, 3, 1))
        torch.testing.assert_close(picked[1], reference[2].permute(0, 2, 3, 1))
        early_final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early_final, reference[1])
        assert len(early) == 1
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], reference[3])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=[4])


def test_prune_intermediate_layers() -> None:
    model = tiny(embed_dims=(8, 16, 32), depths=(1, 1, 1), num_heads=(1, 2, 4)).eval()
    x = images(1, 3, 32, 40)
    with torch.no_grad():
        wanted = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.stages) == 2 and model.num_features == 16
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        for a, b in zip(got, wanted):
            torch.testing.assert_close(a, b)
        # with the head pruned the model returns its last kept feature map
        torch.testing.assert_close(model(x), wanted[1])


def test_classifier_api() -> None:
    model = tiny().eval()
    x = images(2, 3, 24, 24)
    assert model.get_classifier() is model.head.fc and model.get_classifier().out_features == 7
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, 24)
        torch.testing.assert_close(model(x), model.get_classifier()(pre_logits))
        model.reset_classifier(5)
        pooled_logits = model(x)
        assert pooled_logits.shape == (2, 5)
        classifier = model.head.fc.state_dict()
        model.reset_classifier(5, global_pool="")
        model.head.fc.load_state_dict(classifier)
        dense = model(x)
        assert dense.shape == (2, 5, *features.shape[2:])
        # the classifier is linear, so averaging its dense output equals classifying the pooled features
        torch.testing.assert_close(dense.mean(dim=(2, 3)), pooled_logits)
        model.reset_classifier(0, global_pool="avg")
        torch.testing.assert_close(model(x), pre_logits)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")


def test_no_weight_decay_and_group_matcher() -> None:
    model = tiny()
    names = dict(model.named_parameters())
    no_decay = model.no_weight_decay()
    assert no_decay <= names.keys()
    assert len(no_decay) == 2 * sum(TINY["depths"])
    assert all(names[n].ndim == 1 and ".layer_scale" in n for n in no_decay)
    groups = model.group_matcher()
    patterns = [groups["stem"]] + [p for p, _ in groups["blocks"]] + [r"^head\."]
    assert all(any(re.match(p, n) for p in patterns) for n in names)


def test_input_checks() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(images(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(images(3, 16, 16))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match="one entry per stage"):
        NaLaFormer(embed_dims=(8,), depths=(1, 1), num_heads=(1, 1))
    with pytest.raises(ValueError, match="drop_path_rate"):
        tiny(drop_path_rate=1.0)


# Official checkpoints and entrypoints ----------------------------------------------------------------------------


def official_state_dict(model: NaLaFormer, num_classes: int) -> dict[str, torch.Tensor]:
    """A random state dict named and shaped as the official NALA.py model of the same configuration."""
    generator = torch.Generator().manual_seed(5)
    state: dict[str, tuple[int, ...]] = {}
    dims = model.embed_dims
    half = dims[0] // 2
    for index, (cin, cout) in zip((0, 3, 6, 9), ((3, half), (half, half), (half, half), (half, dims[0]))):
        state[f"patch_embed.proj.{index}.weight"] = (cout, cin, 3, 3)
        state[f"patch_embed.proj.{index}.bias"] = (cout,)
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            state[f"patch_embed.proj.{index + 1}.{suffix}"] = (cout,)
        state[f"patch_embed.proj.{index + 1}.num_batches_tracked"] = ()
    for i, stage in enumerate(model.stages):
        dim, heads = dims[i], stage.blocks[0].attn.num_heads
        state[f"layers.{i}.RoPE.angle"] = (dim // heads // 4 * 2,)
        for j, block in enumerate(stage.blocks):
            prefix = f"layers.{i}.blocks.{j}."
            hidden = block.ffn.fc1.out_features
            shapes = {
                "cpe1.weight": (dim, 1, 3, 3), "cpe1.bias": (dim,), "cpe2.weight": (dim, 1, 3, 3), "cpe2.bias": (dim,),
                "norm1.norm.weight": (dim,), "norm1.norm.bias": (dim,),
                "norm2.norm.weight": (dim,), "norm2.norm.bias": (dim,),
                "attn.qkvg.weight": (4 * dim, dim), "attn.qkvg.bias": (4 * dim,),
                "attn.lepe.weight": (dim, 1, 5, 5), "attn.lepe.bias": (dim,),
                "attn.out_proj.weight": (dim, dim), "attn.out_proj.bias": (dim,),
                "attn.ln.weight": (dim,), "attn.ln.bias": (dim,),
                "ffn.fc1.weight": (hidden, dim), "ffn.fc1.bias": (hidden,),
                "ffn.dwconv.weight": (hidden, 1, 3, 3), "ffn.dwconv.bias": (hidden,),
                "ffn.fc2.weight": (dim, hidden), "ffn.fc2.bias": (dim,),
                "gamma_1": (1, dim, 1, 1), "gamma_2": (1, dim, 1, 1),
            }  # fmt: skip
            state.update({prefix + name: shape for name, shape in shapes.items()})
        if i + 1 < len(model.stages):
            state[f"layers.{i}.downsample.reduction.weight"] = (dims[i + 1], dim, 3, 3)
            state[f"layers.{i}.downsample.reduction.bias"] = (dims[i + 1],)
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                state[f"layers.{i}.downsample.norm.{suffix}"] = (dims[i + 1],)
            state[f"layers.{i}.downsample.norm.num_batches_tracked"] = ()
    hidden = model.head_hidden_size
    state.update({"proj.weight": (hidden, dims[-1]), "proj.bias": (hidden,)})
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        state[f"norm.{suffix}"] = (hidden,)
    state["norm.num_batches_tracked"] = ()
    state.update({"head.weight": (num_classes, hidden, 1, 1), "head.bias": (num_classes,)})
    return {
        name: torch.tensor(7) if name.endswith("num_batches_tracked") else torch.rand(shape, generator=generator) + 0.5
        for name, shape in state.items()
    }


def test_checkpoint_filter_fn_loads_official_names() -> None:
    model = tiny(embed_dims=(8, 16, 32), depths=(1, 2, 1), num_heads=(1, 2, 4)).eval()
    official = official_state_dict(model, num_classes=7)
    converted = checkpoint_filter_fn({"model": {"module." + k: v for k, v in official.items()}}, model)
    model.load_state_dict(converted, strict=True)
    assert not any("RoPE" in name for name in converted)
    torch.testing.assert_close(model.stem[9].weight, official["patch_embed.proj.9.weight"])
    torch.testing.assert_close(
        model.stages[1].downsample.reduction.weight, official["layers.0.downsample.reduction.weight"]
    )
    torch.testing.assert_close(
        model.stages[2].downsample.norm.running_var, official["layers.1.downsample.norm.running_var"]
    )
    block = model.stages[1].blocks[1]
    torch.testing.assert_close(block.attn.in_proj.weight, official["layers.1.blocks.1.attn.qkvg.weight"])
    torch.testing.assert_close(block.attn.out_norm.bias, official["layers.1.blocks.1.attn.ln.bias"])
    torch.testing.assert_close(block.norm2.weight, official["layers.1.blocks.1.norm2.norm.weight"])
    torch.testing.assert_close(block.layer_scale2.gamma, official["layers.1.blocks.1.gamma_2"].flatten())
    # the official classifier is a 1x1 conv on the pooled map; ours is a Linear with the same result
    pooled = images(2, model.head_hidden_size, 1, 1)
    official_logits = F.conv2d(pooled, official["head.weight"], official["head.bias"]).flatten(1)
    torch.testing.assert_close(model.head.fc(pooled.flatten(1)), official_logits)
    # our own naming passes through unchanged
    ours = model.state_dict()
    assert checkpoint_filter_fn(ours).keys() == ours.keys()
    # another number of classes: the classifier is dropped, everything else loads
    other = tiny(embed_dims=(8, 16, 32), depths=(1, 2, 1), num_heads=(1, 2, 4), num_classes=3)
    missing, unexpected = other.load_state_dict(checkpoint_filter_fn(official, other), strict=False)
    assert sorted(missing) == ["head.fc.bias", "head.fc.weight"] and not unexpected


def test_pretrained_loads_a_local_file_or_explains(tmp_path) -> None:
    source = nalaformer_nano(mixers="nala", num_classes=4)
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    loaded = nalaformer_nano(pretrained=True, mixers="nala", num_classes=4, pretrained_cfg_overlay=dict(file=str(path)))
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    assert loaded.pretrained_cfg["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="no weights are published"):
        nalaformer_t(pretrained=True)


def test_timm_registration_when_timm_is_importable(monkeypatch) -> None:
    registry, leaves = {}, []
    timm = types.ModuleType("timm")
    timm.__spec__ = importlib.machinery.ModuleSpec("timm", None)
    timm_models = types.ModuleType("timm.models")
    timm_models.register_model = lambda fn: registry.setdefault(fn.__name__, fn)
    timm_models.is_model = lambda name: name in registry
    timm_models.model_entrypoint = registry.__getitem__
    timm_layers = types.ModuleType("timm.layers")
    timm_layers.register_notrace_module = leaves.append
    for name, module in (("timm", timm), ("timm.models", timm_models), ("timm.layers", timm_layers)):
        monkeypatch.setitem(sys.modules, name, module)
    assert vision_module.register_timm_models()
    assert set(registry) == {f"nalaformer_{v}" for v in [*VARIANTS, "nano"]}
    assert vision_module.default_cfgs["nalaformer_t"]["input_size"] == (3, 224, 224)
    assert leaves and all(issubclass(cls, nn.Module) for cls in leaves)
    # a second call registers nothing again (timm would warn about overwriting)
    timm_models.register_model = lambda fn: pytest.fail(f"{fn.__name__} registered twice")
    assert vision_module.register_timm_models()


def test_info_command_prints_counts(capsys) -> None:
    from nalaformer.cli import main
    from nalaformer.models import info

    assert main(["info", "--variants", "nano", "--layouts", "released", "softmax", "--size", "28"]) == 0
    out = capsys.readouterr().out
    with torch.device("meta"):
        params = count_parameters(nalaformer_nano())
    assert "nalaformer_nano" in out and f"{params / 1e6:.2f}" in out and "softmax" in out
    rows = info.complexity_rows(["nano"], ["nala"], (28, 32))
    with torch.device("meta"):
        assert rows[0]["macs"] == count_macs(nalaformer_nano(mixers="nala"), (28, 32))
    assert rows[0]["published_macs"] is None
    with pytest.raises(ValueError, match="unknown variant"):
        info.complexity_rows(["huge"], ["nala"])
