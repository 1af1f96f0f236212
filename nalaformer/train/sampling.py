"""Which samples each rank reads at each step: global batches that resume exactly and split over ranks.

Epoch ``e`` visits the training set in the order of a permutation seeded by ``(seed, e)``. Optimizer step ``b`` of the
epoch takes the global batch ``order[b * G : (b + 1) * G]`` (``G`` = global batch size; the incomplete tail is
dropped). Rank ``r`` of ``W`` reads the ``r``-th of ``W`` equal slices of it, cut into ``grad_accum`` micro-batches.
The union over ranks is the same global batch whatever ``W`` is, and the position ``(epoch, batch)`` is all a
checkpoint needs to continue exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DataPosition:
    """Progress through the training data: the epoch and the number of global batches taken in it."""

    epoch: int = 0
    batch: int = 0

    def advance(self, batches_per_epoch: int) -> None:
        """Move past one global batch."""
        self.batch += 1
        if self.batch == batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """``int64 [num_samples]``: the visiting order of epoch ``epoch`` (a permutation seeded by ``(seed, epoch)``)."""
    if not shuffle:
        return torch.arange(num_samples)
    derived = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(derived))


class GlobalBatchSampler:
    """Batch sampler (``DataLoader(batch_sampler=...)``) yielding this rank's micro-batches, step after step, forever.

    Args:
        num_samples: training-set size (>= global_batch_size).
        global_batch_size: samples per optimizer step over all ranks and micro-steps.
        grad_accum: micro-batches per optimizer step.
        rank: this process's rank; ``world_size``: number of processes (must divide the per-micro-step batch).
        world_size: number of processes.
        seed: seed of the epoch permutations.
        start: where to begin (a resumed run's saved position); default the start of epoch 0.
        shuffle: permute each epoch; default True.
        epoch_keys: yield ``(epoch, index)`` pairs instead of plain indices, for datasets whose augmentation is seeded
            by the epoch (``accepts_epoch_index``); default False.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
        start: DataPosition | None = None,
        shuffle: bool = True,
        epoch_keys: bool = False,
    ) -> None:
        if global_batch_size % (grad_accum * world_size):
            raise ValueError(
                f"batch_size={global_batch_size} must be divisible by grad_accum ({grad_accum}) x world size "
                f"({world_size}) = {grad_accum * world_size}"
            )
        if num_samples < global_batch_size:
            raise ValueError(
                f"the training set has {num_samples} samples, fewer than one global batch (batch_size="
                f"{global_batch_size}); lower batch_size"
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start = DataPosition(**vars(start)) if start is not None else DataPosition()
        self.shuffle = shuffle
        self.epoch_keys = epoch_keys

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    @property
    def micro_batch_size(self) -> int:
        """Samples per micro-batch on one rank."""
        return self.global_batch_size // (self.grad_accum * self.world_size)

    def __iter__(self) -> Iterator[list]:
        epoch, batch = self.start.epoch, self.start.batch
        per_rank = self.global_batch_size // self.world_size
        micro = self.micro_batch_size
        while True:
            order = epoch_order(self.num_samples, self.seed, epoch, self.shuffle)
            for step in range(batch, self.batches_per_epoch):
                first = step * self.global_batch_size + self.rank * per_rank
                mine = order[first : first + per_rank].tolist()
                for part in range(self.grad_accum):
                    indices = mine[part * micro : (part + 1) * micro]
                    yield [(epoch, i) for i in indices] if self.epoch_keys else indices
            epoch, batch = epoch + 1, 0


# Seed of the evaluation subset: fixed, so partial evaluations of any run (any training seed) see the same samples.
EVAL_SUBSET_SEED = 20_250_626


def evaluation_subset(num_samples: int, size: int) -> list[int]:
    """``size`` sample indices of an evaluation set of ``num_samples``, drawn by a fixed seeded permutation and
    sorted: the same subset at every evaluation of every run. (A prefix would be biased: validation splits are
    often ordered by class.)"""
    if size >= num_samples:
        return list(range(num_samples))
    return sorted(epoch_order(num_samples, EVAL_SUBSET_SEED, 0)[:size].tolist())


def evaluation_batches(num_samples: int, batch_size: int, rank: int, world_size: int, max_batches: int = 0) -> list:
    """This rank's evaluation batches: every ``world_size``-th sample from ``rank`` on, ``batch_size`` at a time.

    Args:
        num_samples: evaluation-set size.
        batch_size: samples per batch (> 0).
        rank: this process's rank.
        world_size: number of processes.
        max_batches: evaluate only ``max_batches * batch_size`` samples, the fixed random subset of
            :func:`evaluation_subset` (0: all of them); the subset does not depend on the number of processes.
    """
    chosen = evaluation_subset(num_samples, max_batches * batch_size) if max_batches else list(range(num_samples))
    mine = chosen[rank::world_size]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
