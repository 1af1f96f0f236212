"""NaLaFormer-T at 224² (batch 4) and 512² (batch 1): all-softmax, all-NaLa with one block up to 1M features and up to
2M, inference and train step, timed interleaved in one run (rounds 7); ratios are paired medians.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/results/block-threshold/vision_threshold.py
"""

import sys

import torch
import torch.nn.functional as F

import nalaformer.ops.nala.common as common
from nalaformer.bench import paired_ratio, time_interleaved
from nalaformer.bench.models import train_step
from nalaformer.models.vision.nalaformer import ENTRYPOINTS


def calls(model, images, pass_name):
    if pass_name == "inference":
        model.eval()

        def infer():
            with torch.no_grad():
                model(images)

        return infer
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    return train_step(model, lambda m: F.cross_entropy(m(images), labels))


def with_threshold(fn, threshold):
    def run():
        common.SINGLE_BLOCK_ELEMENTS = threshold
        fn()

    return run


def main(cases):
    for size, batch, pass_name in cases:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        softmax = calls(ENTRYPOINTS["nalaformer_t"](mixers="softmax"), images, pass_name)
        torch.manual_seed(0)
        nala = calls(ENTRYPOINTS["nalaformer_t"](mixers="nala"), images, pass_name)
        res = time_interleaved(
            {"softmax": softmax, "nala_1M": with_threshold(nala, 1 << 20), "nala_2M": with_threshold(nala, 1 << 21)},
            rounds=7,
        )
        print(
            f"{size}x{size} batch {batch} {pass_name}: "
            + ", ".join(
                f"{n} {1e3 * r.median_s:.0f} ms (vs softmax {paired_ratio(res['softmax'], r):.2f}x, "
                f"vs nala_1M {paired_ratio(res['nala_1M'], r):.2f}x)"
                for n, r in res.items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    main([(224, 4, "inference"), (224, 4, "train"), (512, 1, "inference")])
