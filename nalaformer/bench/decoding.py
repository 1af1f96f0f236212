"""Decoding: per-token latency of cached generation, NaLa's fixed-size state against a softmax KV cache.

Language models built from one preset that differ only in their token mixer (``mixer="nala"`` and
``mixer="softmax"``) read a random prompt of ``L`` tokens with the cache on (in pieces, so the softmax prefill stays
within memory), then decode one token at a time from it. At each context length the single-token steps of every model
and thread count are timed interleaved in the same rounds; the cache grows by the few dozen steps timed, which is
negligible against ``L``. NaLa's step costs the same at every context (its state is ``[H, 2D, D]`` per layer);
softmax attends over the whole cache.

The ``weights`` row times the step's matrix-vector products alone (every linear layer of the NaLa model applied to
one token, in order): at batch 1 each weight is read once per token, so this is the memory-bandwidth floor under any
implementation of the step in the model's dtype.

With ``compile`` each mixer other than the reference is also timed as ``torch.compile(model)`` (rows
``<mixer>+compile``; the model's step is one graph, its small ops fused by inductor), from its own cache filled by the
same prompt. Its compilation is timed apart (``compile_s``: the first calls at each thread count, before the timed
rounds, which recompile once when the cache's token counter becomes a symbolic integer); the eager rows stay the
reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nalaformer.bench.models import _key, _ratio, _thread_ratio, build_preset_lm
from nalaformer.bench.timing import COMPILED, at_threads, first_calls_seconds, thread_counts, time_interleaved

WEIGHTS_ROW = "weights"
PREFILL_PIECE = 2048
# compiled steps run before the timed rounds, per thread count: the compilation, its one recompile, a steady step
COMPILE_CALLS = 3


@dataclass(frozen=True)
class DecodingSettings:
    """Attributes: ``contexts`` (prompt lengths), ``mixers`` (each compared with ``reference``), ``preset`` (the
    ``NaLaConfig`` preset of the models) with a ``vocab_size`` override (byte-sized by default, so the output head does
    not dominate a step), ``weights_floor`` (also time the step's matrix-vector products alone), ``threads``,
    ``rounds``, ``device``, ``min_round_s`` (a step is repeated to last this long per round), ``compile`` (also time
    ``torch.compile`` of each non-reference mixer's model)."""

    contexts: Sequence[int] = (1024, 2048, 4096, 8192, 16384)
    mixers: Sequence[str] = ("nala", "softmax")
    reference: str = "softmax"
    preset: str = "small"
    vocab_size: int = 256
    weights_floor: bool = True
    threads: Sequence[int] | None = None
    rounds: int = 7
    device: torch.device | str = "cpu"
    min_round_s: float = 0.05
    compile: bool = False


def _cache_of(output: Any) -> Any:
    from nalaformer.models.lm.compat import CACHE_FIELD

    return getattr(output, CACHE_FIELD)


def _prefill(model: torch.nn.Module, prompt: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """The cache after ``prompt`` (read in pieces) and the greedy next token."""
    cache = None
    for start in range(0, prompt.shape[1], PREFILL_PIECE):
        output = model(
            input_ids=prompt[:, start : start + PREFILL_PIECE], cache=cache, use_cache=True, logits_to_keep=1
        )
        cache = _cache_of(output)
    return cache, output.logits[:, -1:].argmax(dim=-1)


def weights_only_step(model: torch.nn.Module) -> Callable[[], None]:
    """Every ``nn.Linear`` of ``model`` applied to one token, in module order: the step's weight traffic alone."""
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    parameter = next(model.parameters())
    inputs = {
        width: torch.randn(1, 1, width, device=parameter.device, dtype=parameter.dtype)
        for width in {layer.in_features for layer in linears}
    }

    def step() -> None:
        for layer in linears:
            layer(inputs[layer.in_features])

    return step


def run_decoding(settings: DecodingSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per mixer, thread count and context: ``mixer, threads, context, per_token_ms, min_ms, max_ms,
    speedup_vs_reference, speedup_vs_1_thread, state_mib, compile_s`` (compiled rows: seconds of their first calls
    at that thread count, at the first context; 0 after)."""
    mixers = list(dict.fromkeys([*settings.mixers, settings.reference]))
    counts = thread_counts(settings.threads)
    max_len = max(settings.contexts) + 4096
    models = {
        mixer: build_preset_lm(mixer, settings.preset, settings.vocab_size, max_len, settings.device).eval()
        for mixer in mixers
    }
    compiled = {
        mixer + COMPILED: torch.compile(model)
        for mixer, model in models.items()
        if settings.compile
        if mixer != settings.reference
    }
    compile_seconds: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    initial_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        for context in settings.contexts:
            torch.set_num_threads(initial_threads)
            prompt = torch.randint(0, settings.vocab_size, (1, context), generator=generator).to(settings.device)
            steps: dict[str, Callable[[], object]] = {}
            caches: dict[str, Any] = {}
            if progress:
                progress(f"decoding: prefill {context} tokens, then single-token steps")
            with torch.no_grad():
                for mixer, model in models.items():
                    caches[mixer], token = _prefill(model, prompt)

                    def step(model=model, cache=caches[mixer], token=token) -> None:
                        model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)

                    for threads in counts:
                        steps[_key(mixer, threads)] = at_threads(step, threads)
                for name, model in compiled.items():
                    # its own cache, filled by the eager model: the compiled one only ever sees single-token steps
                    caches[name], token = _prefill(models[name.removesuffix(COMPILED)], prompt)

                    def step(model=model, cache=caches[name], token=token) -> None:
                        model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)

                    for threads in counts:
                        key = _key(name, threads)
                        steps[key] = at_threads(step, threads)
                        if key not in compile_seconds:
                            compile_seconds[key] = first_calls_seconds(steps[key], COMPILE_CALLS, settings.device)
                if settings.weights_floor and "nala" in models:
                    for threads in counts:
                        steps[_key(WEIGHTS_ROW, threads)] = at_threads(weights_only_step(models["nala"]), threads)
                timings = time_interleaved(
                    steps, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device
                )
            names = mixers + list(compiled) + ([WEIGHTS_ROW] if settings.weights_floor and "nala" in models else [])
            for name in names:
                for threads in counts:
                    key = _key(name, threads)
                    rows.append(
                        {
                            "mixer": name,
                            "threads": torch.get_num_threads() if threads is None else threads,
                            "context": context,
                            "per_token_ms": 1e3 * timings[key].median_s,
                            "min_ms": 1e3 * timings[key].min_s,
                            "max_ms": 1e3 * timings[key].max_s,
                            "speedup_vs_reference": (
                                _ratio(timings, _key(settings.reference, threads), key)
                                if name != WEIGHTS_ROW
                                else math.nan
                            ),
                            "speedup_vs_1_thread": _thread_ratio(timings, name, threads, counts),
                            "state_mib": caches[name].nbytes() / 2**20 if name in caches else 0.0,
                            # the first context pays the compilation; later ones reuse the compiled step
                            "compile_s": (
                                math.nan
                                if name not in compiled
                                else compile_seconds[key]
                                if context == settings.contexts[0]
                                else 0.0
                            ),
                        }
                    )
            del caches, steps
    finally:
        torch.set_num_threads(initial_threads)
    return rows
