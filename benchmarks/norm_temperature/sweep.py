"""One training run of the study's tasks, for the norm-temperature and NaLa delta-rule sweeps.

    PYTHONPATH=. python benchmarks/norm_temperature/sweep.py MODE TASK MIXER SEED [STEPS] [OUT]

Trains MIXER on TASK of ``study_plan(MODE)`` (MODE quick or full; STEPS overrides the plan's steps, 0 = the plan's)
through the study's own ``run_job`` (which logs the norm-awareness statistics at every evaluation) and appends one
JSON line to OUT/results.jsonl (default runs/norm_temperature). Besides the registry's mixers it knows the NaLa
delta-rule variants below (options of ``nalaformer.layers.delta``).
"""

import dataclasses
import json
import sys
import time

import torch

from nalaformer.layers.delta import _delta_builder
from nalaformer.layers.registry import register_attention

VARIANTS = {
    # the released exponent scale lambda = 3, the NaLa delta mixers' default before lambda = 1
    "nala_deltanet_lam3": (False, {"lam": 3.0}),
    "nala_gated_deltanet_lam3": (True, {"lam": 3.0}),
    # NaLa+DN / NaLa+GDN (lambda = 3) with the earlier unnormalised read-out
    "nala_deltanet_rawq": (False, {"query_norm": "none", "lam": 3.0}),
    "nala_gated_deltanet_rawq": (True, {"query_norm": "none", "lam": 3.0}),
    # beta in (0, 2): negative eigenvalues of the transition (lambda = 3)
    "nala_gated_deltanet_negeig": (True, {"allow_neg_eigval": True, "lam": 3.0}),
    # NaLa's maps (lambda = 3) with the running per-head norm temperature
    "nala_gated_deltanet_running_t": (True, {"temperature": "running", "lam": 3.0}),
    # NaLa's maps with a smaller lambda (key power lambda, query exponent lambda (tau + tanh(||q||)))
    "nala_gated_deltanet_lam2": (True, {"lam": 2.0}),
    "nala_gated_deltanet_lam1": (True, {"lam": 1.0}),
    # keep positive parts only (lambda = 3): features of width D, the state size of Gated DeltaNet
    "nala_gated_deltanet_halfstate": (True, {"inhibit": "none", "lam": 3.0}),
}


def _variant(name, gated, fixed):
    inner = _delta_builder(name, gated=gated, nala=True)
    return lambda dim, heads, **kw: inner(dim, heads, **{**kw, **fixed})


for _name, (_gated, _fixed) in VARIANTS.items():
    register_attention(_name, _variant(_name, _gated, _fixed), paper="-", summary="-", noncausal=False, image=False)

from nalaformer.reproduce.jobs import run_job  # noqa: E402
from nalaformer.reproduce.plan import study_plan  # noqa: E402


def main(argv):
    mode, task_name, mixer, seed = argv[1], argv[2], argv[3], int(argv[4])
    steps = int(argv[5]) if len(argv) > 5 else 0
    out = argv[6] if len(argv) > 6 else "runs/norm_temperature"
    torch.set_num_threads(1)
    task = {t.name: t for t in study_plan(mode).tasks}[task_name]
    if steps:
        task = dataclasses.replace(task, steps=steps)
    t0 = time.time()
    rec = run_job(task, mixer, seed, out, 64)
    m = rec["metrics"]
    line = {
        "mode": mode,
        "task": task_name,
        "mixer": mixer,
        "seed": seed,
        "steps": task.steps,
        "metric": m.get(task.metric),
        "wall": time.time() - t0,
        "cpu": rec["cpu_seconds"],
        **{k: v for k, v in m.items() if k.startswith("norm_") and "/" not in k},
    }
    with open(f"{out}/results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main(sys.argv)
