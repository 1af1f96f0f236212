"""The boundary sections' statistics and report, from synthetic cell records (no training), and one tiny cell."""

from __future__ import annotations

import json

import pytest

from nalaformer.reproduce.boundary_report import boundary_lines, recall_best_rows
from nalaformer.reproduce.boundary_stats import call_best
from nalaformer.reproduce.long_range import long_range_plan, summarise_long_range
from nalaformer.reproduce.recall_grid import SOLVED, recall_grid_plan, summarise_grid
from nalaformer.reproduce.results import fmt
from nalaformer.reproduce.seeds import mean_std
from nalaformer.reproduce.small_training import Cell, run_cell


def _mqar(mixer: str, width: int, seed: int, accuracy: float, state: int) -> dict:
    cell = Cell("mqar", mixer, width, 2, 2, 10, 8, 1e-3, seed, {"seq_len": 32, "pairs": 4, "vocab": 32})
    return {"cell": cell.__dict__, "name": cell.name, "accuracy": accuracy, "state_bytes": state, "train_seconds": 1.0}


def test_a_lead_is_called_only_beyond_seed_noise():
    far = {"a": mean_std([0.9, 0.92, 0.91]), "b": mean_std([0.5, 0.52, 0.51])}
    near = {"a": mean_std([0.9, 0.80, 0.85]), "b": mean_std([0.84, 0.86, 0.83])}
    one = {"a": mean_std([0.9]), "b": mean_std([0.1])}
    assert call_best("t", far)["verdict"] == "ahead beyond seed noise" and call_best("t", far)["best"] == "a"
    assert call_best("t", near)["verdict"] == "within seed noise"
    assert call_best("t", one)["verdict"] == "not called (one seed)" and call_best("t", one)["noise"] is None
    assert call_best("t", {"a": mean_std([0.5])}) is None


def test_frontier_is_the_smallest_width_whose_mean_reaches_the_threshold():
    records = (
        [_mqar("softmax", 16, s, 0.95, 1000) for s in (0, 1)]
        + [_mqar("nala", 16, s, a, 100) for s, a in ((0, 0.5), (1, 0.6))]
        + [_mqar("nala", 32, s, a, 400) for s, a in ((0, 0.95), (1, 0.91))]
    )
    grid = summarise_grid(records)
    frontier = {f["mixer"]: f for f in grid["frontier"]}
    assert frontier["softmax"]["smallest_width"] == 16 and frontier["softmax"]["state_bytes"] == 1000
    assert frontier["nala"]["smallest_width"] == 32 and frontier["nala"]["state_bytes"] == 400
    assert grid["threshold"] == SOLVED
    nala16 = next(r for r in grid["rows"] if (r["mixer"], r["width"]) == ("nala", 16))
    assert nala16["mean"] == pytest.approx(0.55) and nala16["n"] == 2 and nala16["seeds"] == [0, 1]
    best = {r["task"]: r for r in recall_best_rows({**grid, "plan": {"mixers": ["softmax", "nala"]}})}
    assert best["MQAR T=32 P=4 width 16"]["best"] == "softmax"
    assert best["MQAR T=32 P=4 width 16"]["verdict"] == "ahead beyond seed noise"


def test_the_report_prints_the_json_numbers():
    records = []
    for seed, (a, b) in enumerate(((0.61, 0.55), (0.63, 0.52))):
        for mixer, accuracy in (("softmax", a), ("nala", b)):
            cell = Cell("listops", mixer, 16, 1, 2, 10, 8, 1e-3, seed, {"seq_len": 64, "source": "generated"})
            records.append(
                {"cell": cell.__dict__, "name": cell.name, "accuracy": accuracy, "seconds_per_step": 0.01,
                 "step_peak_bytes": 3 * 2**20, "parameters": 123}
            )  # fmt: skip
    long_range = {**summarise_long_range(records), "plan": long_range_plan("tiny").__dict__, "failures": []}
    softmax = long_range["tasks"]["listops"]["mixers"]["softmax"]
    assert softmax["mean"] == pytest.approx(0.62) and softmax["n"] == 2
    text = "\n".join(boundary_lines(None, long_range, {}))
    assert f"| listops | generated | 64 | softmax | {fmt(softmax['mean'])} ± {fmt(softmax['std'])} (n=2) |" in text
    row = long_range["best"][0]
    assert f"| listops | softmax | nala | {fmt(row['margin'])} |" in text


def test_one_tiny_cell_trains_and_reports_its_state():
    cell = recall_grid_plan("tiny").cells()[1]
    record = run_cell(cell)
    assert 0.0 <= record["accuracy"] <= 1.0 and record["state_bytes"] > 0 and record["parameters"] > 0
    with pytest.raises(ValueError, match="multiple of heads"):
        Cell("mqar", "nala", 15, 1, 2, 1, 1, 1e-3, 0, {"seq_len": 16})
    with pytest.raises(ValueError, match="mode must be"):
        recall_grid_plan("huge")


def test_seed_subsets_keep_the_first_seed_everywhere_and_the_later_seeds_where_asked():
    from nalaformer.reproduce.long_range import LongRangePlan, LongRangeTask, long_range_cells
    from nalaformer.reproduce.recall_grid import RecallGridPlan

    grid = RecallGridPlan(((32, 4),), (16, 64), ("softmax", "nala"), (0, 1, 2), 1, 8, 1e-3, 32, 8, 8, seed_widths=(64,))
    names = {c.name for c in grid.cells()}
    assert len(names) == 2 * 2 + 2 * 2  # seed 0 at both widths; seeds 1 and 2 at width 64 only
    assert "mqar-T32-P4-nala-w16-seed0" in names and "mqar-T32-P4-nala-w64-seed2" in names
    assert not any(n.endswith("w16-seed1") or n.endswith("w16-seed2") for n in names)
    with pytest.raises(ValueError, match="seed_widths"):
        RecallGridPlan(((32, 4),), (16,), ("nala",), (0,), 1, 8, 1e-3, 32, 8, 8, seed_widths=(64,))
    task = LongRangeTask("listops", 8, 8)
    plan = LongRangePlan((task,), ("softmax", "nala", "elu"), (0, 1), 16, 1, 2, 1, 8, 1e-3, seeded_mixers=("nala",))
    cells = long_range_cells(plan, {"listops": {"path": "x.pt", "seq_len": 16}})
    # the seeded mixer with all its seeds first (a whole comparison over seeds), then the others with the first seed
    assert [(c.mixer, c.seed) for c in cells] == [("nala", 0), ("nala", 1), ("softmax", 0), ("elu", 0)]
    with pytest.raises(ValueError, match="seeded_mixers"):
        LongRangePlan((task,), ("nala",), (0,), 16, 1, 2, 1, 8, 1e-3, seeded_mixers=("relu",))


def test_a_grid_can_run_fewer_widths_and_seeds_at_some_settings():
    from nalaformer.reproduce.recall_grid import RecallGridPlan

    settings = ((32, 4), (64, 8))
    grid = RecallGridPlan(
        settings, (16, 64), ("softmax", "nala"), (0, 1, 2), 1, 8, 1e-3, 32, 8, 8,
        seed_widths=(64,), seed_settings=settings[:1], setting_widths=((settings[1], (64,)),),
    )  # fmt: skip
    names = {c.name for c in grid.cells()}
    # T = 32: seed 0 at both widths, seeds 1, 2 at width 64; T = 64: width 64 alone, seed 0 alone
    assert names == {
        *(f"mqar-T32-P4-{m}-w16-seed0" for m in ("softmax", "nala")),
        *(f"mqar-T32-P4-{m}-w64-seed{s}" for m in ("softmax", "nala") for s in (0, 1, 2)),
        *(f"mqar-T64-P8-{m}-w64-seed0" for m in ("softmax", "nala")),
    }
    assert grid.widths_at(settings[0]) == (16, 64) and grid.seeds_at(settings[1]) == (0,)
    with pytest.raises(ValueError, match="seed_settings"):
        RecallGridPlan(settings, (16,), ("nala",), (0,), 1, 8, 1e-3, 32, 8, 8, seed_settings=((16, 2),))
    for bad in (((16, 2), (16,)), ((32, 4), (32,)), ((32, 4), ())):
        with pytest.raises(ValueError, match="setting_widths"):
            RecallGridPlan(settings, (16,), ("nala",), (0,), 1, 8, 1e-3, 32, 8, 8, setting_widths=(bad,))


def test_a_long_range_task_can_run_a_subset_of_the_mixers_on_the_same_data(tmp_path):
    from nalaformer.reproduce.long_range import LongRangePlan, LongRangeTask, long_range_cells, task_data_path

    every, some = LongRangeTask("listops", 8, 8, {"max_length": 16}), LongRangeTask("pathfinder", 8, 8, {}, ("nala",))
    plan = LongRangePlan((every, some), ("softmax", "nala"), (0, 1), 16, 1, 2, 1, 8, 1e-3)
    sizes = {"listops": {"seq_len": 16}, "pathfinder": {"seq_len": 16}}
    assert [(c.task, c.mixer, c.seed) for c in long_range_cells(plan, sizes)] == [
        ("listops", "softmax", 0), ("listops", "nala", 0), ("listops", "softmax", 1), ("listops", "nala", 1),
        ("pathfinder", "nala", 0), ("pathfinder", "nala", 1),
    ]  # fmt: skip
    # which mixers run does not change the task's data file (finished cells keep their data)
    restricted = LongRangeTask("listops", 8, 8, {"max_length": 16}, ("nala",))
    assert task_data_path(tmp_path, restricted) == task_data_path(tmp_path, every)
    for bad in (("relu",), ()):
        with pytest.raises(ValueError, match="mixers"):
            LongRangePlan((LongRangeTask("listops", 8, 8, {}, bad),), ("nala",), (0,), 16, 1, 2, 1, 8, 1e-3)


def test_the_norm_aware_variants_are_in_the_full_grid():
    assert {"nala_running_t", "nala_learned_t"} <= set(recall_grid_plan("full").mixers)
    assert "nala_running_t" in long_range_plan("full").mixers and "nala_running_t" in recall_grid_plan("map").mixers


@pytest.mark.parametrize("mode", ["tiny", "quick", "reduced", "map", "full"])
def test_every_planned_mixer_is_a_registered_causal_mixer(mode):
    from nalaformer.layers import attention_spec

    for mixer in (*recall_grid_plan(mode).mixers, *long_range_plan(mode).mixers):
        assert attention_spec(mixer).causal, mixer


def test_full_mode_is_sized_within_three_hours_on_two_cores():
    from nalaformer.reproduce.boundary_budget import boundary_estimate

    full = boundary_estimate("full", workers=2)
    assert full["cells"] == len(recall_grid_plan("full").cells()) + full["sections"]["long-range"]["cells"]
    assert full["wall_seconds"] <= 3 * 3600, full["wall_seconds"] / 3600
    assert boundary_estimate("quick")["cpu_seconds"] < boundary_estimate("map")["cpu_seconds"] < full["cpu_seconds"]


def test_step_cost_uses_the_measured_entry_else_the_dearest_linear_mixer_scaled_by_tokens():
    from nalaformer.reproduce.boundary_budget import STEP_SECONDS, cell_seconds, step_seconds

    measured = STEP_SECONDS[("mqar", 32, 64, 64)]
    assert step_seconds("mqar", 32, 64, 64, "nala") == measured["nala"]
    dearest = max(v for m, v in measured.items() if m != "softmax")
    assert step_seconds("mqar", 32, 64, 64, "some_new_mixer") == dearest
    assert step_seconds("mqar", 32, 64, 32, "nala") == pytest.approx(measured["nala"] / 2)
    cell = Cell("mqar", "nala", 64, 2, 2, 100, 64, 1e-3, 0, {"seq_len": 32, "val_examples": 192})
    assert cell_seconds(cell) == pytest.approx(measured["nala"] * (100 + 1))
    with pytest.raises(ValueError, match="no measured step"):
        step_seconds("imagenet", 32, 64, 64, "nala")


def test_report_only_summarises_the_cells_that_ran_and_lists_the_others(tmp_path):
    from nalaformer.reproduce.boundary import run_boundary_sections, write_boundary_report
    from nalaformer.reproduce.small_training import run_cells

    cells = recall_grid_plan("tiny").cells()
    empty = run_boundary_sections(tmp_path, "tiny", ("recall",), train=False)["recall_grid"]
    assert empty["rows"] == [] and empty["not_run"] == [c.name for c in cells]
    assert not (tmp_path / "results" / "recall" / f"{cells[0].name}.json").exists()
    run_cells(cells[:1], tmp_path / "results" / "recall", workers=1)
    partial = run_boundary_sections(tmp_path, "tiny", ("recall",), train=False)["recall_grid"]
    assert [r["mixer"] for r in partial["rows"]] == [cells[0].mixer] and partial["not_run"] == [cells[1].name]
    text = write_boundary_report(tmp_path, "tiny").read_text()
    assert "Planned cells not run (1;" in text and f"- {cells[1].name}" in text


def _fake_run_cell(trained: list[str]):
    """A stand-in for ``run_cell`` that records which cells were trained and returns a finished record at once."""
    from dataclasses import asdict

    def run(cell: Cell) -> dict:
        trained.append(cell.name)
        return {
            "cell": asdict(cell),
            "name": cell.name,
            "accuracy": 0.5,
            "state_bytes": 1,
            "train_seconds": 0.0,
            "cpu_seconds": 0.0,
            "seconds_per_step": 0.01,
            "parameters": 1,
        }

    return run


def test_a_finished_cell_is_not_trained_again_but_a_broken_or_foreign_file_is(tmp_path, monkeypatch):
    import json

    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.small_training import run_cells

    trained: list[str] = []
    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell(trained))
    cells = recall_grid_plan("tiny").cells()
    folder = tmp_path / "results" / "recall"
    first = folder / f"{cells[0].name}.json"
    run_cells(cells[:1], folder, workers=1)
    assert trained == [cells[0].name] and first.is_file()
    records = run_cells(cells, folder, workers=1)
    assert trained == [cells[0].name, cells[1].name]  # the finished cell is read, not retrained
    assert [r["name"] for r in records] == [c.name for c in cells]
    whole = first.read_text()
    first.write_text(whole[: len(whole) // 2])  # a file cut while it was written or copied
    run_cells(cells, folder, workers=1)
    assert trained[2:] == [cells[0].name]
    assert json.loads(first.read_text())["accuracy"] == 0.5
    assert (folder / f"{cells[0].name}.json.rejected").read_text() == whole[: len(whole) // 2]
    record = json.loads(first.read_text())
    record["cell"]["steps"] += 1  # another recipe under the same name (a folder of another mode)
    first.write_text(json.dumps(record))
    run_cells(cells, folder, workers=1)
    assert trained[3:] == [cells[0].name]
    run_cells(cells, folder, workers=1)
    assert len(trained) == 4


def test_only_and_deadline_limit_what_is_trained_and_the_rest_is_read(tmp_path, monkeypatch):
    import time

    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.small_training import run_cells

    trained: list[str] = []
    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell(trained))
    cells = recall_grid_plan("tiny").cells()
    folder = tmp_path / "recall"
    assert run_cells(cells, folder, workers=1, deadline=time.monotonic() - 1) == [] and trained == []
    records = run_cells(cells, folder, workers=1, only={cells[1].name})
    assert trained == [cells[1].name] and [r["name"] for r in records] == [cells[1].name]
    assert [r["name"] for r in run_cells(cells, folder, workers=1, train=False)] == [cells[1].name]


def _square(x: int) -> int:
    return x * x


def test_the_worker_pool_takes_calls_one_at_a_time_so_a_deadline_can_stop_them():
    from nalaformer.reproduce.workers import map_in_workers

    pulled = []

    def calls():
        for x in range(6):
            pulled.append(x)
            yield (x,)

    results = map_in_workers(_square, calls(), workers=1)
    assert next(results) == ((0,), 0)
    results.close()
    assert pulled == [0, 1] or pulled == [0]  # the next call is taken only when the worker is free


def test_full_mode_runs_the_frontier_comparison_first_setting_by_setting():
    from nalaformer.reproduce.boundary_budget import planned_cells
    from nalaformer.reproduce.recall_grid import KEY_MIXERS

    plan = recall_grid_plan("full")
    cells = plan.cells()
    # 12 mixers x (widths 32 and 64 at the two T = 32 settings, width 64 at T = 64) with seed 0, and seeds 1, 2 of
    # the seven key mixers at width 64 at the two T = 32 settings
    assert len({c.name for c in cells}) == len(cells) == 12 * 5 + 2 * 2 * len(KEY_MIXERS) == 88
    first = cells[: 3 * len(KEY_MIXERS)]
    assert {(c.data["seq_len"], c.data["pairs"], c.width) for c in first} == {(32, 4, 64)}
    assert {(c.mixer, c.seed) for c in first} == {(m, s) for m in KEY_MIXERS for s in (0, 1, 2)}
    near = [c for c in cells if c.width == 64 and c.mixer in KEY_MIXERS]
    assert cells[: len(near)] == near  # every frontier cell (3 seeds) before the coarse pass
    assert all(c.seed == 0 for c in cells[len(near) :])
    at_64 = [c for c in cells if c.data["seq_len"] == 64]
    assert {(c.width, c.seed) for c in at_64} == {(64, 0)} and len(at_64) == 12
    long_range = planned_cells("full", ("long-range",))["long-range"]
    seeded = long_range_plan("full").seeded_mixers
    assert [(c.task, c.mixer, c.seed) for c in long_range[:9]] == [("pixels", m, s) for s in (0, 1, 2) for m in seeded]
    # pixels: 8 mixers with seed 0 and the seeded three with seeds 1, 2; Pathfinder and ListOps: the seeded three
    assert len(long_range) == 14 + 9 + 9 and len({c.name for c in long_range}) == 32
    assert {c.mixer for c in long_range if c.task != "pixels"} == set(seeded)


def test_cells_patterns_select_by_name_and_a_pattern_matching_nothing_is_an_error():
    from nalaformer.reproduce.boundary import select_cells

    names = [c.name for c in recall_grid_plan("full").cells()]
    chosen = select_cells(names, "mqar-T32-P4-*-w64-seed2, mqar-T64-P8-nala-w64-seed0")
    assert len(chosen) == 8 and "mqar-T64-P8-nala-w64-seed0" in chosen
    with pytest.raises(ValueError, match="--cells: 'mqar-T99-\\*' matches no cell"):
        select_cells(names, "mqar-T99-*")
    with pytest.raises(ValueError, match="--cells"):
        select_cells(names, " , ")


def test_list_and_estimate_show_what_is_finished_and_what_is_left(tmp_path, monkeypatch, capsys):
    import json

    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.boundary import main
    from nalaformer.reproduce.boundary_budget import boundary_estimate, cell_seconds, planned_cells, step_seconds
    from nalaformer.reproduce.small_training import run_cells

    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell([]))
    cells = recall_grid_plan("tiny").cells()
    run_cells(cells[:1], tmp_path / "results" / "recall", workers=1)
    assert main(["--mode", "tiny", "--sections", "recall", "--out", str(tmp_path), "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"done  {cells[0].name}  ~{cell_seconds(cells[0]):.0f} CPU-s",
        f"todo  {cells[1].name}  ~{cell_seconds(cells[1]):.0f} CPU-s",
    ]
    # the finished cell took twice the step-cost table's training time: the estimate says so
    path = tmp_path / "results" / "recall" / f"{cells[0].name}.json"
    record = json.loads(path.read_text())
    record["cpu_seconds"] = 2 * cells[0].steps * step_seconds("mqar", 16, 16, cells[0].batch_size, cells[0].mixer)
    path.write_text(json.dumps(record))
    assert main(["--mode", "tiny", "--sections", "recall", "--out", str(tmp_path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert f"finished in {tmp_path}: 1; the estimate below is of the 1 left" in out and "tiny mode: 1 cells" in out
    assert "recall: the finished cells' training took" in out and "(2.00x)" in out
    # the estimate of a subset is the sum of its cells' estimates
    full = planned_cells("full")
    subset = {"recall": full["recall"][:5], "long-range": full["long-range"][:2]}
    expected = sum(cell_seconds(c) for c in subset["recall"]) + sum(
        cell_seconds(c, memory=True) for c in subset["long-range"]
    )
    assert boundary_estimate("full", cells=subset)["cpu_seconds"] == pytest.approx(expected)
    for bad in (["--max-minutes", "0"], ["--workers", "0"]):
        with pytest.raises(ValueError, match=bad[0]):
            main(["--mode", "tiny", "--out", str(tmp_path), *bad])


def test_planned_cell_names_are_the_names_the_sections_train(tmp_path, monkeypatch):
    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.boundary import run_boundary_sections
    from nalaformer.reproduce.boundary_budget import planned_cells

    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell([]))
    results = run_boundary_sections(tmp_path, "tiny", ("recall", "long-range"), only={"listops-T24-nala-w16-seed0"})
    planned = planned_cells("tiny")
    assert results["recall_grid"]["not_run"] == [c.name for c in planned["recall"]]
    assert results["long_range"]["not_run"] == [
        c.name for c in planned["long-range"] if "listops-T24-nala" not in c.name
    ]
    # only the task with a cell to train had its data generated
    assert [p.name.split("-")[0] for p in (tmp_path / "results" / "long_range_data").iterdir()] == ["listops"]


def test_a_one_seed_leader_does_not_hide_the_call_among_the_seeded_mixers():
    from nalaformer.reproduce.boundary_stats import calls

    entries = {
        "gated_deltanet": mean_std([0.645]),
        "elu": mean_std([0.640, 0.595, 0.570]),
        "nala": mean_std([0.649, 0.533, 0.561]),
        "softmax": mean_std([0.599, 0.546, 0.546]),
    }
    overall, seeded = calls("pixels", entries)
    assert overall["best"] == "gated_deltanet" and overall["verdict"] == "not called (one seed)"
    assert seeded["task"] == "pixels, mixers with 3 seeds" and (seeded["best"], seeded["runner_up"]) == ("elu", "nala")
    assert seeded["seeds"] == 3 and seeded["verdict"] == "within seed noise"
    both = {k: entries[k] for k in ("elu", "nala")}
    assert calls("pixels", both) == [call_best("pixels", both)]  # the leader has the most seeds: one call


def _delta_cell(**fields) -> Cell:
    data = {"seq_len": 16, "pairs": 2, "vocab": 16, "train_examples": 32, "val_examples": 16}
    return Cell("mqar", fields.pop("mixer", "nala_gated_deltanet"), 16, 1, 2, 2, 8, 3e-3, 0, data, **fields)


def test_a_cell_names_its_lambda_and_the_model_is_built_with_it():
    from nalaformer.layers.delta import NALA_DELTA_LAM
    from nalaformer.reproduce.small_training import build_model

    assert _delta_cell().lam == NALA_DELTA_LAM and _delta_cell(mixer="nala").lam == 3.0
    assert _delta_cell(mixer="softmax").lam is None
    for cell in (_delta_cell(), _delta_cell(lam=2.5), _delta_cell(mixer="nala", lam=2.0)):
        model = build_model(cell, 16, 0, None)
        assert {layer.mixer.feature_map.lam for layer in model.model.layers} == {cell.lam}
    with pytest.raises(ValueError, match=r"Cell\.lam"):
        _delta_cell(mixer="softmax", lam=3.0)
    with pytest.raises(ValueError, match=r"Cell\.lam"):
        _delta_cell(lam=-1.0)


def test_a_record_of_another_lambda_is_trained_again(tmp_path, monkeypatch):
    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.small_training import run_cells

    trained: list[str] = []
    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell(trained))
    cell = _delta_cell()
    path = tmp_path / f"{cell.name}.json"
    run_cells([cell], tmp_path, workers=1)
    record = json.loads(path.read_text())
    record["cell"]["lam"] = 3.0  # trained with the released lambda, the plan's is 1
    path.write_text(json.dumps(record))
    run_cells([cell], tmp_path, workers=1)
    assert trained == [cell.name, cell.name]
    assert json.loads(path.read_text())["cell"]["lam"] == cell.lam == 1.0


def test_a_record_without_lambda_is_dated_by_its_file(tmp_path, monkeypatch):
    """Records written before the cells named their lambda: NaLa+GDN's is the default of the day it was written (3
    before lambda = 1 became the default, 1 since); NaLa's default never changed."""
    import os

    from nalaformer.reproduce import small_training
    from nalaformer.reproduce.small_training import NALA_DELTA_LAM_SINCE, run_cells

    trained: list[str] = []
    monkeypatch.setattr(small_training, "run_cell", _fake_run_cell(trained))
    for mixer, written, retrained in (
        ("nala_gated_deltanet", NALA_DELTA_LAM_SINCE - 3600, True),
        ("nala_gated_deltanet", NALA_DELTA_LAM_SINCE + 3600, False),
        ("nala", NALA_DELTA_LAM_SINCE - 3600, False),
    ):
        trained.clear()
        cell = _delta_cell(mixer=mixer)
        folder = tmp_path / f"{mixer}-{written:.0f}"
        run_cells([cell], folder, workers=1)
        path = folder / f"{cell.name}.json"
        record = json.loads(path.read_text())
        del record["cell"]["lam"]
        path.write_text(json.dumps(record))
        os.utime(path, (written, written))
        run_cells([cell], folder, workers=1)
        assert trained == [cell.name] * (2 if retrained else 1), (mixer, written)


def test_a_partial_grid_bounds_the_frontier_by_the_widths_not_run():
    """Full mode filled in pieces: width 64 ran, width 32 did not. The frontier is not placed at 64 (32 might solve
    it too), a setting not solved at 64 is "not reached" only at the widths run, and the tables say "not run"."""
    records = [_mqar("softmax", 64, s, a, 3000) for s, a in ((0, 0.97), (1, 0.95))]
    records += [_mqar("nala", 64, 0, 0.6, 2000)]
    grid = summarise_grid(records, widths=(32, 64))
    frontier = {f["mixer"]: f for f in grid["frontier"]}
    assert frontier["softmax"]["smallest_width"] == 64 and frontier["softmax"]["widths_not_run"] == [32]
    assert not frontier["softmax"]["settled"] and not frontier["nala"]["settled"]
    assert summarise_grid(records, widths=(64, 128))["frontier"][1]["settled"]  # only a larger width missing
    plan = {**recall_grid_plan("full").__dict__, "settings": [[32, 4], [32, 8]]}
    text = "\n".join(boundary_lines({**grid, "plan": plan, "not_run": [], "failures": []}, None, {}))
    assert "| T=32 P=4 | softmax | 64 or less (32 not run) | at most 3000 | 0.960 |" in text
    assert "| T=32 P=4 | nala | not reached at the widths run (32 not run) | n/a | 0.600 |" in text
    assert "| softmax | T=32 P=4 | not run | 0.960 ± 0.014 (n=2) |" in text
    assert "No cell run yet of the planned setting T=32 P=8; width 32; mixers nala_running_t" in text
    assert "seeds [0, 1, 2] for width 64 and mixers softmax, nala, nala_running_t" in text
    # a grid with every planned width run places the frontier as before
    whole = summarise_grid([*records, _mqar("softmax", 32, 0, 0.5, 1500)], widths=(32, 64))
    softmax = next(f for f in whole["frontier"] if f["mixer"] == "softmax")
    assert softmax["settled"] and "| T=32 P=4 | softmax | 64 | 3000 |" in "\n".join(
        boundary_lines({**whole, "plan": plan, "not_run": [], "failures": []}, None, {})
    )


def test_a_partial_long_range_run_names_the_tasks_and_mixers_not_run():
    from nalaformer.reproduce.boundary_report import seed_count_text

    records = []
    for seed, accuracy in enumerate((0.55, 0.57)):
        cell = Cell("pixels", "nala", 16, 1, 2, 10, 8, 1e-3, seed, {"seq_len": 784, "source": "fashion-mnist"})
        records.append(
            {"cell": cell.__dict__, "name": cell.name, "accuracy": accuracy, "seconds_per_step": 0.01,
             "step_peak_bytes": 2**20, "parameters": 1}
        )  # fmt: skip
    plan = long_range_plan("full").__dict__
    plan = {**plan, "tasks": [t.__dict__ for t in plan["tasks"]]}
    long_range = {**summarise_long_range(records), "plan": plan, "not_run": [], "failures": []}
    text = "\n".join(boundary_lines(None, long_range, {}))
    assert "Not run yet: pixels: softmax, nala_running_t" in text
    assert "pathfinder (no mixer); listops (no mixer)" in text
    assert seed_count_text([3, 3]) == "3 seeds" and seed_count_text([1]) == "one seed"
    assert seed_count_text([1, 3, 2]) == "1-3 seeds"


def test_the_report_tells_a_width_not_planned_at_a_setting_from_one_not_run_yet():
    from dataclasses import asdict

    from nalaformer.reproduce.boundary_report import long_range_not_run_lines, recall_lines
    from nalaformer.reproduce.long_range import LongRangePlan, LongRangeTask
    from nalaformer.reproduce.recall_grid import RecallGridPlan

    settings = ((32, 4), (64, 8))
    plan = RecallGridPlan(
        settings, (16, 64), ("softmax", "nala"), (0,), 1, 8, 1e-3, 32, 8, 8, setting_widths=((settings[1], (64,)),)
    )
    long_cell = Cell("mqar", "nala", 64, 2, 2, 10, 8, 1e-3, 0, {"seq_len": 64, "pairs": 8, "vocab": 32})
    records = [
        _mqar("nala", 64, 0, 0.5, 100),  # T = 32: width 16 planned, not run yet
        {"cell": long_cell.__dict__, "name": long_cell.name, "accuracy": 0.2, "state_bytes": 100, "train_seconds": 1},
    ]
    grid = {**summarise_grid(records, plan.widths), "plan": asdict(plan)}
    lines = "\n".join(recall_lines(grid, {})).splitlines()
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| nala |")}
    assert rows, lines
    assert "not run" in rows["T=32 P=4"] and "not planned" not in rows["T=32 P=4"]
    assert "not planned" in rows["T=64 P=8"]  # width 16 is not in that setting's plan
    tasks = (LongRangeTask("pixels", 8, 8), LongRangeTask("listops", 8, 8, {}, ("nala",)))
    long_plan = LongRangePlan(tasks, ("softmax", "nala"), (0,), 16, 1, 2, 1, 8, 1e-3)
    ran = {"pixels": {"mixers": {"nala": {}}}, "listops": {"mixers": {"nala": {}}}}
    lines = long_range_not_run_lines({"plan": asdict(long_plan), "tasks": ran})
    # listops plans NaLa alone, so only pixels misses a mixer
    assert lines[0] == "Not run yet: pixels: softmax (the table holds no result of them)."


def test_a_cells_step_memory_is_measured_in_a_fresh_process(monkeypatch):
    import nalaformer.bench.memory as memory
    from nalaformer.reproduce.small_training import training_step_memory

    cell = Cell("pathfinder", "nala", 8, 1, 2, 1, 2, 1e-3, 0, {"seq_len": 16, "classes": 2})
    calls = []
    monkeypatch.setattr(memory, "peak_memory_bytes", lambda case, kwargs, **options: calls.append(options) or 1.0)
    # not in the process that trained the cell, where a step reuses freed heap memory unseen by the resident set
    assert training_step_memory(cell) == 1.0 and calls == [{"threads": 1}]
    monkeypatch.undo()
    measured = training_step_memory(cell)
    assert measured != measured or measured > 0  # nan off Linux; a step allocates activations and gradients
