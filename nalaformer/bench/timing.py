"""A careful timer for shared, noisy machines: warm-up, repeats, medians, and interleaved candidates.

Every candidate of a comparison is timed in the same rounds, in a rotating order, so that a slow period of the
machine (another process, frequency scaling) hits all of them; a ratio is the median over rounds of the per-round
ratio, which cancels drift that a ratio of two separate medians would keep.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one candidate: the median and the spread over the measured rounds."""

    median_s: float
    min_s: float
    max_s: float
    rounds: int
    calls_per_round: int
    samples_s: tuple[float, ...]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], object], calls: int, device: torch.device | str | None) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 5,
    warmup: int = 1,
    min_round_s: float = 0.02,
    max_calls: int = 1000,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time each candidate in ``rounds`` interleaved rounds and return its :class:`Timing`.

    Args:
        candidates: name -> a function of no argument (it runs the work; its result is discarded).
        rounds (int): measured rounds; each round times every candidate once, in an order rotated per round.
            Default: 5.
        warmup (int): untimed calls of each candidate first (allocations, one-time initialisation). Default: 1.
        min_round_s (float): a fast candidate is called several times per round so that one sample lasts at least
            this long (the count is fixed from the warm-up, the same in every round). Default: 0.02.
        max_calls (int): at most this many calls per round. Default: 1000.
        device: the device to synchronise (CUDA) around each sample. Default: None (CPU).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not candidates:
        raise ValueError("candidates must hold at least one function")
    names = list(candidates)
    calls: dict[str, int] = {}
    for name in names:
        for _ in range(max(warmup - 1, 0)):
            candidates[name]()
        # the last warm-up call doubles as the calibration of the number of calls per round
        first = _time_calls(candidates[name], 1, device) if warmup else min_round_s
        calls[name] = int(min(max_calls, max(1, round(min_round_s / max(first, 1e-9)))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_time_calls(candidates[name], calls[name], device))
    return {
        name: Timing(
            median_s=statistics.median(values),
            min_s=min(values),
            max_s=max(values),
            rounds=rounds,
            calls_per_round=calls[name],
            samples_s=tuple(values),
        )
        for name, values in samples.items()
    }


# the name suffix of a benchmark's torch.compile rows (beside the eager rows of the same name, which stay the reference)
COMPILED = "+compile"


def first_calls_seconds(fn: Callable[[], object], calls: int, device: torch.device | str | None = None) -> float:
    """Seconds of the first ``calls`` calls of a freshly compiled ``fn``: its compilation (and any recompilation on
    the next calls), timed apart from the interleaved rounds. Run before :func:`time_interleaved`, whose warm-up then
    finds it compiled."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return time.perf_counter() - started


def paired_ratio(reference: Timing, candidate: Timing) -> float:
    """Median over rounds of ``reference / candidate`` (how many times faster the candidate is than the reference)."""
    if reference.rounds != candidate.rounds:
        raise ValueError(f"timings from different runs: {reference.rounds} and {candidate.rounds} rounds")
    return statistics.median(r / c for r, c in zip(reference.samples_s, candidate.samples_s))


def at_threads(fn: Callable[[], object], threads: int | None) -> Callable[[], object]:
    """``fn`` run with ``threads`` intra-op threads (``None``: as set), so that one interleaved timing can compare
    thread counts in the same rounds. The setting is left in place: every candidate sets its own before it runs."""
    if threads is None:
        return fn

    def call() -> object:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return fn()

    return call


def thread_counts(threads: Sequence[int] | None) -> list[int | None]:
    """The thread counts of a model suite, checked: ``None`` or empty means one count, the current setting."""
    if not threads:
        return [None]
    counts = list(dict.fromkeys(int(n) for n in threads))
    if any(n < 1 for n in counts):
        raise ValueError(f"thread counts must be >= 1, got {list(threads)}")
    return counts
