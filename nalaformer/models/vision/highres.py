"""Peak memory and time of one high-resolution inference, per mixer layout, each in a fresh subprocess.

``python -m nalaformer.models.vision.highres --variant t --size 1024 --layouts nala softmax released``

Each configuration runs in its own Python process, so the peak resident set size (``ru_maxrss``) belongs to that
configuration alone: it covers the interpreter, torch, the model's weights and the forward pass of one image
(batch 1, fp32, ``torch.no_grad``, eval mode, after a 64×64 warm-up). The RSS after building the model is
reported too, so the activation memory is ``peak - after build``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_one(variant: str, layout: str, height: int, width: int, threads: int) -> dict[str, object]:
    """Build ``variant`` with ``layout`` and run one ``[1, 3, height, width]`` inference in this process."""
    import torch

    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ENTRYPOINTS[f"nalaformer_{variant}"](mixers=layout).eval()
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        # warm-up on a small image so one-time set-up costs stay out of the timing
        model(torch.randn(1, 3, 64, 64))
    after_build = _current_rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    seconds = time.perf_counter() - start
    return dict(
        variant=f"nalaformer_{variant}",
        layout=layout,
        height=height,
        width=width,
        threads=threads,
        rss_after_build_mib=round(after_build, 1),
        peak_rss_mib=round(_rss_mib(), 1),
        seconds=round(seconds, 2),
        finite=bool(torch.isfinite(logits).all()),
        torch=torch.__version__,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="t", help="xt, t, s, b or l (default: t)")
    parser.add_argument("--size", type=int, nargs="+", default=[1024], help="H [W] (default: 1024)")
    parser.add_argument("--layouts", nargs="+", default=["nala", "softmax", "released"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV file")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0, help="address-space cap per child")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    height, width = (args.size * 2)[:2]
    if args.child:
        print(json.dumps(measure_one(args.variant, args.layouts[0], height, width, args.threads)))
        return 0
    limit = int(args.memory_limit_gib * 2**30)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    rows = []
    for layout in args.layouts:
        command = [sys.executable, "-m", __spec__.name, "--child", "--variant", args.variant, "--layouts", layout]
        command += ["--size", str(height), str(width), "--threads", str(args.threads)]
        # The cap keeps an oversized configuration from exhausting a shared machine; it then fails with MemoryError.
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            preexec_fn=cap_memory,
        )
        if result.returncode == 0:
            row = json.loads(result.stdout.strip().splitlines()[-1])
        else:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            row = dict(variant=f"nalaformer_{args.variant}", layout=layout, height=height, width=width, error=last)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.csv is not None:
        fields = sorted({key for row in rows for key in row})
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
