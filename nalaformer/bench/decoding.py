"""Decoding: per-token latency of cached generation, NaLa's fixed-size state against a softmax KV cache.

Two language models that differ only in their token mixer (``NaLaForCausalLM`` with ``mixer="nala"`` and with
``mixer="softmax"``) read a random prompt of ``L`` tokens with the cache on, then decode one token at a time from it.
At each context length the single-token steps of both models are timed interleaved in the same rounds; the cache grows
by the few dozen steps timed, which is negligible against ``L``. NaLa's step costs the same at every context (its state
is ``[H, 2D, D]`` per layer); softmax attends over the whole cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nalaformer.bench.timing import paired_ratio, time_interleaved


@dataclass(frozen=True)
class DecodingSettings:
    """Attributes: ``contexts`` (prompt lengths), ``mixers`` (each compared with ``reference``), model size
    (``hidden_size``, ``num_layers``, ``num_heads``, ``vocab_size``; default: the ``"small"`` LM preset's width, depth
    and heads with a byte-sized vocabulary, so the output head does not dominate a step), ``rounds``, ``device``,
    ``min_round_s`` (a step is repeated to last this long per round)."""

    contexts: Sequence[int] = (1024, 2048, 4096, 8192, 16384)
    mixers: Sequence[str] = ("nala", "softmax")
    reference: str = "softmax"
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    vocab_size: int = 256
    rounds: int = 7
    device: torch.device | str = "cpu"
    min_round_s: float = 0.05


def build_language_model(mixer: str, settings: DecodingSettings, max_len: int) -> torch.nn.Module:
    """A randomly initialised ``NaLaForCausalLM`` of the settings' size with ``mixer`` in every layer (eval mode)."""
    from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

    config = NaLaConfig(
        vocab_size=settings.vocab_size,
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        mixer=mixer,
        max_position_embeddings=max_len,
    )
    torch.manual_seed(0)
    return NaLaForCausalLM(config).to(settings.device).eval()


def _cache_of(output: Any) -> Any:
    from nalaformer.models.lm.compat import CACHE_FIELD

    return getattr(output, CACHE_FIELD)


def run_decoding(settings: DecodingSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per mixer and context: ``mixer, context, per_token_ms, speedup_vs_reference, state_mib``."""
    mixers = list(dict.fromkeys([*settings.mixers, settings.reference]))
    max_len = max(settings.contexts) + 4096
    models = {mixer: build_language_model(mixer, settings, max_len) for mixer in mixers}
    generator = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    for context in settings.contexts:
        prompt = torch.randint(0, settings.vocab_size, (1, context), generator=generator).to(settings.device)
        steps: dict[str, Callable[[], object]] = {}
        caches: dict[str, Any] = {}
        if progress:
            progress(f"decoding: prefill {context} tokens, then single-token steps")
        with torch.no_grad():
            for mixer, model in models.items():
                output = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
                caches[mixer] = _cache_of(output)
                token = output.logits[:, -1:].argmax(dim=-1)

                def step(model=model, cache=caches[mixer], token=token) -> None:
                    model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)

                steps[mixer] = step
            timings = time_interleaved(
                steps, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device
            )
        for mixer in mixers:
            rows.append(
                {
                    "mixer": mixer,
                    "context": context,
                    "per_token_ms": 1e3 * timings[mixer].median_s,
                    "min_ms": 1e3 * timings[mixer].min_s,
                    "max_ms": 1e3 * timings[mixer].max_s,
                    "speedup_vs_reference": paired_ratio(timings[settings.reference], timings[mixer]),
                    "state_mib": caches[mixer].nbytes() / 2**20,
                }
            )
        del caches, steps
    return rows
