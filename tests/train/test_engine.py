"""The training loop: against a plain PyTorch reference loop, exact resume, accumulation, non-finite losses, bf16,
evaluation weighting and the run folder."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import Dataset, TensorDataset

from nalaformer.train import (
    NonFiniteLossError,
    TrainConfig,
    WarmupCosine,
    epoch_order,
    evaluate,
    list_checkpoints,
    parameter_groups,
    read_metrics,
    train,
    verify_checkpoint,
)
from tests.train.standins import NoisyToyData, classification_loss, mlp, toy_data


def quiet(**overrides) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=5e-3, warmup_steps=3, progress=False, log_every=2)
    return TrainConfig(**{**base, **overrides})


def test_matches_plain_pytorch_reference_loop():
    """Same batches, AdamW groups, warm-up + cosine and clipping written out by hand give the same weights."""
    data = toy_data()
    config = quiet(steps=9, grad_clip=0.5, weight_decay=0.1, min_lr_ratio=0.2)
    result = train(mlp(dropout=0.0), data, classification_loss, config)

    model = mlp(dropout=0.0)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=config.lr, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(3, 9, 0.2))
    per_epoch = len(data) // config.batch_size
    for step in range(config.steps):
        order = epoch_order(len(data), config.seed, step // per_epoch)
        first = (step % per_epoch) * config.batch_size
        x, y = data[order[first : first + config.batch_size]]
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    for (name, ours), reference in zip(result.model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7, msg=name)


def test_gradient_accumulation_equals_one_big_batch():
    data = toy_data()
    one = train(mlp(dropout=0.0), data, classification_loss, quiet(steps=6, grad_accum=1))
    four = train(mlp(dropout=0.0), data, classification_loss, quiet(steps=6, grad_accum=4))
    for name, tensor in one.model.state_dict().items():
        torch.testing.assert_close(four.model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def _resumable_run(run_dir, *, crash_after_calls: int | None = None, resume: str | None = None):
    calls = itertools.count(1)

    def loss_fn(model, batch):
        if crash_after_calls is not None and next(calls) > crash_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        return classification_loss(model, batch)

    config = quiet(
        steps=12,
        grad_accum=2,
        ema_decay=0.8,
        checkpoint_every=6,
        eval_every=6,
        run_dir=str(run_dir),
        resume=resume,
    )
    data = NoisyToyData(toy_data())
    return train(mlp(), data, loss_fn, config, val_data=toy_data(16, seed=1), eval_fn=lambda m, b: {"n": 1.0})


def test_resume_is_bitwise_exact(tmp_path):
    """12 steps straight equal 6 steps, an abrupt stop, and 6 resumed steps (dropout, EMA, accumulation, noise)."""
    straight = _resumable_run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        # 6 steps x 2 micro-batches, then the 13th loss call dies after the step-6 checkpoint was written.
        _resumable_run(tmp_path / "resumed", crash_after_calls=12)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step_00000006"]
    resumed = _resumable_run(tmp_path / "resumed", resume="auto")

    assert resumed.step == straight.step == 12
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    for name, tensor in straight.ema_model.state_dict().items():
        assert torch.equal(resumed.ema_model.state_dict()[name], tensor), f"ema {name}"
    final_a = load_file(str(straight.checkpoint / "model.safetensors"))
    final_b = load_file(str(resumed.checkpoint / "model.safetensors"))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    train_steps = [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if r["split"] == "train"]
    assert train_steps == list(range(2, 13, 2)), "resumed metrics must continue without duplicated steps"


def test_resumed_run_logs_the_same_training_means_as_an_uninterrupted_one(tmp_path):
    """Checkpoints every 3 steps and logs every 2: the step-3 checkpoint cuts a logging interval in two."""

    def run(run_dir, crash_after_calls=None, resume=None):
        calls = itertools.count(1)

        def loss_fn(model, batch):
            if crash_after_calls is not None and next(calls) > crash_after_calls:
                raise KeyboardInterrupt("simulated interruption")
            return classification_loss(model, batch)

        config = quiet(steps=6, checkpoint_every=3, log_every=2, run_dir=str(run_dir), resume=resume)
        return train(mlp(), toy_data(), loss_fn, config)

    def logged(run_dir):
        records = read_metrics(run_dir / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k != "samples_per_second"} for r in records if r["split"] == "train"]

    run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt, match="interrupted during step 5 of 6"):
        run(tmp_path / "cut", crash_after_calls=4)
    run(tmp_path / "cut", resume="auto")
    assert [r["step"] for r in logged(tmp_path / "cut")] == [2, 4, 6]
    assert logged(tmp_path / "cut") == logged(tmp_path / "straight")


def test_resume_rejects_a_different_global_batch(tmp_path):
    _resumable_run(tmp_path / "run")
    config = quiet(steps=14, batch_size=16, run_dir=str(tmp_path / "run"), resume="auto")
    with pytest.raises(ValueError, match="batch_size=16 differs from the checkpoint's 8"):
        train(mlp(), toy_data(), classification_loss, config)


class PoisonedData(Dataset):
    """Sample ``poisoned`` has a NaN feature, so any batch holding it has a NaN loss."""

    def __init__(self, base: TensorDataset, poisoned: int) -> None:
        self.base, self.poisoned = base, poisoned

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        return (torch.full_like(x, float("nan")) if index == self.poisoned else x), y


def _poisoned_steps(num_samples: int, batch_size: int, steps: int, poisoned: int) -> list[int]:
    per_epoch = num_samples // batch_size
    found = []
    for step in range(steps):
        order = epoch_order(num_samples, 0, step // per_epoch)
        first = (step % per_epoch) * batch_size
        if poisoned in order[first : first + batch_size].tolist():
            found.append(step + 1)
    return found


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    data = PoisonedData(toy_data(), poisoned=5)
    bad_step = _poisoned_steps(len(data), 8, 12, poisoned=5)[0]
    config = quiet(steps=12, checkpoint_every=1, run_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match=rf"at step {bad_step};") as info:
        train(mlp(), data, classification_loss, config)
    assert info.value.step == bad_step
    if bad_step > 1:
        last = list_checkpoints(tmp_path / "checkpoints")[-1]
        assert last.name == f"step_{bad_step - 1:08d}" and info.value.checkpoint == last
        verify_checkpoint(last)
        assert all(torch.isfinite(t).all() for t in load_file(str(last / "model.safetensors")).values())
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "nonfinite"]
    assert [e["step"] for e in events] == [bad_step]


def test_skip_nonfinite_skips_exactly_the_poisoned_steps():
    data = PoisonedData(toy_data(), poisoned=5)
    expected = _poisoned_steps(len(data), 8, 12, poisoned=5)
    result = train(mlp(), data, classification_loss, quiet(steps=12, skip_nonfinite=True))
    assert result.step == 12 and result.skipped_steps == len(expected) > 0
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert [r["step"] for r in result.history if r.get("event") == "nonfinite"] == expected


def test_bf16_autocast_runs_the_forward_in_bfloat16():
    seen = []

    def loss_fn(model, batch):
        x, y = batch
        logits = model(x)
        seen.append(logits.dtype)
        return F.cross_entropy(logits.float(), y), {}

    result = train(mlp(), toy_data(), loss_fn, quiet(steps=3, precision="bf16"))
    assert seen == [torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert math.isfinite(result.metrics["train_loss"])


def test_evaluate_weights_batches_by_the_weight_entry():
    values = torch.arange(10, dtype=torch.float32)
    data = TensorDataset(values)

    def eval_fn(model, batch):
        (x,) = batch
        positive = x > 2
        return {"mean_of_positive": x[positive].sum() / positive.sum().clamp_min(1), "weight": positive.sum()}

    metrics = evaluate(torch.nn.Linear(1, 1), data, eval_fn, batch_size=4)
    assert metrics["mean_of_positive"] == pytest.approx(float(values[values > 2].mean()))


def test_run_folder_holds_config_metrics_and_the_newest_checkpoints(tmp_path):
    config = quiet(steps=8, checkpoint_every=2, keep_checkpoints=2, eval_every=4, run_dir=str(tmp_path))
    result = train(
        mlp(), toy_data(), classification_loss, config, val_data=toy_data(16, seed=1), run_config={"note": "x"}
    )
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["note"] == "x" and saved["run"]["world_size"] == 1 and saved["run"]["parameters"] > 0
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000006", "step_00000008"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "val"] == [4, 8]
    assert {"loss", "accuracy", "lr", "grad_norm", "samples_per_second"} <= set(records[0])
    assert result.metrics["val_accuracy"] == records[-1]["accuracy"]


def test_training_learns_the_toy_problem():
    data = toy_data(96)
    result = train(mlp(dropout=0.0), data, classification_loss, quiet(steps=60, lr=2e-2), val_data=data)
    assert result.metrics["val_accuracy"] > 0.8


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"loss_fn": lambda m, b: (1.0, {})}, TypeError, "loss_fn must return", id="float-loss"),
        pytest.param({"config": quiet(batch_size=64)}, ValueError, "fewer than one global batch", id="batch-too-big"),
        pytest.param({"model": "mlp"}, TypeError, "model must be an nn.Module", id="not-a-module"),
    ],
)
def test_bad_arguments_are_rejected_before_training(kwargs, error, message):
    arguments = {"model": mlp(), "train_data": toy_data(), "loss_fn": classification_loss, "config": quiet()}
    with pytest.raises(error, match=message):
        train(**{**arguments, **kwargs})
