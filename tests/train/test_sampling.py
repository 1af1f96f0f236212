"""Global batches: the same samples on any number of ranks, exact continuation from a saved position."""

from __future__ import annotations

import itertools

import pytest
import torch

from nalaformer.train import DataPosition, GlobalBatchSampler, epoch_order, evaluation_batches
from nalaformer.train.sampling import evaluation_subset


def _steps(sampler: GlobalBatchSampler, steps: int) -> list[list[int]]:
    """Indices of each optimizer step (the rank's micro-batches joined)."""
    stream = iter(sampler)
    return [list(itertools.chain(*(next(stream) for _ in range(sampler.grad_accum)))) for _ in range(steps)]


@pytest.mark.parametrize(("world_size", "grad_accum"), [(1, 1), (1, 3), (2, 1), (2, 2), (4, 1)], ids=str)
def test_ranks_together_read_the_single_process_global_batch(world_size, grad_accum):
    single = _steps(GlobalBatchSampler(50, 12, 1, 0, 1, seed=3), 10)
    ranks = [_steps(GlobalBatchSampler(50, 12, grad_accum, r, world_size, seed=3), 10) for r in range(world_size)]
    for step in range(10):
        assert sorted(itertools.chain(*(rank[step] for rank in ranks))) == sorted(single[step])
        assert len({len(rank[step]) for rank in ranks}) == 1


def test_each_epoch_visits_distinct_samples_in_a_seeded_order():
    steps = _steps(GlobalBatchSampler(50, 12, 1, 0, 1, seed=3), 8)
    first_epoch, second_epoch = list(itertools.chain(*steps[:4])), list(itertools.chain(*steps[4:]))
    assert len(set(first_epoch)) == 48 and len(set(second_epoch)) == 48
    assert first_epoch == epoch_order(50, 3, 0)[:48].tolist()
    assert first_epoch != second_epoch
    assert torch.equal(epoch_order(50, 3, 1), epoch_order(50, 3, 1))


@pytest.mark.parametrize("start_step", [0, 3, 4, 9], ids=lambda s: f"from-step-{s}")
def test_starting_from_a_saved_position_continues_the_stream(start_step):
    full = _steps(GlobalBatchSampler(50, 12, 2, 1, 2, seed=5), 12)
    position = DataPosition()
    for _ in range(start_step):
        position.advance(50 // 12)
    resumed = _steps(GlobalBatchSampler(50, 12, 2, 1, 2, seed=5, start=position), 12 - start_step)
    assert resumed == full[start_step:]


def test_epoch_keys_carry_the_epoch():
    sampler = GlobalBatchSampler(8, 4, 1, 0, 1, seed=0, epoch_keys=True)
    batches = list(itertools.islice(iter(sampler), 3))
    assert [{epoch for epoch, _ in batch} for batch in batches] == [{0}, {0}, {1}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"global_batch_size": 10, "grad_accum": 3}, "divisible by grad_accum", id="indivisible"),
        pytest.param({"num_samples": 5}, "fewer than one global batch", id="too-small"),
    ],
)
def test_bad_batch_settings_are_rejected(kwargs, message):
    arguments = {"num_samples": 50, "global_batch_size": 12, "grad_accum": 1, "rank": 0, "world_size": 1, "seed": 0}
    with pytest.raises(ValueError, match=message):
        GlobalBatchSampler(**{**arguments, **kwargs})


@pytest.mark.parametrize(("world_size", "max_batches"), [(1, 0), (3, 0), (2, 2)], ids=str)
def test_evaluation_batches_cover_each_sample_once(world_size, max_batches):
    expected = evaluation_subset(23, max_batches * 4) if max_batches else list(range(23))
    seen = [
        i for r in range(world_size) for batch in evaluation_batches(23, 4, r, world_size, max_batches) for i in batch
    ]
    assert sorted(seen) == expected


def test_partial_evaluation_is_a_fixed_random_subset_not_a_class_sorted_prefix():
    # a validation split ordered by class (as MNIST-5k's is): 10 classes of 50 samples
    labels = [index // 50 for index in range(500)]
    batches = evaluation_batches(500, 8, 0, 1, max_batches=4)
    chosen = [i for batch in batches for i in batch]
    assert len(chosen) == len(set(chosen)) == 32 and chosen != list(range(32))
    assert len({labels[i] for i in chosen}) >= 8, "the subset must span the classes"
    assert evaluation_batches(500, 8, 0, 1, max_batches=4) == batches, "the same subset at every evaluation"
