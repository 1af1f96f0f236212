"""What the reproduction study runs in each mode: tasks, mixers, model sizes, steps and seeds.

Every task trains every listed mixer with the same model, data, optimiser, steps and seeds, so the runs differ only in
the token mixer (all mixers share one block, see ``nalaformer.layers``; their parameter counts differ by < 2%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES = ("tiny", "quick", "full")

# The paper's Table-5 ablation path in our registry: ReLU + constant power -> + sign split -> + norm-aware power.
ABLATION_PATH = ("relu_power", "sign_split_power", "nala")


@dataclass(frozen=True)
class TaskPlan:
    """One task of the study.

    Attributes:
        name: ``"image"``, ``"mqar"`` or ``"lm"``.
        mixers: registry names trained on it.
        steps: optimiser steps per run.
        batch_size: global batch size.
        lr: peak learning rate.
        model: model keyword arguments (image: the ``nalaformer_nano`` options; LM: width / layers / heads).
        data: data settings (dataset name, block size, MQAR sizes ...).
        metric: the headline validation metric (``"val_accuracy"`` or ``"val_loss"``) and whether higher is better.
    """

    name: str
    mixers: tuple[str, ...]
    steps: int
    batch_size: int
    lr: float
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_accuracy"
    higher_is_better: bool = True


@dataclass(frozen=True)
class StudyPlan:
    """A whole study: its tasks, seeds, and the sizes of the spikiness and efficiency sections (operators at
    ``bench_lengths`` tokens; the ``vision_variant`` backbone's inference at ``vision_sizes`` pixels square)."""

    mode: str
    tasks: tuple[TaskPlan, ...]
    seeds: tuple[int, ...]
    diagnostic_queries: int
    bench_lengths: tuple[int, ...]
    bench_repeats: int
    vision_variant: str = "nalaformer_xt"
    vision_sizes: tuple[int, ...] = (224, 512)

    def jobs(self) -> list[tuple[TaskPlan, str, int]]:
        """Every (task, mixer, seed) training run, interleaving tasks so partial results cover all of them."""
        runs = []
        for seed in self.seeds:
            longest = max(len(t.mixers) for t in self.tasks)
            for index in range(longest):
                runs.extend((t, t.mixers[index], seed) for t in self.tasks if index < len(t.mixers))
        return runs


# NaLa with a norm temperature, trained beside NaLa and its constant-power ablation on every task and in every mode
# but tiny (nalaformer.layers.NaLaFeatureMap explains the options): the running temperature, which keeps the exponent
# out of saturation by construction, and the learned one, which training can drive back into saturation
NORM_VARIANTS = ("nala_running_t", "nala_learned_t")

_IMAGE_QUICK = ("softmax", "elu", "relu", *ABLATION_PATH, *NORM_VARIANTS, "nala_cosine")
_IMAGE_FULL = ("softmax", "elu", "relu", *ABLATION_PATH, *NORM_VARIANTS, "nala_cosine")
_IMAGE_FULL = (*_IMAGE_FULL, "flatten", "polaformer", "cosformer")
_CAUSAL_QUICK = ("softmax", "elu", "sign_split_power", "nala", *NORM_VARIANTS, "deltanet", "nala_deltanet")
_CAUSAL_FULL = (
    "softmax",
    "elu",
    "relu",
    *ABLATION_PATH,
    *NORM_VARIANTS,
    "deltanet",
    "nala_deltanet",
    "gated_deltanet",
    "nala_gated_deltanet",
)
_SMALL_IMAGE_MODEL = {"embed_dims": [16, 32, 64], "depths": [1, 1, 1], "num_heads": [1, 2, 4]}
_SMALL_LM = {"hidden_size": 32, "num_layers": 1, "num_heads": 2}
_LM = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}
# One MQAR data setting in every mode but tiny: softmax attention solves it (val accuracy 1.0) in 600 steps, the
# linear mixers need about 1,500.
_MQAR_DATA = {"block_size": 32, "mqar_vocab": 32, "mqar_pairs": 4}


def _image_task(mode: str) -> TaskPlan:
    """Image classification: the small NaLaFormer backbone on MNIST (quick), Fashion-MNIST (full), digits (tiny)."""
    if mode == "tiny":
        return TaskPlan(
            name="image",
            mixers=("softmax", "nala"),
            steps=3,
            batch_size=16,
            lr=2e-3,
            model=_SMALL_IMAGE_MODEL,
            data={"name": "digits", "val_fraction": 0.2},
        )
    quick = mode == "quick"
    return TaskPlan(
        name="image",
        mixers=_IMAGE_QUICK if quick else _IMAGE_FULL,
        steps=150 if quick else 800,
        batch_size=64,
        lr=3e-3 if quick else 2e-3,
        model=_SMALL_IMAGE_MODEL,
        data={"name": "mnist"} if quick else {"name": "fashion-mnist"},
    )


def _mqar_task(mode: str) -> TaskPlan:
    """Multi-query associative recall (4 key-value pairs, 32 tokens): the causal mixers' recall."""
    if mode == "tiny":
        data = {**_MQAR_DATA, "mqar_train_examples": 64, "mqar_val_examples": 32}
        return TaskPlan(
            name="mqar", mixers=("softmax", "nala"), steps=3, batch_size=16, lr=2e-3, model=_SMALL_LM, data=data
        )
    quick = mode == "quick"
    return TaskPlan(
        name="mqar",
        mixers=_CAUSAL_QUICK if quick else _CAUSAL_FULL,
        steps=600 if quick else 1500,
        batch_size=64,
        lr=3e-3,
        model=_LM,
        data={
            **_MQAR_DATA,
            "mqar_train_examples": 20_000 if quick else 50_000,
            "mqar_val_examples": 256 if quick else 512,
        },
    )


def _lm_task(mode: str) -> TaskPlan:
    """Character-level language modelling on Shakespeare (validation loss, lower is better)."""
    data = {"name": "shakespeare", "block_size": 32 if mode == "tiny" else 128}
    common = {"name": "lm", "data": data, "metric": "val_loss", "higher_is_better": False}
    if mode == "tiny":
        return TaskPlan(mixers=("softmax", "nala"), steps=3, batch_size=8, lr=2e-3, model=_SMALL_LM, **common)
    quick = mode == "quick"
    return TaskPlan(
        mixers=_CAUSAL_QUICK if quick else _CAUSAL_FULL,
        steps=150 if quick else 600,
        batch_size=32,
        lr=3e-3 if quick else 2e-3,
        model=_LM if quick else {**_LM, "hidden_size": 128},
        **common,
    )


def study_plan(mode: str) -> StudyPlan:
    """The plan of ``mode``: ``"quick"`` (the README's ``make demo``, about 6 minutes on 2 CPU cores), ``"full"``
    (hours: more mixers, longer runs, 3 seeds) or ``"tiny"`` (seconds; for tests)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    # Measured on 2 cores: quick mode's runs take 18-65 CPU seconds each (about 6 minutes in all with the
    # efficiency section); full mode's 77-278 each (2 hours).
    tasks = (_image_task(mode), _mqar_task(mode), _lm_task(mode))
    if mode == "tiny":
        return StudyPlan(
            mode=mode,
            tasks=tasks,
            seeds=(0,),
            diagnostic_queries=32,
            bench_lengths=(64, 128),
            bench_repeats=1,
            vision_variant="nalaformer_nano",
            vision_sizes=(32, 64),
        )
    if mode == "quick":
        return StudyPlan(
            mode=mode,
            tasks=tasks,
            seeds=(0,),
            diagnostic_queries=128,
            bench_lengths=(256, 1024, 4096),
            bench_repeats=3,
        )
    return StudyPlan(
        mode=mode,
        tasks=tasks,
        seeds=(0, 1, 2),
        diagnostic_queries=256,
        bench_lengths=(256, 1024, 4096, 16384),
        bench_repeats=5,
        vision_variant="nalaformer_t",
        vision_sizes=(224, 512, 1024),
    )
