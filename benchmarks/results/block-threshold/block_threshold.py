"""The single-block threshold of NaLa's blocked path (``nalaformer.ops.nala.common.SINGLE_BLOCK_ELEMENTS``): causal
and non-causal forward+backward with RoPE at 1M / 2M / 4M features, and the small LM's train step at 2 x 1024
tokens (softmax, NaLa at 1M, NaLa at 2M), each timed interleaved in one run; ratios are paired medians against 1M.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/results/block-threshold/block_threshold.py
"""

import torch

import nalaformer.ops.nala.common as common
from nalaformer.bench import paired_ratio, time_interleaved
from nalaformer.bench.ceiling import CeilingSettings
from nalaformer.bench.models import build_preset_lm, lm_loss, train_step
from nalaformer.ops import nala_attention
from nalaformer.ops.rope import rope_angles_1d

THRESHOLDS = {"1M": 1 << 20, "2M": 1 << 21, "4M": 1 << 22}


def operator(causal: bool, shapes: list[tuple[int, int, int, int]], thresholds: dict[str, int]) -> None:
    for batch, seq_len, heads, dim in shapes:
        q, k, v = (torch.randn(batch, seq_len, heads, dim, requires_grad=True) for _ in range(3))
        rope = rope_angles_1d(seq_len, dim)

        def call(threshold: int, q=q, k=k, v=v, rope=rope):
            def run() -> None:
                common.SINGLE_BLOCK_ELEMENTS = threshold
                out = nala_attention(q, k, v, causal=causal, rope=rope)
                (out[0] if isinstance(out, tuple) else out).sum().backward()

            return run

        res = time_interleaved({n: call(t) for n, t in thresholds.items()}, rounds=5, min_round_s=0.2)
        cells = " ".join(f"{n}: {1e3 * r.median_s:.1f} ms ({paired_ratio(res['1M'], r):.2f}x)" for n, r in res.items())
        print("causal" if causal else "non-causal", batch, seq_len, heads, dim, cells, flush=True)


def lm_step() -> None:
    settings = CeilingSettings()
    tokens = torch.randint(0, settings.vocab_size, (2, 1024), generator=torch.Generator().manual_seed(0))

    def loss(model):
        return lm_loss(model, tokens)

    softmax = train_step(build_preset_lm("softmax", settings.preset, settings.vocab_size, 1024, "cpu"), loss)
    nala = train_step(build_preset_lm("nala", settings.preset, settings.vocab_size, 1024, "cpu"), loss)

    def with_threshold(threshold: int):
        def run() -> None:
            common.SINGLE_BLOCK_ELEMENTS = threshold
            nala()

        return run

    candidates = {"softmax": softmax, "nala_1M": with_threshold(1 << 20), "nala_2M": with_threshold(1 << 21)}
    res = time_interleaved(candidates, rounds=6, min_round_s=0.1)
    for n, r in res.items():
        print(f"lm {n}: {1e3 * r.median_s:.0f} ms, vs softmax {paired_ratio(res['softmax'], r):.2f}x, "
              f"vs nala_1M {paired_ratio(res['nala_1M'], r):.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.manual_seed(0)
    causal_shapes = [(2, 1024, 6, 64), (1, 2048, 4, 64), (1, 4096, 4, 64), (4, 256, 6, 64), (1, 8192, 4, 64)]
    operator(True, causal_shapes, THRESHOLDS)
    operator(False, [(1, 4096, 4, 64), (2, 1024, 6, 64)], {"1M": 1 << 20, "2M": 1 << 21})
    lm_step()
