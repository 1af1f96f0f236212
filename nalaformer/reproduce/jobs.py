"""One training run of the study: train a mixer on a task through the shared recipes, then measure its attention.

A job writes ``results/<task>/<mixer>-seed<k>.json`` when it finishes; the study skips jobs whose result exists, and
a job interrupted mid-training resumes from its own checkpoints (``runs/<task>/<mixer>-seed<k>/``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from nalaformer.diagnostics.training import norm_awareness_hook
from nalaformer.reporting import write_json
from nalaformer.reproduce.plan import TaskPlan
from nalaformer.train import latest_valid_checkpoint
from nalaformer.train.recipes import image as image_recipe
from nalaformer.train.recipes import lm as lm_recipe

DIAGNOSTIC_SAMPLES = 8


def result_path(out_dir: Path, task: str, mixer: str, seed: int) -> Path:
    return Path(out_dir) / "results" / task / f"{mixer}-seed{seed}.json"


def run_dir(out_dir: Path, task: str, mixer: str, seed: int) -> Path:
    return Path(out_dir) / "runs" / task / f"{mixer}-seed{seed}"


def recipe_config(task: TaskPlan, mixer: str, seed: int, directory: Path) -> Any:
    """The recipe configuration of one job (the shared ``nalaformer train`` recipes, with the plan's settings)."""
    recipe = image_recipe if task.name == "image" else lm_recipe
    config = recipe.default_config()
    train = config.train
    train.steps, train.batch_size, train.lr, train.seed = task.steps, task.batch_size, task.lr, seed
    train.warmup_steps = max(1, task.steps // 10)
    train.eval_every = max(1, task.steps // 5)
    train.checkpoint_every = max(1, task.steps // 5)
    train.keep_checkpoints = 1
    train.progress = False
    train.cpu_threads = torch.get_num_threads()
    train.run_dir = str(directory)
    # an interrupted job continues from its newest valid checkpoint; one cut before its first checkpoint (or with
    # none valid) has nothing worth keeping and starts over in the same folder
    resumable = latest_valid_checkpoint(Path(directory) / "checkpoints") is not None
    train.resume = "auto" if resumable else None
    train.overwrite = not resumable
    if task.name == "image":
        train.eval_batches = 0
        for key, value in task.data.items():
            setattr(config.data, key, value)
        config.model.mixer = mixer
        config.model.options = json.dumps(task.model)
    else:
        train.eval_batches = 16
        config.data.name = "mqar" if task.name == "mqar" else task.data.get("name", "shakespeare")
        for key, value in task.data.items():
            if key != "name":
                setattr(config.data, key, value)
        config.model.mixer = mixer
        config.model.hidden_size = task.model["hidden_size"]
        config.model.num_layers = task.model["num_layers"]
        config.model.num_heads = task.model["num_heads"]
    return config


def diagnostic_batch(task: TaskPlan, config: Any) -> Any:
    """A few validation examples in the form the model takes (images, or token ids)."""
    if task.name == "image":
        datasets = image_recipe.build_datasets(config)
        held_out = datasets.val if datasets.val is not None else datasets.test
        images, _ = default_collate([held_out[i] for i in range(min(DIAGNOSTIC_SAMPLES, len(held_out)))])
        return images
    datasets = lm_recipe.build_datasets(config)
    inputs, _ = default_collate([datasets.val[i] for i in range(min(DIAGNOSTIC_SAMPLES, len(datasets.val)))])
    return inputs


def measure_spikiness(model: torch.nn.Module, inputs: Any, out: Path, mixer: str, queries: int) -> dict | None:
    """Entropy vs query norm of the trained model (``nalaformer.diagnostics``), NaLa's saturated share at the study's
    one threshold (``claims.SATURATION_TANH``, kept in the record as ``saturation``); ``{"skipped": why}`` for mixers
    without defined attention weights (the delta rule)."""
    from nalaformer.diagnostics import diagnose
    from nalaformer.reproduce.claims import SATURATION_TANH

    temperatures = (1.0, 2.0, 4.0, 8.0) if mixer.startswith("nala") else ()
    model.eval()
    try:
        report = diagnose(
            model,
            inputs,
            out,
            max_queries=queries,
            max_samples=DIAGNOSTIC_SAMPLES,
            temperatures=temperatures,
            controlled=False,
            plots=False,
            saturation=SATURATION_TANH,
        )
    except ValueError as error:
        return {"skipped": str(error)}
    sweep = report["temperature_sweep"]
    if sweep is not None:
        # the pooled exponents stay in the run's per_query.npz; the record keeps the per-temperature statistics
        sweep = {**sweep, "layers": [{k: v for k, v in layer.items() if k != "exponents"} for layer in sweep["layers"]]}
    return {"summary": report["summary"], "temperature_sweep": sweep, "saturation": SATURATION_TANH}


def run_job(task: TaskPlan, mixer: str, seed: int, out_dir: str | Path, diagnostic_queries: int) -> dict[str, Any]:
    """Train ``mixer`` on ``task`` with ``seed``, measure it, write and return its result record."""
    out_dir = Path(out_dir)
    directory = run_dir(out_dir, task.name, mixer, seed)
    config = recipe_config(task, mixer, seed, directory)
    recipe = image_recipe if task.name == "image" else lm_recipe
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    # every evaluation also logs the norm-awareness statistics (saturated exponents, entropy-norm correlation)
    result = recipe.run(config, eval_hook=norm_awareness_hook(DIAGNOSTIC_SAMPLES))
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    spikiness = measure_spikiness(
        result.model, diagnostic_batch(task, config), directory / "diagnostics", mixer, diagnostic_queries
    )
    record = {
        "task": task.name,
        "mixer": mixer,
        "seed": seed,
        "steps": result.step,
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "metrics": result.metrics,
        "train_seconds": wall,
        "cpu_seconds": cpu,
        "threads": torch.get_num_threads(),
        "resumed": config.train.resume is not None,
        "spikiness": spikiness,
    }
    write_json(record, result_path(out_dir, task.name, mixer, seed))
    return record
