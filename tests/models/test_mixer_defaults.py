"""Saved models keep the mixer options they were trained with after a default changes: NaLa+DN / NaLa+GDN went
from lam = 3 to lam = 1 (``NALA_DELTA_LAM``); configs record the resolved options and ``mixer_defaults``, and a
config or run folder saved before that is read with the defaults of then."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from nalaformer.cli import main
from nalaformer.layers.delta import NALA_DELTA_LAM, NALA_DELTA_LAM_BEFORE
from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM
from nalaformer.models.lm.configuration_nala import MIXER_DEFAULTS

QUICK = ["--warmup-steps", "1", "--no-progress", "--batch-size", "8", "--checkpoint-every", "2"]
MQAR = ["--data.name", "mqar", "--data.block-size", "16", "--data.mqar-pairs", "2", "--data.mqar-vocab", "16"]
MQAR += ["--data.mqar-train-examples", "32", "--data.mqar-val-examples", "8"]
TINY = ["--model.hidden-size", "16", "--model.num-layers", "2", "--model.num-heads", "2"]


def lams(model: NaLaForCausalLM) -> list[float | None]:
    """The ``lam`` of each layer's feature map (None for a mixer without one)."""
    return [getattr(getattr(layer.mixer, "feature_map", None), "lam", None) for layer in model.model.layers]


def old_config_json(config: NaLaConfig) -> dict:
    """``config`` as ``save_pretrained`` wrote it before ``mixer_defaults`` existed: no such field, and no options
    filled in for the mixers left at their defaults."""
    saved = config.to_dict()
    saved.pop("mixer_defaults")
    saved["mixer_options"] = {}
    return saved


def test_a_new_config_records_the_resolved_lam_of_the_nala_delta_mixers_it_uses():
    config = NaLaConfig.from_preset("tiny", layer_mixers=["nala_gated_deltanet", "softmax"])
    assert config.mixer_defaults == MIXER_DEFAULTS == 2
    assert config.mixer_options == {"nala_gated_deltanet": {"lam": NALA_DELTA_LAM}}
    explicit = NaLaConfig.from_preset("tiny", mixer="nala_deltanet", mixer_options={"nala_deltanet": {"lam": 2.0}})
    assert explicit.mixer_options == {"nala_deltanet": {"lam": 2.0}}
    assert NaLaConfig.from_preset("tiny", mixer="nala").mixer_options == {}


def test_a_pretrained_folder_saved_before_mixer_defaults_loads_nala_gdn_with_lam_3(tmp_path):
    torch.manual_seed(0)
    trained = NaLaForCausalLM(
        NaLaConfig.from_preset("tiny", layer_mixers=["nala_gated_deltanet", "softmax"], mixer_defaults=1)
    ).eval()
    assert lams(trained) == [NALA_DELTA_LAM_BEFORE, None]
    trained.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(old_config_json(trained.config)), encoding="utf-8")
    loaded = NaLaForCausalLM.from_pretrained(tmp_path).eval()
    assert lams(loaded) == [NALA_DELTA_LAM_BEFORE, None]
    assert loaded.config.mixer_defaults == 1
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, trained(ids).logits)
    # the same dict read directly (AutoConfig and from_pretrained go through from_dict)
    assert NaLaConfig.from_dict(old_config_json(trained.config)).options_for("nala_gated_deltanet") == {"lam": 3.0}


def test_a_pretrained_folder_saved_now_round_trips_lam_1_and_its_explicit_options(tmp_path):
    torch.manual_seed(0)
    config = NaLaConfig.from_preset(
        "tiny", layer_mixers=["nala_deltanet", "nala_gated_deltanet"], mixer_options={"nala_deltanet": {"lam": 2.0}}
    )
    model = NaLaForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert saved["mixer_defaults"] == 2
    assert saved["mixer_options"] == {"nala_deltanet": {"lam": 2.0}, "nala_gated_deltanet": {"lam": NALA_DELTA_LAM}}
    loaded = NaLaForCausalLM.from_pretrained(tmp_path)
    assert lams(loaded) == [2.0, NALA_DELTA_LAM]
    assert loaded.config.to_dict()["mixer_options"] == saved["mixer_options"]


@pytest.mark.parametrize("value", [0, 3, True, "2"])
def test_an_unknown_mixer_defaults_is_refused_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"mixer_defaults must be one of \[1, 2\]"):
        NaLaConfig.from_preset("tiny", mixer_defaults=value)


def test_an_lm_run_folder_from_before_keeps_lam_3_when_loaded_and_resumed(tmp_path, capsys):
    from nalaformer.train.recipes.lm import MODEL_CONFIG_FILE
    from nalaformer.train.runs import load_run

    run_dir = tmp_path / "run"
    argv = ["train", "lm", *QUICK, *MQAR, *TINY, "--model.mixer", "nala_gated_deltanet", "--run-dir", str(run_dir)]
    assert main([*argv, "--steps", "2"]) == 0
    saved = json.loads((run_dir / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    assert saved["mixer_defaults"] == 2 and saved["mixer_options"] == {"nala_gated_deltanet": {"lam": NALA_DELTA_LAM}}
    assert lams(load_run(run_dir, with_data=False).model) == [NALA_DELTA_LAM] * 2
    # the run folder as the code before wrote it: no model_config.json; it was trained with lam = 3
    (run_dir / MODEL_CONFIG_FILE).unlink()
    assert lams(load_run(run_dir, with_data=False).model) == [NALA_DELTA_LAM_BEFORE] * 2
    capsys.readouterr()
    assert main([*argv, "--steps", "4", "--resume"]) == 0
    resumed = json.loads((run_dir / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    assert resumed["mixer_defaults"] == 1 and resumed["mixer_options"] == {"nala_gated_deltanet": {"lam": 3.0}}
    reloaded = load_run(run_dir, with_data=False)
    assert reloaded.step == 4 and lams(reloaded.model) == [NALA_DELTA_LAM_BEFORE] * 2
