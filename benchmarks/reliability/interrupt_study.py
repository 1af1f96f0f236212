"""Time the study's interruption: Ctrl-C (SIGINT to the process group) until every process is gone, and SIGKILL of
the study until its worker is gone; the study is the endless tiny one of tests/reproduce/test_interruption.py.

    PYTHONPATH=. python benchmarks/reliability/interrupt_study.py --tries 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from tests.reproduce.test_interruption import _session_processes, _start_endless_study


def _gone_after(process, send) -> float:
    start = time.monotonic()
    send(process)
    process.wait(timeout=60)
    while _session_processes(process.pid):
        time.sleep(0.02)
    return round(time.monotonic() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=3)
    tries = parser.parse_args().tries
    results = {"ctrl_c_to_all_gone_s": [], "sigkill_to_worker_gone_s": []}
    for _ in range(tries):
        study = _start_endless_study(Path(tempfile.mkdtemp()))
        results["ctrl_c_to_all_gone_s"].append(_gone_after(study, lambda p: os.killpg(p.pid, signal.SIGINT)))
        study = _start_endless_study(Path(tempfile.mkdtemp()))
        results["sigkill_to_worker_gone_s"].append(_gone_after(study, lambda p: os.kill(p.pid, signal.SIGKILL)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
