"""Model throughput: NaLaFormer images/s per mixer layout and resolution, and LM training tokens/s per mixer.

Vision: ``nalaformer_t`` (or another variant) with the released hybrid layout (NaLa in stages 1-2, softmax in 3-4),
all-NaLa and all-softmax, at each resolution, in inference (``no_grad``, eval) and as a train step (forward,
cross-entropy, backward, AdamW step). The layouts (and thread counts) of one resolution and pass are timed interleaved,
so every ratio comes from the same rounds. A configuration whose first call already exceeds ``budget_s`` is reported
from that one call; a train step is skipped when the inference call alone exceeded the budget (its note says so).

Language: one causal LM per mixer, built from a named preset (same width, depth and heads; only the token mixer
differs), a train step on random tokens, reported as tokens/s, all mixers and thread counts interleaved.

Every row names its ``threads``; with several thread counts, ``speedup_vs_1_thread`` compares a row with the same
configuration on one thread, measured in the same rounds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nalaformer.bench.timing import Timing, at_threads, paired_ratio, synchronize, thread_counts, time_interleaved


@dataclass(frozen=True)
class VisionSettings:
    """Attributes: ``variant`` (a ``nalaformer.models`` entrypoint name), ``layouts``, ``sizes`` (square inputs of the
    inference pass), ``train_sizes`` (of the train pass; default: ``sizes``), ``batch`` per size (default 1),
    ``passes`` (``"inference"``, ``"train"``), ``threads`` (thread counts timed side by side; default: the current
    setting), ``rounds``, ``budget_s``, ``device``."""

    variant: str = "nalaformer_t"
    layouts: Sequence[str] = ("released", "nala", "softmax")
    sizes: Sequence[int] = (224, 512, 1024)
    train_sizes: Sequence[int] | None = None
    batch: dict[int, int] | None = None
    passes: Sequence[str] = ("inference", "train")
    threads: Sequence[int] | None = None
    rounds: int = 3
    budget_s: float = 60.0
    device: torch.device | str = "cpu"


def train_step(model: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor]) -> Callable[[], None]:
    """The train step every suite times: ``model`` in train mode, one call = zero the gradients, ``loss(model)``,
    backward, an AdamW step (lr 1e-4; its state is made on the first call, so that call is the warm-up's)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model).backward()
        optimizer.step()

    return step


def _vision_calls(model: torch.nn.Module, images: torch.Tensor, pass_name: str) -> Callable[[], object]:
    if pass_name == "inference":
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                model(images)

        return infer
    labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    return train_step(model, lambda m: F.cross_entropy(m(images), labels))


def _timed_once(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _key(name: str, threads: int | None) -> str:
    return name if threads is None else f"{name} @{threads}"


def _ratio(timings: dict[str, Timing], reference: str, candidate: str) -> float:
    if reference not in timings or candidate not in timings:
        return math.nan
    return paired_ratio(timings[reference], timings[candidate])


def _thread_ratio(timings: dict[str, Timing], name: str, threads: int | None, counts: list[int | None]) -> float:
    """How many times faster ``name`` runs on ``threads`` than on one thread (nan without a one-thread row)."""
    if threads is None or 1 not in counts:
        return math.nan
    return _ratio(timings, _key(name, 1), _key(name, threads))


def run_vision(settings: VisionSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows ``variant, layout, size, batch, pass, threads, median_ms, images_per_s, speedup_vs_softmax,
    speedup_vs_1_thread, rounds, note``."""
    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    if settings.variant not in ENTRYPOINTS:
        raise ValueError(f"variant must be one of {sorted(ENTRYPOINTS)}, got {settings.variant!r}")
    counts = thread_counts(settings.threads)
    initial_threads = torch.get_num_threads()
    train_sizes = settings.sizes if settings.train_sizes is None else settings.train_sizes
    rows: list[dict[str, Any]] = []
    try:
        for size in dict.fromkeys([*settings.sizes, *train_sizes]):
            batch = (settings.batch or {}).get(size, 1)
            images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(settings.device)
            over_budget: set[str] = set()
            for pass_name in settings.passes:
                if size not in (train_sizes if pass_name == "train" else settings.sizes):
                    continue
                rows += _vision_pass(settings, size, batch, images, pass_name, counts, over_budget, progress)
    finally:
        torch.set_num_threads(initial_threads)
    return rows


def _vision_pass(
    settings: VisionSettings,
    size: int,
    batch: int,
    images: torch.Tensor,
    pass_name: str,
    counts: list[int | None],
    over_budget: set[str],
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """Time every layout and thread count of one size and pass in the same rounds."""
    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    calls: dict[str, Callable[[], object]] = {}
    single: dict[str, float] = {}
    notes: dict[str, str] = {}
    for layout in settings.layouts:
        torch.manual_seed(0)
        model = None
        for threads in counts:
            key = _key(layout, threads)
            if pass_name == "train" and key in over_budget:
                notes[key] = f"skipped: inference alone took more than {settings.budget_s:.0f} s"
                continue
            if model is None:
                model = ENTRYPOINTS[settings.variant](mixers=layout).to(settings.device)
            call = at_threads(_vision_calls(model, images, pass_name), threads)
            if progress:
                progress(f"vision: {key} {size}x{size} {pass_name} (first call)")
            first = _timed_once(call, settings.device)
            if first > settings.budget_s:
                single[key] = first
                notes[key] = f"one call (over the {settings.budget_s:.0f} s budget)"
                over_budget.add(key)
            else:
                calls[key] = call
    if progress and calls:
        progress(f"vision: {size}x{size} {pass_name}: timing {', '.join(calls)}")
    timings = time_interleaved(calls, rounds=settings.rounds, warmup=0, device=settings.device) if calls else {}
    rows = []
    for layout in settings.layouts:
        for threads in counts:
            key = _key(layout, threads)
            seconds = timings[key].median_s if key in timings else single.get(key, math.nan)
            reference = _key("softmax", threads)
            speedup = _ratio(timings, reference, key)
            if math.isnan(speedup) and not math.isnan(seconds) and (reference in single or reference in timings):
                speedup = (single.get(reference) or timings[reference].median_s) / seconds
            rows.append(
                {
                    "variant": settings.variant,
                    "layout": layout,
                    "size": size,
                    "batch": batch,
                    "pass": pass_name,
                    "threads": torch.get_num_threads() if threads is None else threads,
                    "median_ms": 1e3 * seconds,
                    "images_per_s": batch / seconds,
                    "speedup_vs_softmax": speedup,
                    "speedup_vs_1_thread": _thread_ratio(timings, layout, threads, counts),
                    "rounds": timings[key].rounds if key in timings else int(key in single),
                    "note": notes.get(key, ""),
                }
            )
    return rows


@dataclass(frozen=True)
class LanguageSettings:
    """Attributes: ``mixers`` (default: NaLa and softmax), ``seq_lens``, ``batch`` per length (default:
    :data:`TOKENS_PER_STEP` tokens per step, at least one sequence), ``preset`` (a ``NaLaConfig`` preset: the model's
    width, depth, heads and MLP) with a ``vocab_size`` override (byte-sized by default, so the output head does not
    dominate), ``threads``, ``rounds``, ``device``, ``min_round_s``."""

    mixers: Sequence[str] = ("nala", "softmax")
    seq_lens: Sequence[int] = (1024, 8192)
    batch: dict[int, int] | None = None
    preset: str = "small"
    vocab_size: int = 256
    threads: Sequence[int] | None = None
    rounds: int = 3
    device: torch.device | str = "cpu"
    min_round_s: float = 0.02


def causal_mixers() -> list[str]:
    """Registered mixers that have a causal form."""
    from nalaformer.layers.registry import attention_spec, list_attentions

    return [name for name in list_attentions() if attention_spec(name).causal]


def build_preset_lm(mixer: str, preset: str, vocab_size: int, max_len: int, device: torch.device | str) -> Any:
    """A randomly initialised ``NaLaForCausalLM`` of a named preset with ``mixer`` in every layer (seeded, on
    ``device``): the one model definition the decoding and language suites share."""
    from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

    config = NaLaConfig.from_preset(preset, vocab_size=vocab_size, mixer=mixer, max_position_embeddings=max_len)
    torch.manual_seed(0)
    return NaLaForCausalLM(config).to(device)


# tokens per LM train step of the language and ceiling suites (a batch of 2 at 1024 tokens, 1 at 8192)
TOKENS_PER_STEP = 2048


def lm_tokens(seq_len: int, vocab_size: int, device: torch.device | str, batch: int | None = None) -> torch.Tensor:
    """The language suite's training batch: ``batch`` sequences of ``seq_len`` random tokens (default:
    :data:`TOKENS_PER_STEP` tokens per step, at least one sequence), seed 0, on ``device``."""
    batch = max(1, TOKENS_PER_STEP // seq_len) if batch is None else batch
    tokens = torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    return tokens.to(device)


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The language suite's loss: next-token cross-entropy of ``tokens`` on themselves, no cache."""
    return model(input_ids=tokens, labels=tokens, use_cache=False).loss


def run_language(settings: LanguageSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows ``mixer, seq_len, batch, threads, median_ms, tokens_per_s, speedup_vs_softmax, speedup_vs_1_thread``:
    one train step (forward, loss, backward, AdamW) per call."""
    counts = thread_counts(settings.threads)
    initial_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        for seq_len in settings.seq_lens:
            tokens = lm_tokens(seq_len, settings.vocab_size, settings.device, (settings.batch or {}).get(seq_len))
            batch = tokens.shape[0]
            calls: dict[str, Callable[[], object]] = {}
            for mixer in settings.mixers:
                model = build_preset_lm(mixer, settings.preset, settings.vocab_size, seq_len, settings.device)
                step = train_step(model, lambda m, tokens=tokens: lm_loss(m, tokens))
                for threads in counts:
                    calls[_key(mixer, threads)] = at_threads(step, threads)
            if progress:
                progress(f"language: train steps of {', '.join(calls)} at {batch}x{seq_len} tokens")
            timings = time_interleaved(
                calls, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device
            )
            for mixer in settings.mixers:
                for threads in counts:
                    timing = timings[_key(mixer, threads)]
                    rows.append(
                        {
                            "mixer": mixer,
                            "seq_len": seq_len,
                            "batch": batch,
                            "threads": torch.get_num_threads() if threads is None else threads,
                            "median_ms": 1e3 * timing.median_s,
                            "tokens_per_s": batch * seq_len / timing.median_s,
                            "speedup_vs_softmax": _ratio(timings, _key("softmax", threads), _key(mixer, threads)),
                            "speedup_vs_1_thread": _thread_ratio(timings, mixer, threads, counts),
                        }
                    )
            del calls, timings
    finally:
        torch.set_num_threads(initial_threads)
    return rows
