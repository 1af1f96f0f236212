"""The reproduction study end to end in its tiny mode: the report's numbers come from the run's JSON."""

from __future__ import annotations

import json

import pytest

from nalaformer.reproduce import collect_results, run_study, study_plan, write_report
from nalaformer.reproduce.claims import SATURATION_TANH
from nalaformer.reproduce.jobs import result_path
from nalaformer.reproduce.results import compare, fmt


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    results = run_study(out, "tiny", workers=1, progress=False)
    return out, results


def test_every_planned_run_finished_and_wrote_its_record(study):
    out, results = study
    plan = study_plan("tiny")
    assert results["failures"] == [] and results["missing_runs"] == []
    for task, mixer, seed in plan.jobs():
        record = json.loads(result_path(out, task.name, mixer, seed).read_text())
        assert record["steps"] == task.steps and record["mixer"] == mixer
        if mixer == "nala":  # NaLa's saturated share measured at the study's one threshold
            assert record["spikiness"]["saturation"] == SATURATION_TANH
            assert results["tasks"][task.name]["mixers"][mixer]["spikiness"]["saturation_tanh"] == SATURATION_TANH
        assert record["metrics"][task.metric] == results["tasks"][task.name]["mixers"][mixer]["values"][0]
        curve = results["tasks"][task.name]["mixers"][mixer]["curve"]
        # the curve is read from the engine's log; its last point is the run's final validation value
        assert curve and curve[-1]["step"] == task.steps and curve[-1]["n"] == 1
        assert curve[-1]["mean"] == pytest.approx(record["metrics"][task.metric])
    assert json.loads((out / "results.json").read_text())["tasks"] == results["tasks"]


def test_report_tables_print_the_json_numbers(study):
    out, results = study
    report = (out / "report.md").read_text()
    assert f"Training: {len(study_plan('tiny').jobs())} runs, " in report
    for entry in results["tasks"].values():
        for mixer, stats in entry["mixers"].items():
            row = f"| {mixer} | {stats['parameters']} | {fmt(stats['mean'])}"
            assert row in report, row
            spikiness = stats["spikiness"]
            if spikiness.get("analysed"):
                assert fmt(spikiness["pearson_entropy_q_norm"]) in report
    # the norm-awareness the training engine logged at the last evaluation of each NaLa model
    for task, entry in results["tasks"].items():
        norm = entry["mixers"]["nala"]["norm"]
        assert 0.0 <= norm["saturated_fraction"]["mean"] <= 1.0
        cells = " | ".join(fmt(norm[key]["mean"]) for key in ("saturated_fraction", "exponent_mean", "exponent_std"))
        assert f"| {task} | nala | {cells} |" in report
    for method in results["controlled"]["methods"].values():
        cells = " | ".join(fmt(v) for v in method["entropy_at"].values())
        assert f"| {method['label']} | {cells} |" in report
    for claim in results["claims"]:
        assert f"| {claim['claim']} | {claim['paper']} | {claim['ours']} | **{claim['verdict']}** |" in report
    for row in results["efficiency"]["speedups"]:
        assert f"| {row['seq_len']} | {fmt(row['noncausal_fwd'], 1)} |" in report
    vision = {(r["layout"], r["size"]): r for r in results["model_efficiency"]["rows"]}
    assert {size for _, size in vision} == set(study_plan("tiny").vision_sizes)
    nala, softmax = vision[("nala", 64)], vision[("softmax", 64)]
    assert f"{fmt(nala['median_ms'], 1)} ({fmt(nala['speedup_vs_softmax'], 2)}x)" in report
    assert f"| softmax | {fmt(vision[('softmax', 32)]['median_ms'], 1)} | {fmt(softmax['median_ms'], 1)} |" in report
    # the boundary sections: the MQAR grid and the long-range tasks, from their JSON
    assert "## 5. Where NaLa holds" in report
    for row in results["recall_grid"]["rows"]:
        assert f"| {row['mixer']} | T={row['seq_len']} P={row['pairs']} | {fmt(row['mean'])} (n=1) |" in report
    for name, entry in results["long_range"]["tasks"].items():
        for mixer, stats in entry["mixers"].items():
            assert (
                f"| {name} | {entry['source']} | {entry['seq_len']} | {mixer} | {fmt(stats['mean'])} (n=1) |" in report
            )


def test_changing_a_json_number_changes_the_report(study, tmp_path):
    out, results = study
    edited = json.loads(json.dumps(results))
    edited["tasks"]["lm"]["mixers"]["nala"]["mean"] = 12.3456
    write_report(out, edited)
    assert "| nala | " in (out / "report.md").read_text() and "12.346" in (out / "report.md").read_text()
    write_report(out, results)
    assert "12.346" not in (out / "report.md").read_text()


def test_resuming_a_finished_study_reruns_nothing(study):
    out, results = study
    plan = study_plan("tiny")
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    again = run_study(out, "tiny", workers=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")} == stamps
    assert again["tasks"] == results["tasks"]
    assert collect_results(out, plan, [])["claims"] == results["claims"]


def test_the_controlled_section_shows_the_propositions(study):
    _, results = study
    methods = results["controlled"]["methods"]
    assert methods["relu"]["max_abs_change"] < 1e-9 and methods["relu3"]["max_abs_change"] < 1e-9
    assert methods["softmax"]["drop"] > 1.0 and methods["nala"]["drop"] > 0.1
    claims = {c["id"]: c["verdict"] for c in results["claims"]}
    assert claims["homogeneous_unaware"] == "supported"


def test_compare_uses_the_seed_spread():
    task = {
        "higher_is_better": True,
        "mixers": {
            "a": {"mean": 0.9, "std": 0.01, "n": 3},
            "b": {"mean": 0.8, "std": 0.02, "n": 3},
            "c": {"mean": 0.89, "std": 0.02, "n": 3},
        },
    }
    assert compare(task, "a", "b")["verdict"] == "better"
    assert compare(task, "b", "a")["verdict"] == "worse"
    assert compare(task, "a", "c")["verdict"] == "within noise"
    assert compare({**task, "higher_is_better": False}, "a", "b")["verdict"] == "worse"
    assert compare(task, "a", "missing") is None


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        study_plan("huge")
    with pytest.raises(ValueError, match="unknown section"):
        run_study(tmp_path, "tiny", sections=("speed",))
    (tmp_path / "study.json").write_text(json.dumps({"mode": "quick"}))
    with pytest.raises(ValueError, match="holds a 'quick' study"):
        run_study(tmp_path, "tiny", sections=("spikiness",))


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_every_task_trains_the_norm_temperature_variants_beside_nala_and_its_ablation(mode):
    plan = study_plan(mode)
    for task in plan.tasks:
        assert {"nala", "sign_split_power", "nala_learned_t", "nala_running_t"} <= set(task.mixers), task.name
    assert len(plan.seeds) == (3 if mode == "full" else 1)
