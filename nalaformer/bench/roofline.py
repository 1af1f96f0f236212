"""How close the NaLa operator comes to this machine's matmul throughput, both measured in the same rounds.

The NaLa forward's useful work is its matmuls: per head, ``Σ_j phi_k(k_j) v_jᵀ`` (``2·T·2D·D`` FLOPs) and the
product of the query features with it (``2·T·2D·D``), ``8·T·D²`` in all for the non-causal form (the denominator's
``4·T·D`` and the feature maps' elementwise work are not counted). The causal chunked form adds the intra-chunk
products, ``2·T·C·2D`` (the masked scores) plus ``2·T·C·D`` (scores times values) for chunk length ``C``. The
reference is a square fp32 matmul (the best case for the BLAS library) timed in the same interleaved rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nalaformer.bench.timing import paired_ratio, time_interleaved
from nalaformer.ops import nala_attention


def nala_forward_flops(seq_len: int, heads: int, head_dim: int, batch: int = 1, causal: bool = False) -> float:
    """Matmul FLOPs of one NaLa forward (see the module docstring); ``chunk_size`` 64 for the causal form."""
    flops = 8.0 * seq_len * head_dim**2
    if causal:
        chunk = 64
        flops += 2.0 * seq_len * chunk * 2 * head_dim + 2.0 * seq_len * chunk * head_dim
    return flops * heads * batch


@dataclass(frozen=True)
class RooflineSettings:
    """Attributes: ``seq_len``, ``heads``, ``head_dim``, ``batch`` of the NaLa call; ``matmul_size`` of the square
    reference matmul; ``rounds``; ``device``; ``modes`` (non-causal / causal); ``min_round_s`` (see
    :func:`time_interleaved`)."""

    seq_len: int = 16384
    heads: int = 4
    head_dim: int = 64
    batch: int = 1
    matmul_size: int = 2048
    rounds: int = 7
    device: torch.device | str = "cpu"
    modes: tuple[bool, ...] = (False, True)
    min_round_s: float = 0.02


def run_roofline(settings: RooflineSettings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per NaLa form plus the matmul row: ``name, seq_len, median_ms, gflops_per_s, fraction_of_matmul``."""
    generator = torch.Generator().manual_seed(0)
    size = settings.matmul_size
    a, b = (torch.randn(size, size, generator=generator).to(settings.device) for _ in range(2))
    shape = (settings.batch, settings.seq_len, settings.heads, settings.head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(settings.device) for _ in range(3))
    candidates: dict[str, Callable[[], object]] = {"matmul": lambda: a @ b}
    for causal in settings.modes:
        candidates[f"nala {'causal' if causal else 'non-causal'} forward"] = lambda causal=causal: nala_attention(
            q, k, v, causal=causal
        )
    if progress:
        progress(f"roofline: matmul {size}x{size} and NaLa forward at T={settings.seq_len}")
    with torch.no_grad():
        timings = time_interleaved(
            candidates, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device
        )
    matmul_flops = 2.0 * size**3
    matmul_rate = matmul_flops / timings["matmul"].median_s
    rows = [
        {
            "name": f"matmul {size}x{size} fp32",
            "seq_len": 0,
            "flops": matmul_flops,
            "median_ms": 1e3 * timings["matmul"].median_s,
            "gflops_per_s": matmul_rate / 1e9,
            "fraction_of_matmul": 1.0,
        }
    ]
    for causal in settings.modes:
        name = f"nala {'causal' if causal else 'non-causal'} forward"
        flops = nala_forward_flops(settings.seq_len, settings.heads, settings.head_dim, settings.batch, causal)
        rate = flops / timings[name].median_s
        # (flops / t_nala) / (matmul_flops / t_matmul), with the time ratio paired per round
        fraction = paired_ratio(timings["matmul"], timings[name]) * flops / matmul_flops
        rows.append(
            {
                "name": name,
                "seq_len": settings.seq_len,
                "flops": flops,
                "median_ms": 1e3 * timings[name].median_s,
                "gflops_per_s": rate / 1e9,
                "fraction_of_matmul": fraction,
            }
        )
    return rows
