"""The NaLa causal LM: config, Hugging Face integration (Auto classes, save / load), forward, loss and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache

from nalaformer.layers import list_attentions
from nalaformer.models.lm import PRESETS, NaLaCache, NaLaConfig, NaLaForCausalLM, NaLaModel
from nalaformer.models.lm.compat import check_transformers_version
from tests.assertions import assert_close, assert_equal_up_to_rounding

VOCAB = 96


def tiny(**overrides) -> NaLaConfig:
    return NaLaConfig.from_preset("tiny", **overrides)


def build(seed: int = 0, **overrides) -> NaLaForCausalLM:
    torch.manual_seed(seed)
    return NaLaForCausalLM(tiny(**overrides)).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_hybrid_pattern_puts_softmax_on_every_kth_layer():
    config = tiny(num_hidden_layers=6, hybrid_every=3)
    assert config.mixer_per_layer == ["nala", "nala", "softmax", "nala", "nala", "softmax"]
    model = NaLaModel(config)
    assert [type(layer.mixer).__name__ for layer in model.layers][2] == "SoftmaxAttention"
    assert model.has_bounded_context


def test_layer_mixers_override_the_pattern():
    config = tiny(layer_mixers=["elu", "softmax"], hybrid_every=1)
    assert config.mixer_per_layer == ["elu", "softmax"]


def test_mixer_options_reach_the_mixer_of_that_name_only():
    model = NaLaModel(tiny(hybrid_every=2, mixer_options={"nala": {"chunk_size": 8, "lam": 2.0}}))
    assert model.layers[0].mixer.chunk_size == 8
    assert model.layers[0].mixer.feature_map.lam == 2.0
    assert type(model.layers[1].mixer).__name__ == "SoftmaxAttention"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mixer": "no_such_mixer"}, "mixer='no_such_mixer' is not a registered mixer"),
        ({"hybrid_mixer": "nope"}, "hybrid_mixer='nope'"),
        ({"layer_mixers": ["nala"]}, "layer_mixers must be a list of 2"),
        ({"layer_mixers": ["nala", "nope"]}, "layer_mixers[1]='nope' is not a registered mixer"),
        ({"num_attention_heads": 3}, "num_attention_heads=3 must divide hidden_size=32"),
        ({"hidden_size": 0}, "hidden_size must be a positive int, got 0"),
        ({"hybrid_every": -1}, "hybrid_every must be an int >= 0"),
        ({"mixer_options": {"nope": {}}}, "mixer_options key 'nope'"),
        ({"rms_norm_eps": 0.0}, "rms_norm_eps must be a positive number"),
    ],
    ids=[
        "mixer",
        "hybrid-mixer",
        "layer-mixers-length",
        "layer-mixers-name",
        "heads",
        "hidden",
        "hybrid-every",
        "options-key",
        "eps",
    ],
)
def test_bad_config_raises_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        tiny(**overrides)


def test_mixer_options_must_be_dicts():
    with pytest.raises(TypeError, match="mixer_options must map a mixer name to a dict"):
        tiny(mixer_options={"nala": 3})


def test_every_registered_name_is_accepted():
    for name in list_attentions():
        assert tiny(mixer=name).mixer_per_layer == [name, name]


def test_presets_and_unknown_preset():
    assert NaLaConfig.from_preset("small").hidden_size == 384
    assert NaLaConfig.from_preset("340m", vocab_size=100).vocab_size == 100
    with pytest.raises(ValueError, match="unknown preset 'huge'; known: tiny, small, 340m"):
        NaLaConfig.from_preset("huge")


def test_340m_preset_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = NaLaForCausalLM(NaLaConfig.from_preset("340m"))
    # with the head tied to the embedding (some transformers releases do not tie on the meta device)
    assert model.lm_head.weight.shape == model.model.embed_tokens.weight.shape
    count = sum(p.numel() for name, p in model.named_parameters() if name != "lm_head.weight")
    # hidden 1024, 24 layers, 16 heads, SwiGLU 2816, vocab 32000, tied head (analytic: 367.2 M)
    assert 360e6 < count < 375e6, count


def test_old_transformers_is_refused_with_the_needed_version():
    with pytest.raises(ImportError, match=r"needs transformers>=5\.0\.0,<6\.0\.0.*found 4\.46\.0"):
        check_transformers_version("4.46.0")
    with pytest.warns(UserWarning, match="found 6.1.0"):
        check_transformers_version("6.1.0")


def test_auto_classes_resolve_the_nala_model_type():
    config = AutoConfig.for_model("nala", **PRESETS["tiny"])
    assert isinstance(config, NaLaConfig)
    assert type(AutoModelForCausalLM.from_config(config)) is NaLaForCausalLM
    assert type(AutoModel.from_config(config)) is NaLaModel


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_save_and_load_round_trip_in_safetensors(tmp_path, tie):
    model = build(tie_word_embeddings=tie, hybrid_every=2)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is NaLaForCausalLM
    assert loaded.config.mixer_per_layer == ["nala", "softmax"]
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tie
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    ids = random_ids(2, 11)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_residual_projections_start_with_scaled_std():
    config = tiny(num_hidden_layers=4, hidden_size=64, intermediate_size=128)
    torch.manual_seed(0)
    model = NaLaModel(config)
    residual_std = config.initializer_range / math.sqrt(2 * config.num_hidden_layers)
    down = torch.cat([layer.mlp.down_proj.weight.detach().flatten() for layer in model.layers])
    out = torch.cat([layer.mixer.out_proj.weight.detach().flatten() for layer in model.layers])
    in_proj = torch.cat([layer.mixer.in_proj.weight.detach().flatten() for layer in model.layers])
    assert abs(float(down.std()) / residual_std - 1) < 0.05
    assert abs(float(out.std()) / residual_std - 1) < 0.05
    assert abs(float(in_proj.std()) / config.initializer_range - 1) < 0.05
    assert all(torch.equal(layer.attn_norm.weight, torch.ones(64)) for layer in model.layers)


@pytest.mark.parametrize("mixer", ["nala", "softmax", "elu", "nala_cosine"])
def test_logits_are_causal(mixer):
    model = build(mixer=mixer)
    ids = random_ids(2, 13)
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = build()
    ids = random_ids(2, 9)
    labels = ids.clone()
    labels[0, 3] = -100
    out = model(ids, labels=labels)
    reference = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert_close("loss", reference, out.loss, atol=1e-6)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = build()
    model.train()
    ids = random_ids(2, 9)
    loss = model(ids, labels=ids).loss
    reference = torch.autograd.grad(loss, model.model.embed_tokens.weight)[0]
    # transformers 5.x renamed gradient_checkpointing_enable to activation_checkpointing_enable
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    loss_ckpt = model(ids, labels=ids).loss
    grad_ckpt = torch.autograd.grad(loss_ckpt, model.model.embed_tokens.weight)[0]
    assert_close("loss", loss, loss_ckpt, atol=1e-6)
    assert_close("grad", reference, grad_ckpt, atol=1e-6)


def test_logits_to_keep_hidden_states_and_tuple_output():
    model = build()
    ids = random_ids(2, 7)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        last = model(ids, logits_to_keep=1)
        as_tuple = model(ids, return_dict=False, use_cache=False)
    # full sequence vs one position: matmuls of different shapes, whose rounding depends on the CPU's BLAS
    assert_equal_up_to_rounding("last logits", full.logits[:, -1:], last.logits)
    assert len(full.hidden_states) == 3
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], full.logits)


def test_inputs_embeds_equal_input_ids():
    model = build()
    ids = random_ids(1, 6)
    with torch.no_grad():
        from_ids = model(ids).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert torch.equal(from_ids, from_embeds)


def test_training_mode_returns_no_cache_unless_asked():
    model = build()
    model.train()
    assert model(random_ids(1, 4)).cache is None
    assert isinstance(model(random_ids(1, 4), use_cache=True).cache, NaLaCache)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_ids": torch.tensor([[1, VOCAB]])}, ValueError, rf"token id {VOCAB}, outside the vocabulary \[0, 96\)"),
        ({"input_ids": torch.tensor([[-1, 2]])}, ValueError, "token id -1, outside the vocabulary"),
        ({"input_ids": torch.zeros(1, 0, dtype=torch.long)}, ValueError, "empty prompt"),
        ({"input_ids": torch.zeros(1, 3)}, TypeError, "input_ids must be an integer tensor"),
        ({"input_ids": torch.zeros(3, dtype=torch.long)}, ValueError, r"input_ids must have shape \[B, T\]"),
        ({}, ValueError, "pass exactly one of input_ids"),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)},
            ValueError,
            r"attention_mask must have shape \[2, 3\]",
        ),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long)},
            ValueError,
            r"got \(1, 3\)",
        ),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.tensor([[0, 2, 1]])},
            ValueError,
            "only 0 .padding. and 1",
        ),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3)},
            TypeError,
            "bool or integer 0/1, got dtype torch.float32",
        ),
        ({"input_ids": torch.ones(1, 3, dtype=torch.long), "output_attentions": True}, ValueError, "no attention"),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "cache": DynamicCache()},
            TypeError,
            "cache must be the NaLaCache",
        ),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "cache": NaLaCache(3)},
            ValueError,
            "cache has 3 layers but the model has 2",
        ),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "cache": NaLaCache(2), "past_key_values": NaLaCache(2)},
            ValueError,
            "not both",
        ),
        ({"input_ids": torch.ones(1, 3, dtype=torch.long), "logits_to_keep": -1}, ValueError, "logits_to_keep"),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.ones(2, 4, dtype=torch.long)},
            ValueError,
            r"labels must have the shape of the inputs \[B, T\] = \(2, 3\)",
        ),
    ],
    ids=[
        "id-too-large",
        "id-negative",
        "empty-prompt",
        "float-ids",
        "ids-1d",
        "no-input",
        "mask-length",
        "mask-batch",
        "mask-values",
        "mask-float",
        "output-attentions",
        "dynamic-cache",
        "cache-layers",
        "cache-twice",
        "logits-to-keep",
        "labels-shape",
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, message):
    model = build()
    with pytest.raises(error, match=message):
        model(**kwargs)


def test_context_beyond_the_maximum_is_refused_for_softmax_layers_only():
    ids = random_ids(1, 20)
    with pytest.raises(ValueError, match=r"context would reach 20 tokens .* max_position_embeddings=16"):
        build(hybrid_every=2, max_position_embeddings=16)(ids)
    hybrid = build(hybrid_every=2, max_position_embeddings=16)
    cache = hybrid(ids[:, :16]).cache
    with pytest.raises(ValueError, match=r"reach 17 tokens \(16 cached \+ 1 new"):
        hybrid(ids[:, 16:17], cache=cache)
    # an all-linear model has no maximum
    assert build(max_position_embeddings=16)(ids).logits.shape == (1, 20, VOCAB)


def test_cache_batch_mismatch_is_refused():
    model = build()
    cache = model(random_ids(2, 4)).cache
    with pytest.raises(ValueError, match="cache holds 2 rows but the inputs have batch size 3"):
        model(random_ids(3, 1), cache=cache)


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_nalaformer_has_no_side_effects_and_the_lm_import_registers():
    output = run_python(
        "import sys, nalaformer\n"
        "hooks = [f for f in sys.meta_path if type(f).__module__.startswith('nalaformer')]\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules, hooks)\n"
        "import nalaformer.models.lm\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "config = AutoConfig.for_model('nala', vocab_size=50, hidden_size=32, num_hidden_layers=1, "
        "num_attention_heads=2)\n"
        "print(type(AutoModelForCausalLM.from_config(config)).__name__)\n"
    )
    assert output.splitlines() == ["False False []", "NaLaForCausalLM"]


def test_saved_folder_loads_in_a_process_that_never_imported_nalaformer(tmp_path):
    model = build()
    model.save_pretrained(tmp_path / "saved")
    x = random_ids(1, 6)
    with torch.no_grad():
        expected = model(x).logits
    torch.save(x, tmp_path / "ids.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"folder = {str(tmp_path / 'saved')!r}\n"
        "try:\n"
        "    AutoModelForCausalLM.from_pretrained(folder)\n"
        "except ValueError as error:\n"
        "    print('refused:', 'trust_remote_code=True' in str(error), 'nalaformer' in sys.modules)\n"
        "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "from nalaformer.models.lm import NaLaForCausalLM\n"
        "print(type(model) is NaLaForCausalLM)\n"
        f"with torch.no_grad():\n    logits = model(torch.load({str(tmp_path / 'ids.pt')!r})).logits\n"
        f"torch.save(logits, {str(tmp_path / 'logits.pt')!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    # (transformers prints its trust_remote_code prompt to stdout, without a newline, before refusing)
    assert "refused: True False" in result.stdout
    assert result.stdout.splitlines()[-1] == "True"
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)
    # the folder carries no copy of the model code, only the import of the installed package
    code_file = (tmp_path / "saved" / "modeling_nala.py").read_text()
    assert "from nalaformer.models.lm import" in code_file and "class " not in code_file


def test_without_transformers_nalaformer_imports_and_the_lm_names_the_extra():
    output = run_python(
        "import sys\n"
        "sys.modules['transformers'] = None  # as if not installed\n"
        "import nalaformer, nalaformer.models\n"
        "print(nalaformer.models.nalaformer_t.__name__)\n"
        "try:\n"
        "    nalaformer.models.NaLaConfig\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    assert output.splitlines()[0] == "nalaformer_t"
    assert "pip install 'nalaformer[lm]'" in output.splitlines()[1]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NALAFORMER_SLOW") != "1", reason="1.5 GB and ~12 s on CPU; set NALAFORMER_SLOW=1")
def test_340m_model_builds_and_runs_a_forward_and_a_decode_step_on_cpu():
    torch.manual_seed(0)
    model = NaLaForCausalLM(NaLaConfig.from_preset("340m")).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 32000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids)
        step = model(out.logits[:, -1:].argmax(-1), cache=out.cache)
        reference = model(torch.cat([ids, out.logits[:, -1:].argmax(-1)], dim=1)).logits[:, -1:]
    assert out.logits.shape == (1, 16, 32000)
    assert_close("340m decode step", reference, step.logits, atol=1e-4)
