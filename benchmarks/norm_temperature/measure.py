"""Norm-temperature and NaLa+delta-rule measurements on the study's quick tasks at a reduced budget.

    PYTHONPATH=. python benchmarks/norm_temperature/measure.py [WORKERS] [OUT]

Each job trains one mixer on one task of ``study_plan("quick")`` with the steps below (through the study's own
``run_job``, which logs the norm-awareness statistics at every evaluation) and appends a line to OUT/results.jsonl.
``nala_deltanet_rawq`` / ``nala_gated_deltanet_rawq`` are the NaLa delta-rule mixers with ``query_norm="none"``.
"""
import dataclasses, json, sys, time, multiprocessing as mp
import torch

from nalaformer.layers.delta import _delta_builder
from nalaformer.layers.registry import register_attention


def _raw(name, gated):
    inner = _delta_builder(name, gated=gated, nala=True)
    return lambda dim, heads, **kw: inner(dim, heads, query_norm="none", **kw)


register_attention("nala_deltanet_rawq", _raw("nala_deltanet_rawq", False), paper="-", summary="-", noncausal=False, image=False)
register_attention("nala_gated_deltanet_rawq", _raw("nala_gated_deltanet_rawq", True), paper="-", summary="-", noncausal=False, image=False)

from nalaformer.reproduce.jobs import run_job
from nalaformer.reproduce.plan import study_plan

STEPS = {"image": 80, "mqar": 300, "lm": 100}
OUT = sys.argv[2] if len(sys.argv) > 2 else "runs/norm_temperature"


def job(args):
    task_name, mixer, seed = args
    torch.set_num_threads(1)
    task = {t.name: t for t in study_plan("quick").tasks}[task_name]
    task = dataclasses.replace(task, steps=STEPS[task_name])
    t0 = time.time()
    try:
        rec = run_job(task, mixer, seed, OUT, 64)
    except Exception as error:  # keep the others going
        return {"task": task_name, "mixer": mixer, "seed": seed, "error": repr(error)}
    m = rec["metrics"]
    out = {"task": task_name, "mixer": mixer, "seed": seed, "metric": m.get(task.metric), "wall": time.time() - t0,
           "cpu": rec["cpu_seconds"], **{k: v for k, v in m.items() if k.startswith("norm_") and "/" not in k}}
    with open(f"{OUT}/results.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    jobs = []
    for seed in (0, 1, 2):
        for task in ("mqar", "lm", "image"):
            for mixer in ("nala_running_t", "nala_learned_t", "nala", "sign_split_power"):
                jobs.append((task, mixer, seed))
        if seed == 0:
            for mixer in ("nala_deltanet", "nala_deltanet_rawq", "deltanet", "nala_gated_deltanet", "nala_gated_deltanet_rawq", "gated_deltanet"):
                jobs.append(("mqar", mixer, 0))
    with mp.get_context("fork").Pool(int(sys.argv[1]) if len(sys.argv) > 1 else 4) as pool:
        for r in pool.imap_unordered(job, jobs):
            print(json.dumps(r), flush=True)
