"""Language modelling: ``nalaformer train lm`` (default: a small NaLa causal LM on Shakespeare, characters).

The data is a text corpus (the embedded Shakespeare plays or any UTF-8 file / directory) cut into windows of
``block_size`` tokens, or the synthetic MQAR recall task (``--data.name mqar``). The model is ``NaLaForCausalLM``
(``nalaformer.models``) or any ``package.module:callable`` that takes the same keywords. Usable from Python::

    from nalaformer.train.recipes import lm
    config = lm.default_config()
    config.train.steps = 100
    result = lm.run(config)
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from nalaformer.data.mqar import IGNORE_INDEX, MQARDataset
from nalaformer.data.text import TokenWindows, load_corpus, split_stream
from nalaformer.data.tokenizers import TOKENIZER_KINDS, build_tokenizer, encode_to_tensor, load_tokenizer
from nalaformer.train.config import TrainConfig, check_fields, from_dict, option, to_dict
from nalaformer.train.distributed import resolve_device, setup_distributed
from nalaformer.train.engine import EvalHook, TrainResult, evaluate, seed_everything, train
from nalaformer.train.recipes.common import count_parameters, parse_options, resolve_callable
from nalaformer.train.run_folder import claim_run_dir

NAME = "lm"
TOKENIZER_FOLDER = "tokenizer"
# the built model's own config (a NaLaForCausalLM's NaLaConfig, its mixer options resolved), written into the run
# folder at the start of a run; a run folder without it was written before it existed
MODEL_CONFIG_FILE = "model_config.json"


@dataclass
class LMDataConfig:
    """Which text (or MQAR task), how it is tokenised and cut."""

    name: str = option("shakespeare", "'shakespeare', 'mqar', or a path to a UTF-8 file or directory")
    tokenizer: str = option("char", "text tokenizer", choices=TOKENIZER_KINDS)
    block_size: int = option(128, "tokens per training window (MQAR: sequence length)", min=1)
    val_fraction: float = option(0.05, "text: share of the token stream held out (its tail)", min=0.0, max=0.9)
    mqar_vocab: int = option(64, "MQAR: vocabulary size", min=4)
    mqar_pairs: int = option(8, "MQAR: key-value pairs (and queries) per sequence", min=1)
    mqar_power_a: float = option(0.01, "MQAR: exponent of the query-gap power law", above=0.0)
    mqar_train_examples: int = option(20_000, "MQAR: training sequences", min=1)
    mqar_val_examples: int = option(512, "MQAR: validation sequences", min=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.name == "mqar" and self.block_size < 4 * self.mqar_pairs:
            raise ValueError(
                f"LMDataConfig.block_size={self.block_size} must be >= 4 * mqar_pairs ({4 * self.mqar_pairs}) for MQAR"
            )


@dataclass
class LMModelConfig:
    """Which causal language model and its size."""

    name: str = option("NaLaForCausalLM", "NaLaForCausalLM (nalaformer.models) or package.module:callable")
    mixer: str = option("nala", "token mixer of every layer (a causal registry name)")
    hidden_size: int = option(128, "model width", min=1)
    num_layers: int = option(2, "decoder layers", min=1)
    num_heads: int = option(2, "heads per mixer", min=1)
    intermediate_size: int = option(0, "MLP width (0: the model's default)", min=0)
    options: str = option("{}", "more model/config keyword arguments, as a JSON object")

    def __post_init__(self) -> None:
        check_fields(self)
        parse_options(self.options, "LMModelConfig.options")


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=300,
        batch_size=32,
        lr=2e-3,
        beta2=0.95,
        warmup_steps=30,
        weight_decay=0.1,
        eval_every=100,
        eval_batches=16,
        checkpoint_every=100,
    )


@dataclass
class LMRecipeConfig:
    """The whole configuration of a language-modelling run."""

    train: TrainConfig = field(default_factory=_default_train)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: LMModelConfig = field(default_factory=LMModelConfig)


def default_config() -> LMRecipeConfig:
    """The defaults of ``nalaformer train lm``."""
    return LMRecipeConfig()


@dataclass
class LMDatasets:
    """Training and validation windows, the vocabulary size and the tokenizer (``None`` for MQAR)."""

    train: Dataset
    val: Dataset | None
    vocab_size: int
    tokenizer: Any
    info: dict[str, Any]


def build_datasets(config: LMRecipeConfig, tokenizer: Any = None) -> LMDatasets:
    """Datasets of ``config.data``; ``tokenizer`` (e.g. reloaded from a run) replaces building a new one."""
    data, seed = config.data, config.train.seed
    if data.name == "mqar":
        common = dict(
            vocab_size=data.mqar_vocab,
            seq_len=data.block_size,
            num_kv_pairs=data.mqar_pairs,
            power_a=data.mqar_power_a,
        )
        train_set = MQARDataset(data.mqar_train_examples, seed=seed, **common)
        # A different seed keeps validation sequences apart from the training ones.
        val_set = MQARDataset(data.mqar_val_examples, seed=seed + 1_000_003, **common)
        info = {"task": "mqar", "train_sequences": len(train_set), "val_sequences": len(val_set)}
        return LMDatasets(train_set, val_set, data.mqar_vocab, None, info)
    text = load_corpus(data.name)
    if tokenizer is None:
        tokenizer = build_tokenizer(data.tokenizer, text)
    ids = encode_to_tensor(tokenizer, text)
    train_ids, val_ids = split_stream(ids, data.val_fraction)
    train_set = TokenWindows(train_ids, data.block_size)
    val_set = TokenWindows(val_ids, data.block_size) if len(val_ids) > data.block_size else None
    info = {
        "task": "text",
        "characters": len(text),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "vocab_size": tokenizer.vocab_size,
    }
    return LMDatasets(train_set, val_set, tokenizer.vocab_size, tokenizer, info)


def build_model(
    config: LMModelConfig, *, vocab_size: int, block_size: int, mixer_defaults: int | None = None
) -> nn.Module:
    """The causal LM of ``config``. A Hugging Face model class (one with ``config_class``) is built from its config;
    any other callable is called with the same keywords. ``mixer_defaults``: the ``NaLaConfig.mixer_defaults`` of a
    saved run (for a config class that takes it, unless ``config.options`` sets it); default the current ones."""
    builder = resolve_callable(config.name, "nalaformer.models")
    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "mixer": config.mixer,
        "max_position_embeddings": block_size,
    }
    if config.intermediate_size:
        kwargs["intermediate_size"] = config.intermediate_size
    kwargs.update(parse_options(config.options, "LMModelConfig.options"))
    config_class = getattr(builder, "config_class", None)
    if config_class is not None:
        if mixer_defaults is not None and "mixer_defaults" in inspect.signature(config_class.__init__).parameters:
            kwargs.setdefault("mixer_defaults", mixer_defaults)
        return builder(config_class(use_cache=False, **kwargs))
    return builder(**kwargs)


def _logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    core = model.module if isinstance(model, DistributedDataParallel) else model
    wants_cache_flag = hasattr(getattr(core, "config", None), "use_cache")
    output = model(input_ids, use_cache=False) if wants_cache_flag else model(input_ids)
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, (tuple, list)) else output


def lm_eval(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy and top-1 accuracy over labelled positions (``-100`` = ignored; for MQAR that is
    the accuracy per query), weighted by the number of labelled tokens."""
    input_ids, targets = batch
    logits = _logits(model, input_ids).float()
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    labelled = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) & labelled
    count = labelled.sum()
    return {"loss": loss, "accuracy": correct.sum() / count.clamp_min(1), "weight": count}


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Training loss of :func:`lm_eval` (mean over labelled tokens) and its accuracy."""
    metrics = lm_eval(model, batch)
    return metrics["loss"], {"accuracy": metrics["accuracy"]}


def run(config: LMRecipeConfig, eval_hook: EvalHook | None = None) -> TrainResult:
    """Train the language model of ``config``; the tokenizer is saved in ``<run_dir>/tokenizer``. ``eval_hook``: see
    :func:`nalaformer.train.train`."""
    context = setup_distributed(config.train.device)
    # the run folder is claimed (writable, not in use, not another run) before any data is read
    with claim_run_dir(
        config.train.run_dir, resume=config.train.resume, overwrite=config.train.overwrite, context=context
    ):
        return _run(config, context, eval_hook)


def _run(config: LMRecipeConfig, context, eval_hook: EvalHook | None = None) -> TrainResult:
    seed_everything(config.train.seed)
    datasets = build_datasets(config)
    if datasets.tokenizer is not None and config.train.run_dir is not None and context.is_main:
        datasets.tokenizer.save(Path(config.train.run_dir) / TOKENIZER_FOLDER)
    # a resumed run is rebuilt with the mixer defaults it was trained with (a run folder from before they were
    # recorded: the defaults of then, e.g. NaLa+DN / NaLa+GDN at lam = 3)
    resumed = _resumed_run_dir(config.train)
    model = build_model(
        config.model,
        vocab_size=datasets.vocab_size,
        block_size=config.data.block_size,
        mixer_defaults=None if resumed is None else run_mixer_defaults(resumed),
    )
    model_config = getattr(model, "config", None)
    if config.train.run_dir is not None and context.is_main and hasattr(model_config, "to_json_file"):
        model_config.to_json_file(Path(config.train.run_dir) / MODEL_CONFIG_FILE, use_diff=False)
    run_config = {
        "recipe": NAME,
        **to_dict(config),
        "dataset": {**datasets.info, "model_parameters": count_parameters(model)},
    }
    return train(
        model,
        datasets.train,
        lm_loss,
        config.train,
        val_data=datasets.val,
        eval_fn=lm_eval,
        run_config=run_config,
        eval_hook=eval_hook,
    )


def run_mixer_defaults(run_dir: str | Path) -> int:
    """The ``mixer_defaults`` the model of the saved run ``run_dir`` was built with: its ``model_config.json``'s,
    or 1 (the defaults before they were recorded) for a run folder without one."""
    saved = Path(run_dir) / MODEL_CONFIG_FILE
    if not saved.is_file():
        return 1
    return json.loads(saved.read_text(encoding="utf-8")).get("mixer_defaults", 1)


def _resumed_run_dir(train_config: TrainConfig) -> Path | None:
    """The run folder a run continues (that of its ``resume`` checkpoint), or None for a fresh start."""
    from nalaformer.train.checkpoint import latest_valid_checkpoint
    from nalaformer.train.runs import find_run_dir

    if train_config.resume is None:
        return None
    if train_config.resume != "auto":
        try:
            return find_run_dir(train_config.resume)
        except FileNotFoundError:
            return None  # not a checkpoint: the engine says so
    run_dir = Path(train_config.run_dir)
    return run_dir if latest_valid_checkpoint(run_dir / "checkpoints") is not None else None


def rebuild(
    run_dir: str | Path, sections: dict[str, Any], *, with_data: bool = True
) -> tuple[LMRecipeConfig, nn.Module, LMDatasets | None, Any]:
    """``(config, untrained model, datasets or None, tokenizer or None)`` of a saved language-model run, for
    :func:`nalaformer.train.runs.load_run`; text runs reload the tokenizer the run saved."""
    config = from_dict(LMRecipeConfig, sections)
    tokenizer = None if config.data.name == "mqar" else load_tokenizer(Path(run_dir) / TOKENIZER_FOLDER)
    vocab_size = config.data.mqar_vocab if tokenizer is None else tokenizer.vocab_size
    datasets = build_datasets(config, tokenizer=tokenizer) if with_data else None
    model = build_model(
        config.model,
        vocab_size=vocab_size,
        block_size=config.data.block_size,
        mixer_defaults=run_mixer_defaults(run_dir),
    )
    return config, model, datasets, tokenizer


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    split: str = "val",
    ema: bool = False,
    device: str = "auto",
    batch_size: int = 32,
) -> dict[str, float]:
    """Evaluate a language-model run on its held-out data (``split`` must be ``"val"``); adds ``perplexity``."""
    from nalaformer.train.runs import load_run

    if split != "val":
        raise ValueError(f"split={split!r}: language-model runs have only the held-out 'val' split")
    run = load_run(run_dir, checkpoint=checkpoint, ema=ema, recipe=NAME)
    if run.datasets.val is None:
        raise ValueError(f"the run {str(run_dir)!r} has no validation data (val_fraction too small)")
    target = resolve_device(device)
    model = run.model.to(target)
    metrics = evaluate(
        model, run.datasets.val, lm_eval, batch_size=batch_size, device=target, precision=run.config.train.precision
    )
    metrics["perplexity"] = float(torch.tensor(metrics["loss"]).exp())
    return {**metrics, "step": run.step, "samples": len(run.datasets.val)}


def evaluate_text(
    run_dir: str | Path,
    text_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    ema: bool = False,
    device: str = "auto",
    batch_size: int = 32,
) -> dict[str, float]:
    """Loss and perplexity of a language-model run on a UTF-8 text file (or directory), tokenised with the run's
    tokenizer and cut into the run's non-overlapping ``block_size`` windows (each window starts a fresh context)."""
    from nalaformer.train.runs import load_run

    run = load_run(run_dir, checkpoint=checkpoint, ema=ema, recipe=NAME, with_data=False)
    if run.tokenizer is None:
        raise ValueError(f"{str(run_dir)!r} was trained on MQAR, which has no text tokenizer")
    block_size = run.config.data.block_size
    ids = encode_to_tensor(run.tokenizer, load_corpus(str(text_path)))
    if len(ids) < block_size + 1:
        raise ValueError(
            f"{str(text_path)!r} holds {len(ids)} tokens; the run's block_size={block_size} needs at least "
            f"{block_size + 1}"
        )
    windows = TokenWindows(ids, block_size)
    target = resolve_device(device)
    model = run.model.to(target)
    precision = run.config.train.precision
    metrics = evaluate(model, windows, lm_eval, batch_size=batch_size, device=target, precision=precision)
    metrics["perplexity"] = float(torch.tensor(metrics["loss"]).exp())
    return {**metrics, "step": run.step, "samples": len(windows), "tokens": len(ids)}
