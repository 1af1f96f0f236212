"""Model throughput: NaLaFormer images/s per mixer layout and resolution, and LM training tokens/s per mixer.

Vision: ``nalaformer_t`` (or another variant) with the released hybrid layout (NaLa in stages 1-2, softmax in 3-4),
all-NaLa and all-softmax, at each resolution, in inference (``no_grad``, eval) and as a train step (forward,
cross-entropy, backward, AdamW step). The layouts of one resolution and pass are timed interleaved. A configuration
whose first call already exceeds ``budget_s`` is reported from that one call; a train step is skipped when the
inference call alone exceeded the budget (its note says so).

Language: one causal LM per mixer (same width, depth and heads; only the token mixer differs), a train step on
random tokens, reported as tokens/s, all mixers interleaved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nalaformer.bench.timing import paired_ratio, synchronize, time_interleaved


@dataclass(frozen=True)
class VisionSettings:
    """Attributes: ``variant`` (a ``nalaformer.models`` entrypoint name), ``layouts``, ``sizes`` (square inputs),
    ``batch`` per size (default 1), ``passes`` (``"inference"``, ``"train"``), ``rounds``, ``budget_s``, ``device``."""

    variant: str = "nalaformer_t"
    layouts: Sequence[str] = ("released", "nala", "softmax")
    sizes: Sequence[int] = (224, 512, 1024)
    batch: dict[int, int] | None = None
    passes: Sequence[str] = ("inference", "train")
    rounds: int = 3
    budget_s: float = 60.0
    device: torch.device | str = "cpu"


def _vision_calls(model: torch.nn.Module, images: torch.Tensor, pass_name: str) -> Callable[[], object]:
    if pass_name == "inference":
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                model(images)

        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return train_step


def _timed_once(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def run_vision(settings: VisionSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows ``variant, layout, size, batch, pass, median_ms, images_per_s, speedup_vs_softmax, rounds, note``."""
    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    if settings.variant not in ENTRYPOINTS:
        raise ValueError(f"variant must be one of {sorted(ENTRYPOINTS)}, got {settings.variant!r}")
    rows: list[dict[str, Any]] = []
    for size in settings.sizes:
        batch = (settings.batch or {}).get(size, 1)
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(settings.device)
        over_budget: set[str] = set()
        for pass_name in settings.passes:
            calls: dict[str, Callable[[], object]] = {}
            single: dict[str, float] = {}
            notes: dict[str, str] = {}
            for layout in settings.layouts:
                if pass_name == "train" and layout in over_budget:
                    notes[layout] = f"skipped: inference alone took more than {settings.budget_s:.0f} s"
                    continue
                torch.manual_seed(0)
                model = ENTRYPOINTS[settings.variant](mixers=layout).to(settings.device)
                call = _vision_calls(model, images, pass_name)
                if progress:
                    progress(f"vision: {layout} {size}x{size} {pass_name} (first call)")
                first = _timed_once(call, settings.device)
                if first > settings.budget_s:
                    single[layout] = first
                    notes[layout] = f"one call (over the {settings.budget_s:.0f} s budget)"
                    over_budget.add(layout)
                else:
                    calls[layout] = call
            if progress and calls:
                progress(f"vision: {size}x{size} {pass_name}: timing {', '.join(calls)}")
            timings = time_interleaved(calls, rounds=settings.rounds, warmup=0, device=settings.device) if calls else {}
            for layout in settings.layouts:
                seconds = timings[layout].median_s if layout in timings else single.get(layout, math.nan)
                speedup = math.nan
                if layout in timings and "softmax" in timings:
                    speedup = paired_ratio(timings["softmax"], timings[layout])
                elif not math.isnan(seconds) and "softmax" in single:
                    speedup = single["softmax"] / seconds
                rows.append(
                    {
                        "variant": settings.variant,
                        "layout": layout,
                        "size": size,
                        "batch": batch,
                        "pass": pass_name,
                        "median_ms": 1e3 * seconds,
                        "images_per_s": batch / seconds,
                        "speedup_vs_softmax": speedup,
                        "rounds": timings[layout].rounds if layout in timings else int(layout in single),
                        "note": notes.get(layout, ""),
                    }
                )
            del calls, timings
    return rows


@dataclass(frozen=True)
class LanguageSettings:
    """Attributes: ``mixers`` (default: every causal mixer in the registry), ``seq_len``, ``batch``, model size
    (``hidden_size``, ``num_layers``, ``num_heads``, ``vocab_size``; default: the ``"small"`` LM preset's width, depth
    and heads with a byte-sized vocabulary), ``rounds``, ``device``, ``min_round_s``."""

    mixers: Sequence[str] | None = None
    seq_len: int = 1024
    batch: int = 2
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    vocab_size: int = 256
    rounds: int = 3
    device: torch.device | str = "cpu"
    min_round_s: float = 0.02


def causal_mixers() -> list[str]:
    """Registered mixers that have a causal form."""
    from nalaformer.layers.registry import attention_spec, list_attentions

    return [name for name in list_attentions() if attention_spec(name).causal]


def run_language(settings: LanguageSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows ``mixer, seq_len, batch, median_ms, tokens_per_s, speedup_vs_softmax``: one train step per call."""
    from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

    mixers = list(settings.mixers or causal_mixers())
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, settings.vocab_size, (settings.batch, settings.seq_len), generator=generator)
    tokens = tokens.to(settings.device)
    calls: dict[str, Callable[[], object]] = {}
    for mixer in mixers:
        config = NaLaConfig(
            vocab_size=settings.vocab_size,
            hidden_size=settings.hidden_size,
            num_hidden_layers=settings.num_layers,
            num_attention_heads=settings.num_heads,
            mixer=mixer,
            max_position_embeddings=settings.seq_len,
            use_cache=False,
        )
        torch.manual_seed(0)
        model = NaLaForCausalLM(config).to(settings.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            model(input_ids=tokens, labels=tokens).loss.backward()
            optimizer.step()

        calls[mixer] = train_step
    if progress:
        progress(f"language: train steps of {len(calls)} mixers at {settings.batch}x{settings.seq_len} tokens")
    timings = time_interleaved(calls, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device)
    reference = timings.get("softmax")
    return [
        {
            "mixer": mixer,
            "seq_len": settings.seq_len,
            "batch": settings.batch,
            "median_ms": 1e3 * timing.median_s,
            "tokens_per_s": settings.batch * settings.seq_len / timing.median_s,
            "speedup_vs_softmax": math.nan if reference is None else paired_ratio(reference, timing),
        }
        for mixer, timing in timings.items()
    ]
