"""Kill -9 a training run at random moments (checkpoints every step, so many kills land inside a checkpoint write),
resume it, and compare its final weights with an uninterrupted run's, bit for bit (every tensor, and the file's
metadata; the safetensors header may list the metadata in another order from one process to the next).

    PYTHONPATH=. python benchmarks/reliability/kill_and_resume.py --trials 10 --out /tmp/kill-resume

Writes ``results.json`` beside this script (or ``--json``) and prints one line per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TRAIN = [
    sys.executable, "-m", "nalaformer", "train", "lm", "--data.name", "mqar", "--data.block-size", "32",
    "--data.mqar-pairs", "4", "--data.mqar-train-examples", "512", "--data.mqar-val-examples", "32",
    "--model.hidden-size", "32", "--model.num-layers", "2", "--model.num-heads", "2", "--batch-size", "16",
    "--steps", "40", "--warmup-steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "2",
    "--eval-every", "20", "--cpu-threads", "1", "--no-progress",
]  # fmt: skip


def final_weights(run_dir: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(run_dir / "checkpoints" / "step_00000040" / "model.safetensors", "pt") as handle:
        return handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def same_weights(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    import torch

    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", default="/tmp/kill-resume")
    parser.add_argument("--json", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run([*TRAIN, "--run-dir", str(out / "reference")], check=True, **quiet)
    reference = final_weights(out / "reference")
    rng = random.Random(0)
    trials = []
    for trial in range(args.trials):
        run_dir = out / f"trial{trial}"
        process = subprocess.Popen([*TRAIN, "--run-dir", str(run_dir)], **quiet)
        while not (run_dir / "checkpoints").is_dir() and process.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoints = run_dir / "checkpoints"
        steps = sorted(p.name for p in checkpoints.glob("step_*"))
        half_written = sorted(p.name for p in checkpoints.glob(".tmp-*"))
        resumed = subprocess.run([*TRAIN, "--run-dir", str(run_dir), "--resume"], **quiet)
        identical = resumed.returncode == 0 and same_weights(final_weights(run_dir), reference)
        trials.append({"killed_after": steps[-1] if steps else None, "half_written": half_written,
                       "resume_exit": resumed.returncode, "identical": identical})  # fmt: skip
        print(json.dumps(trials[-1]), flush=True)
    summary = {
        "trials": len(trials),
        "bit_identical": sum(t["identical"] for t in trials),
        "kills_inside_a_checkpoint_write": sum(bool(t["half_written"]) for t in trials),
        "command": " ".join(["nalaformer", *TRAIN[3:]]),
        "trial_records": trials,
    }
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print({k: v for k, v in summary.items() if k != "trial_records"})


if __name__ == "__main__":
    main()
