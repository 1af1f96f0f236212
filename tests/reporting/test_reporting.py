"""The shared output helpers: one Markdown table, one JSON convention (NaN -> null), one matplotlib loader."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from nalaformer.bench import report as bench_report
from nalaformer.reporting import json_line, load_pyplot, markdown_table, read_json, to_json, write_json
from nalaformer.train.metrics import MetricsLog, read_metrics


def test_markdown_table_formats_cells_and_checks_row_length():
    table = markdown_table(["name", "x", "n"], [["a", 0.123456, 3], ["b", "1.5", None]])
    assert table.splitlines() == ["| name | x | n |", "|---|---|---|", "| a | 0.1235 | 3 |", "| b | 1.5 | None |"]
    with pytest.raises(ValueError, match=r"row 0 has 2 cells, expected 3"):
        markdown_table(["name", "x", "n"], [["a", 1.0]])


def test_json_writes_non_finite_as_null_and_numpy_as_plain(tmp_path):
    value = {"a": math.nan, "b": [math.inf, np.float32(0.5)], "c": np.arange(2), 3: (1, -math.inf)}
    expected = {"a": None, "b": [None, 0.5], "c": [0, 1], "3": [1, None]}
    assert to_json(value) == expected
    assert json.loads(json_line(value)) == expected
    path = write_json(value, tmp_path / "sub" / "x.json")
    assert read_json(path) == expected and not path.with_suffix(".json.tmp").exists()
    assert read_json(tmp_path / "absent.json") is None


def test_metrics_log_writes_nan_as_null(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": math.nan, "grad_norm": math.inf})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": None, "grad_norm": None}]
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and '"nan"' not in text


@pytest.fixture
def no_matplotlib(monkeypatch):
    # a None entry in sys.modules makes `import matplotlib` raise ImportError
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_missing_matplotlib_names_the_plot_extra(no_matplotlib, tmp_path):
    with pytest.raises(ImportError, match=r"nalaformer\[plot\]"):
        load_pyplot()
    rows = [{"mixer": "nala", "context": 8, "per_token_ms": 1.0}]
    with pytest.raises(ImportError, match=r"nalaformer\[plot\]"):
        bench_report.plot_series(rows, "context", "per_token_ms", "mixer", tmp_path / "x.png", "t")


def test_eval_command_writes_a_nan_metric_as_null(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from nalaformer.cli import main
    from nalaformer.train import eval_command

    def evaluate_run(run_dir, **kwargs):
        return {"loss": math.nan, "accuracy": 0.5}

    monkeypatch.setattr(eval_command, "read_run_config", lambda run_dir: ("image", None, None))
    monkeypatch.setattr(eval_command, "load_recipe", lambda name: SimpleNamespace(evaluate_run=evaluate_run))
    assert main(["eval", str(tmp_path)]) == 0
    expected = {"split": "val", "ema": False, "loss": None, "accuracy": 0.5}
    assert read_metrics(tmp_path / "eval.jsonl") == [expected]
    assert json.loads(capsys.readouterr().out) == expected
