"""Peak memory of one call, measured so that earlier work cannot hide or inflate it.

CPU: every configuration runs in a fresh Python subprocess. The child builds its inputs, makes a warm-up call (the
case decides which; the operator cases repeat the measured call, so that workspaces the libraries keep are part of
the baseline), resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``), reads its resident set,
runs the call once and reports ``VmHWM - VmRSS_before``: the peak resident memory the call added, everything it
allocated (outputs, saved activations, gradients, temporaries) included. The child runs with a fixed glibc mmap
threshold (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors go back to the system instead of staying in the heap,
which would let a later allocation reuse them unseen. This needs Linux's ``/proc``; elsewhere the CPU figure is
``nan``.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory held before the call
(torch's caching allocator; in-process).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# a case is "module:function"; function(**kwargs) -> (run, warmup): two functions of no argument
CaseFactory = Callable[..., tuple[Callable[[], object], Callable[[], object]]]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def rss_supported() -> bool:
    """Whether this system exposes the resident-set high-water mark that the CPU measurement resets and reads."""
    return Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()


def _load_case(case: str) -> CaseFactory:
    module, _, name = case.partition(":")
    if not module or not name:
        raise ValueError(f"case must be 'module:function', got {case!r}")
    return getattr(importlib.import_module(module), name)


def measure_cpu_peak_in_process(case: str, kwargs: dict[str, Any]) -> float:
    """Peak resident bytes added by one call of ``case(**kwargs)``'s ``run`` (call it in a fresh process)."""
    run, warmup = _load_case(case)(**kwargs)
    warmup()
    # "5" resets VmHWM to the current resident set (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    run()
    return 1024.0 * (_status_kib("VmHWM") - before)


def peak_memory_bytes(
    case: str, kwargs: dict[str, Any], *, device: str = "cpu", threads: int | None = None, timeout_s: float = 1800.0
) -> float:
    """Peak memory (bytes) added by one call of a benchmark case; ``nan`` where it cannot be measured.

    Args:
        case (str): ``"module:function"``; ``function(**kwargs)`` builds the inputs and returns ``(run, warmup)``,
            two functions of no argument (``warmup`` runs first and initialises the libraries).
        kwargs (dict): JSON-serialisable keyword arguments of the case (they cross a process boundary on CPU).
        device (str): ``"cpu"`` (fresh subprocess, resident set) or a CUDA device (in-process, caching allocator).
            Default: "cpu".
        threads (int, optional): torch threads in the child. Default: None (torch's default).
        timeout_s (float): give up on a child after this long (the result is then ``nan``). Default: 1800.
    """
    if torch.device(device).type == "cuda":
        run, warmup = _load_case(case)(**kwargs)
        warmup()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    if not rss_supported():
        return math.nan
    command = [sys.executable, "-m", "nalaformer.bench.memory", "--case", case, "--kwargs", json.dumps(kwargs)]
    if threads is not None:
        command += ["--threads", str(threads)]
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=environment, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"peak memory of {case} {kwargs} failed: {error!s} {detail[-2000:]}", file=sys.stderr)
        return math.nan
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"])


def main(argv: list[str] | None = None) -> int:
    """The child process: ``python -m nalaformer.bench.memory --case module:function --kwargs JSON``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", required=True)
    parser.add_argument("--kwargs", default="{}")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    peak = measure_cpu_peak_in_process(args.case, json.loads(args.kwargs))
    print(json.dumps({"peak_bytes": peak}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
