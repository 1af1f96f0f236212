"""Run the reproduction study: the controlled spikiness study, every training job, the efficiency benchmarks, the
report. Each part writes its own JSON as soon as it is done, so an interrupted study resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from nalaformer.reporting import write_json
from nalaformer.reproduce.jobs import result_path, run_job
from nalaformer.reproduce.plan import StudyPlan, study_plan
from nalaformer.reproduce.workers import map_in_workers

# the application-boundary sections (nalaformer.reproduce.boundary), run after the others
BOUNDARY_SECTIONS = ("recall", "long-range")


class StudyInterrupted(KeyboardInterrupt):
    """The study was interrupted (Ctrl-C) after writing what had finished; the message says how to resume."""


def _job_entry(task, mixer, seed, out_dir, queries) -> dict[str, Any]:
    """Runs in a worker process; failures come back as a record instead of killing the study."""
    try:
        return run_job(task, mixer, seed, out_dir, queries)
    except Exception as error:  # the report lists every failed job with its reason
        return {
            "task": task.name,
            "mixer": mixer,
            "seed": seed,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }


def check_data_available(plan: StudyPlan) -> None:
    """Fail before any training when a dataset of the plan is missing, with the message that says how to get it."""
    from nalaformer.data.images import build_image_datasets

    for task in plan.tasks:
        if task.name == "image" and task.data.get("name") not in ("mnist", "digits"):
            build_image_datasets(task.data["name"], task.data.get("root"), val_fraction=0.1, seed=0)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["nalaformer", *sys.argv[1:]]) if sys.argv and "nalaformer" in sys.argv[0] else None,
    }


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training runs", unit="run", dynamic_ncols=True)


def run_training_jobs(plan: StudyPlan, out_dir: Path, workers: int, progress: bool) -> list[dict[str, Any]]:
    """Run the plan's jobs that have no result yet, ``workers`` at a time, each in its own process."""
    pending = [(t, m, s) for t, m, s in plan.jobs() if not result_path(out_dir, t.name, m, s).is_file()]
    failures: list[dict[str, Any]] = []
    if not pending:
        return failures
    # one thread per run: small models gain nothing from more, and oversubscribed cores make torch's thread pool
    # spin (on a busy 2-core machine a step took 13x longer with 2 threads than with 1)
    threads = 1
    bar = _progress(len(plan.jobs()), progress)
    if bar is not None:
        bar.update(len(plan.jobs()) - len(pending))
    calls = [(task, mixer, seed, str(out_dir), plan.diagnostic_queries) for task, mixer, seed in pending]
    try:
        for (task, mixer, _, _, _), record in map_in_workers(_job_entry, calls, workers=workers, threads=threads):
            if "error" in record:
                failures.append(record)
                print(
                    f"run failed: {record['task']}/{record['mixer']} seed {record['seed']}: {record['error']}",
                    file=sys.stderr,
                )
            if bar is not None:
                bar.set_postfix_str(f"{task.name}/{mixer}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return failures


def run_study(
    out_dir: str | Path,
    mode: str = "quick",
    *,
    workers: int | None = None,
    sections: tuple[str, ...] = ("spikiness", "accuracy", "efficiency", *BOUNDARY_SECTIONS),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study of ``mode`` into ``out_dir`` and write ``report.md``, ``results.json`` and the plots.

    Args:
        out_dir: the study folder; an existing one is resumed (finished parts are not recomputed).
        mode: ``"quick"`` (``make demo``), ``"full"`` or ``"tiny"`` (tests); see :func:`study_plan`.
        workers: training runs in parallel (one process each). Default: ``min(2, cpu_count)``.
        sections: which parts to run (the report covers what exists).
        progress: show progress bars with ETA.

    Returns:
        dict: the collected results (also written to ``results.json``).
    """
    from nalaformer.reproduce.report import collect_results, write_report
    from nalaformer.reproduce.sections import controlled_section, efficiency_section, model_efficiency_section

    known = ("spikiness", "accuracy", "efficiency", *BOUNDARY_SECTIONS)
    unknown = set(sections) - set(known)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(known)}")
    plan = study_plan(mode)
    workers = workers or min(2, os.cpu_count() or 1)
    if workers <= 0:
        raise ValueError(f"workers must be a positive int, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_file = out_dir / "study.json"
    if study_file.is_file():
        previous = json.loads(study_file.read_text(encoding="utf-8"))
        if previous.get("mode") != mode:
            raise ValueError(
                f"{str(out_dir)!r} holds a {previous.get('mode')!r} study; resume it with --mode "
                f"{previous.get('mode')} or choose another --out folder"
            )
    else:
        write_json({"mode": mode, "plan": dataclasses.asdict(plan), "environment": environment()}, study_file)

    start = time.perf_counter()
    failures: list[dict[str, Any]] = []
    try:
        if "spikiness" in sections:
            controlled_section(out_dir)
        if "accuracy" in sections:
            check_data_available(plan)
            failures = run_training_jobs(plan, out_dir, workers, progress)
        if "efficiency" in sections:
            efficiency_section(out_dir, plan)
            model_efficiency_section(out_dir, plan)
        boundary = tuple(s for s in sections if s in BOUNDARY_SECTIONS)
        if boundary:
            from nalaformer.reproduce.boundary import run_boundary_sections

            run_boundary_sections(out_dir, mode, boundary, workers=workers, progress=progress)
    except KeyboardInterrupt:
        raise _interrupted(out_dir, plan, failures) from None
    results = collect_results(out_dir, plan, failures)
    results["elapsed_seconds_this_call"] = time.perf_counter() - start
    write_report(out_dir, results)
    return results


def _interrupted(out_dir: Path, plan: StudyPlan, failures: list[dict[str, Any]]) -> StudyInterrupted:
    """Write the report of what has finished; the exception to raise, saying how to resume."""
    from nalaformer.reproduce.report import collect_results, write_report

    finished = sum(result_path(out_dir, t.name, m, s).is_file() for t, m, s in plan.jobs())
    try:
        write_report(out_dir, collect_results(out_dir, plan, failures))
        written = f"the report of what finished is {str(out_dir / 'report.md')!r}"
    except Exception as error:  # a partial study may lack what a section of the report needs
        written = f"no report yet ({type(error).__name__}: {error})"
    return StudyInterrupted(
        f"interrupted with {finished} of {len(plan.jobs())} training runs finished; {written}; run the same command "
        f"again to resume (cut runs continue from their last checkpoint)"
    )
