"""The benchmark suite end to end at toy sizes, and the pieces whose logic can be checked exactly.

Speed is never asserted here: ratios are printed by ``nalaformer bench``; these tests check that every suite runs,
writes its files and computes its figures from the timings it took.
"""

from __future__ import annotations

import csv
import functools
import math

import pytest
import torch

from nalaformer.bench import model_report, operators, report
from nalaformer.bench.memory import peak_memory_bytes, rss_supported
from nalaformer.bench.roofline import nala_forward_flops
from nalaformer.bench.timing import Timing, paired_ratio, time_interleaved
from nalaformer.cli import main
from nalaformer.ops import nala_attention
from tests.assertions import assert_close
from tests.ops.test_nala_compile import _skip_without_inductor, opt_in


def test_time_interleaved_rotates_candidates_and_keeps_every_round():
    order: list[str] = []
    candidates = {name: (lambda name=name: order.append(name)) for name in "abc"}
    timings = time_interleaved(candidates, rounds=3, warmup=1, min_round_s=0.0)
    # one warm-up call each, then rounds starting at a, b, c in turn
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    for timing in timings.values():
        assert timing.rounds == 3 and len(timing.samples_s) == 3 and timing.calls_per_round == 1
        assert timing.min_s <= timing.median_s <= timing.max_s


def test_paired_ratio_is_the_median_of_per_round_ratios():
    reference = Timing(4.0, 2.0, 8.0, 3, 1, (2.0, 4.0, 8.0))
    candidate = Timing(1.0, 1.0, 4.0, 3, 1, (1.0, 1.0, 4.0))
    # per-round ratios 2, 4, 2 -> median 2 (the ratio of medians would be 4)
    assert paired_ratio(reference, candidate) == 2.0
    with pytest.raises(ValueError, match="different runs"):
        paired_ratio(reference, Timing(1.0, 1.0, 1.0, 1, 1, (1.0,)))


@pytest.mark.parametrize(
    "bad,match", [(dict(rounds=0), "rounds"), (dict(warmup=-1), "warmup")], ids=["rounds", "warmup"]
)
def test_time_interleaved_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        time_interleaved({"a": lambda: None}, **bad)
    with pytest.raises(ValueError, match="at least one"):
        time_interleaved({})


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_plain_nala_reference_matches_the_library(causal):
    """The benchmark's unfused NaLa (the "before" row) computes what ``nala_attention`` computes."""
    q, k, v = operators.make_inputs(2, 70, 2, 16, torch.device("cpu"), torch.float64)
    assert_close("o", nala_attention(q, k, v, causal=causal), operators.plain_nala_attention(q, k, v, causal))


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("method", operators.METHODS)
def test_every_method_runs_forward_and_backward(method, causal):
    attention = operators.build_method(method, causal, heads=2, head_dim=8, device=torch.device("cpu"))
    q, k, v = operators.make_inputs(1, 33, 2, 8, torch.device("cpu"), torch.float32)
    out = attention(q, k, v)
    assert out.shape == (1, 33, 2, 8) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_roofline_flop_count():
    # per head: 2*T*2D*D for the state and again for the output
    assert nala_forward_flops(1000, heads=4, head_dim=64) == 4 * 8 * 1000 * 64**2
    assert nala_forward_flops(1000, 1, 64, causal=True) == 8 * 1000 * 64**2 + 2 * 1000 * 64 * 128 + 2 * 1000 * 64 * 64


@pytest.mark.skipif(not rss_supported(), reason="needs Linux /proc to reset and read the resident-set peak")
def test_peak_memory_counts_what_the_call_allocates():
    """In a fresh process: at least the output and the gradients of q, k, v, and not wildly more."""
    seq_len, heads, dim = 8192, 2, 32
    kwargs = dict(method="nala", causal=False, seq_len=seq_len, batch=1, heads=heads, head_dim=dim)
    peak = peak_memory_bytes("nalaformer.bench.operators:memory_case", kwargs, threads=1)
    print(f"peak memory of NaLa fwd+bwd at T={seq_len}: {peak / 2**20:.2f} MiB")
    # o, dq, dk, dv (4 x T*H*D fp32) are alive together at the peak
    lower = 4 * seq_len * heads * dim * 4
    assert lower <= peak < 4 * lower


def test_targets_are_judged_from_the_rows():
    rows = [
        dict(method="nala_rope", causal=False, seq_len=1024, speedup_vs_sdpa=2.5, rope_over_plain=math.nan),
        dict(method="nala_rope", causal=False, seq_len=4096, speedup_vs_sdpa=9.0, rope_over_plain=1.2),
        dict(method="nala_rope", causal=True, seq_len=16384, speedup_vs_sdpa=16.0, rope_over_plain=1.3),
        dict(method="nala", causal=False, seq_len=1024, speedup_vs_sdpa=2.5, peak_bytes_per_token=math.nan),
        dict(method="nala", causal=False, seq_len=4096, speedup_vs_sdpa=9.0, peak_bytes_per_token=1000.0),
        dict(method="nala", causal=False, seq_len=65536, speedup_vs_sdpa=math.nan, peak_bytes_per_token=1100.0),
    ]
    rows = [dict(row, **{"pass": "fwd+bwd"}) for row in rows]
    targets = {t.name: t for t in report.evaluate_targets(rows, ())}
    assert targets["non-causal fwd+bwd with RoPE vs SDPA, T=1024"].met is True
    assert targets["non-causal fwd+bwd with RoPE vs SDPA, T=4096"].met is False
    assert targets["non-causal fwd+bwd with RoPE vs SDPA, T=16384"].met is None
    assert targets["causal fwd+bwd with RoPE vs causal SDPA, T=16384"].met is True
    assert targets["non-causal fwd+bwd time with RoPE / without, T=4096"].met is True
    assert targets["causal fwd+bwd time with RoPE / without, T=16384"].met is False
    assert targets["causal fwd+bwd time with RoPE / without, T=4096"].met is None
    memory = targets["non-causal fwd+bwd peak memory per token, T=4k..64k"]
    assert memory.met is True and memory.measured == pytest.approx(10.0)
    assert "**missed**" in report.targets_markdown(list(targets.values()))


def test_model_targets_are_judged_from_the_rows_at_the_most_threads():
    decoding = [
        dict(mixer="nala", threads=t, context=c, per_token_ms=ms, speedup_vs_reference=s, speedup_vs_1_thread=r)
        for t, c, ms, s, r in [(1, 1024, 9.0, 3.0, 1.0), (2, 1024, 3.0, 20.0, 3.0), (2, 16384, 3.3, 30.0, 2.0)]
    ]
    vision = [
        {"layout": "nala", "size": 224, "pass": "inference", "threads": 2, "speedup_vs_softmax": 1.4},
        {"layout": "nala", "size": 512, "pass": "train", "threads": 2, "speedup_vs_softmax": 6.0},
    ]
    language = [dict(mixer="nala", seq_len=1024, threads=2, speedup_vs_softmax=1.25, speedup_vs_1_thread=1.5)]
    targets = {t.name: t for t in model_report.model_targets(decoding, vision, language)}
    assert targets["decoding per token at 16k (before: 10.4 ms), 2 threads"].met is True
    assert targets["decoding vs softmax KV cache at 16k, 2 threads"].met is True
    flat = targets["decoding per-token latency, context 1k..16k, 2 threads"]
    assert flat.met is True and flat.measured == pytest.approx(10.0)
    assert targets["vision all-NaLa vs all-softmax, inference 224², 2 threads"].met is False
    assert targets["vision all-NaLa vs all-softmax, train 512², 2 threads"].met is True
    assert targets["vision all-NaLa vs all-softmax, inference 1024², 2 threads"].met is None
    assert targets["LM training tokens/s vs softmax, T=1024, 2 threads"].met is True
    # judged at every thread count: one thread has only the 1k decoding row
    assert targets["decoding vs softmax KV cache at 16k, 1 thread"].met is None
    # the slowest thread scaling over every row with more than one thread: the language row's 1.5x
    scaling = targets["slowest model row, N threads vs 1"]
    assert scaling.met is False and scaling.measured == pytest.approx(1.5)
    table = model_report.models_markdown(decoding, vision, language)
    assert "| decoding, context 16384 | 2 | ms / token | 3.3 |" in table


def test_result_names_carry_device_and_torch_version(tmp_path):
    path = report.result_path(tmp_path, "operators", "cpu", "csv", threads=2)
    assert path.name.startswith("operators-cpu-") and "-2c-torch" in path.name
    assert path.name.endswith(f"torch{torch.__version__.split('+')[0]}.csv")


def test_bench_command_runs_every_suite_end_to_end(tmp_path, capsys):
    assert main(["bench", "--tiny", "--no-memory", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "## Targets" in printed and "| target | goal | measured |" in printed
    for suite in ("operators", "roofline", "decoding", "vision", "language"):
        (path,) = tmp_path.glob(f"{suite}-*.csv")
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows and {"device", "threads", "torch"} <= set(rows[0])
    with next(tmp_path.glob("operators-*.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == set(operators.METHODS)
    nala = [row for row in rows if row["method"] == "nala" and row["pass"] == "fwd+bwd"]
    assert len(nala) == 4 and all(float(row["speedup_vs_sdpa"]) > 0 for row in nala)
    rope = [row for row in rows if row["method"] == "nala_rope" and row["pass"] == "fwd+bwd"]
    assert len(rope) == 4 and all(float(row["rope_over_plain"]) > 0 for row in rope)
    for suite in ("operators", "decoding", "vision"):
        assert next(tmp_path.glob(f"{suite}-*.png")).stat().st_size > 0
    (summary,) = tmp_path.glob("summary-*.md")
    assert summary.name.startswith("summary-cpu-") and summary.read_text().startswith("# Benchmarks")
    assert "Wall time: operators " in summary.read_text()


def test_a_run_of_some_suites_names_its_summary_after_them(tmp_path):
    # two runs of different suites into one folder keep their own summaries, each with its suites' wall time
    assert main(["bench", "decoding", "language", "--tiny", "--out", str(tmp_path)]) == 0
    assert main(["bench", "roofline", "--tiny", "--out", str(tmp_path)]) == 0
    (models,) = tmp_path.glob("summary-decoding-language-cpu-*.md")
    assert "Wall time: decoding " in models.read_text() and ", language " in models.read_text()
    assert len(list(tmp_path.glob("summary-roofline-cpu-*.md"))) == 1


def test_bench_command_rejects_unknown_suite():
    with pytest.raises(ValueError, match="unknown suite"):
        main(["--debug", "bench", "everything", "--tiny"])


def test_decoding_compile_rows_sit_beside_the_eager_ones(tmp_path, monkeypatch):
    # the suite's plumbing only, with torch.compile standing in as the identity (what inductor compiles is checked in
    # tests/ops/test_nala_compile.py)
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    assert main(["bench", "decoding", "--tiny", "--compile", "--out", str(tmp_path)]) == 0
    with next(tmp_path.glob("decoding-*.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    compiled = [row for row in rows if row["mixer"] == "nala+compile"]
    assert [int(row["context"]) for row in compiled] == [32, 64]
    # the compilation is paid at the first context, timed apart from the per-token rounds
    assert float(compiled[0]["compile_s"]) > 0 and float(compiled[1]["compile_s"]) == 0
    assert all(float(row["speedup_vs_reference"]) > 0 and float(row["per_token_ms"]) > 0 for row in compiled)
    assert all(row["compile_s"] == "nan" for row in rows if row["mixer"] != "nala+compile")
    assert "| compile_s |" in next(tmp_path.glob("summary-*.md")).read_text()


def _outputs_and_gradients(attention, inputs) -> dict[str, torch.Tensor]:
    o = attention(*inputs)
    return dict(zip(("o", "dq", "dk", "dv"), (o, *torch.autograd.grad(o.square().sum(), inputs))))


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("method", operators.COMPILABLE)
def test_compiled_operator_methods_give_the_eager_results(method, causal):
    # aot_eager: dynamo's capture and AOTAutograd's backward without code generation (inductor: the opt-in test below)
    torch._dynamo.reset()
    compiler = functools.partial(torch.compile, backend="aot_eager", fullgraph=True)
    compiled = operators.build_method(method, causal, 3, 6, torch.device("cpu"), compiler)
    eager = operators.build_method(method, causal, 3, 6, torch.device("cpu"))
    # odd sizes: 37 tokens (not a multiple of the blocked path's pieces), 3 heads, D = 6
    inputs = operators.make_inputs(2, 37, 3, 6, torch.device("cpu"), torch.float32)
    expected = _outputs_and_gradients(eager, inputs)
    for name, got in _outputs_and_gradients(compiled, inputs).items():
        assert_close(name, expected[name], got, ratio=1e-5, atol=1e-6)


@pytest.mark.slow
@opt_in
def test_compiled_operator_method_under_inductor_gives_the_eager_result():
    _skip_without_inductor()
    torch._dynamo.reset()
    compiled = operators.build_method("nala_rope", True, 3, 6, torch.device("cpu"), torch.compile)
    eager = operators.build_method("nala_rope", True, 3, 6, torch.device("cpu"))
    inputs = operators.make_inputs(2, 37, 3, 6, torch.device("cpu"), torch.float32)
    expected = _outputs_and_gradients(eager, inputs)
    for name, got in _outputs_and_gradients(compiled, inputs).items():
        assert_close(name, expected[name], got)


@pytest.mark.slow
def test_operator_compile_rows_sit_beside_the_eager_ones():
    torch._dynamo.reset()
    settings = operators.OperatorSettings(
        lengths=(37,),
        methods=("nala", "nala_rope"),
        modes=(False,),
        heads=3,
        head_dim=6,
        rounds=1,
        memory_methods=(),
        min_round_s=0.0,
        compile=True,
        compile_backend="aot_eager",
    )
    rows = operators.run_operator_benchmarks(settings)
    names = ["nala", "nala_rope", "sdpa", "nala+compile", "nala_rope+compile"]
    assert [row["method"] for row in rows if row["pass"] == "fwd"] == names
    for row in rows:
        if row["method"].endswith("+compile"):
            assert row["compile_s"] > 0 and row["speedup_vs_eager"] > 0 and row["speedup_vs_sdpa"] > 0
        else:
            assert math.isnan(row["compile_s"]) and math.isnan(row["speedup_vs_eager"])
    # the compiled pair's RoPE ratio is taken between the compiled rows
    assert all(row["rope_over_plain"] > 0 for row in rows if row["method"] == "nala_rope+compile")
    assert "| nala_rope+compile | non-causal | 37 | fwd+bwd |" in report.compiled_operators_markdown(rows)


def test_operator_compile_cli_flag_wires_through(tmp_path, monkeypatch):
    # the CLI's plumbing only, with torch.compile standing in as the identity
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: seen.append(options) or fn)
    argv = ["bench", "operators", "--tiny", "--no-memory", "--methods", "nala_rope", "--modes", "causal"]
    assert main([*argv, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    assert seen and all(options == dict(backend="inductor", dynamic=False) for options in seen)
    with next((tmp_path / "compiled").glob("operators-*.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == {"nala_rope", "sdpa", "nala_rope+compile"}
    assert all(float(row["compile_s"]) > 0 for row in rows if row["method"] == "nala_rope+compile")
    assert "### Compiled operators" in next((tmp_path / "compiled").glob("summary-*.md")).read_text()
    # without --compile: neither the columns nor the table
    assert main([*argv, "--out", str(tmp_path / "eager")]) == 0
    with next((tmp_path / "eager").glob("operators-*.csv")).open() as handle:
        assert "compile_s" not in next(csv.reader(handle))
    assert "compile_s" not in next((tmp_path / "eager").glob("summary-*.md")).read_text()


def test_compile_needs_a_suite_and_a_method_that_use_it():
    with pytest.raises(ValueError, match="--compile applies to the operators and decoding suites"):
        main(["--debug", "bench", "vision", "--tiny", "--compile"])
    with pytest.raises(ValueError, match="compile: methods must include one of"):
        main(["--debug", "bench", "operators", "--tiny", "--no-memory", "--methods", "elu", "--compile"])
    with pytest.raises(ValueError, match=r"only .* are compiled here, got method 'elu'"):
        operators.build_method("elu", False, 2, 8, torch.device("cpu"), torch.compile)
