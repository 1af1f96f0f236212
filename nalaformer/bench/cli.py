"""``nalaformer bench``: operator, decoding, model and roofline benchmarks; CSV + PNG per suite, targets on stdout.

``nalaformer bench`` runs every suite at the reference settings (B=1, H=4, D=64, fp32, all threads, T = 256..65536) and
writes ``<out>/<suite>-<device>-torch<version>.{csv,png}`` plus ``summary-<device>-torch<version>.md`` (the tables and
the targets). ``--tiny`` runs everything end to end at toy sizes in seconds (for tests; nothing is written unless
``--out`` is given).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUITES = ("operators", "roofline", "decoding", "vision", "language")
# run only when named (not part of "all"): what limits the model-level ratios (nalaformer.bench.ceiling)
EXTRA_SUITES = ("ceiling",)
# the suites with torch.compile rows (--compile)
COMPILE_SUITES = ("operators", "decoding")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer bench``."""
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"any of {', '.join(SUITES)} (default: all), or {', '.join(EXTRA_SUITES)} (only when named)",
    )
    parser.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:n] (default: cuda when available, else cpu)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="operator input dtype (default: float32 on CPU; bfloat16 on CUDA, where SDPA then runs its flash kernel)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds end to end (tests)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="operator sequence lengths")
    parser.add_argument("--methods", nargs="+", default=None, help="operator methods (default: all)")
    parser.add_argument("--modes", choices=["noncausal", "causal"], nargs="+", default=None, help="operator modes")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default per suite)")
    parser.add_argument("--sdpa-max-len", type=int, default=16384, help="skip SDPA above this length")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--contexts", type=int, nargs="+", default=None, help="decoding context lengths")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="vision input sizes (square)")
    parser.add_argument("--budget", type=float, default=60.0, help="vision: one call above this many s is not repeated")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=None, help="vision train-step sizes (square)")
    parser.add_argument(
        "--lm-seq-len", type=int, nargs="+", default=None, help="language-model training sequence lengths"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="operators, decoding: also time torch.compile of the NaLa operator (operators) and of the NaLa model's"
        " step (decoding) beside the eager rows, compile time apart",
    )
    parser.add_argument(
        "--thread-counts",
        type=int,
        nargs="+",
        default=None,
        help="model suites: thread counts timed side by side (default: 1 and --threads / all)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        metavar="MODEL:SIZE",
        help="ceiling: the cases, in this order (default: lm:1024 vision:512 lm:8192 operator:4096)",
    )
    parser.add_argument("--no-profile", action="store_true", help="ceiling: time only, no profiled breakdown")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites, write their files, print the tables and targets."""
    import torch

    from nalaformer.bench import model_report, report

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here")
    unknown = sorted(set(args.suites) - {*SUITES, *EXTRA_SUITES, "all"})
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES + EXTRA_SUITES)} or all")
    named = tuple(dict.fromkeys(args.suites))
    suites = SUITES + tuple(s for s in named if s in EXTRA_SUITES) if not named or "all" in named else named
    if args.compile and not set(COMPILE_SUITES) & set(suites):
        raise ValueError(f"--compile applies to the {' and '.join(COMPILE_SUITES)} suites, not to {', '.join(suites)}")
    out = args.out if args.out is not None else (None if args.tiny else Path("benchmarks/results"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    results: dict[str, list[dict[str, Any]]] = {}
    extra = report.metadata(device, dtype)
    runners = _suite_runners(args, device, dtype)
    durations: dict[str, float] = {}
    for suite in (name for name in SUITES + EXTRA_SUITES if name in suites):
        # each suite's files are written as soon as it finishes: a later suite's failure does not lose them
        started = time.perf_counter()
        results[suite] = runners[suite]()
        durations[suite] = time.perf_counter() - started
        _log(f"{suite}: {durations[suite]:.0f} s")
        if out is not None:
            _write_suite(suite, results[suite], out, device, extra, args.threads)

    targets = []
    if {"operators", "roofline"} & set(results):
        targets += report.evaluate_targets(results.get("operators", ()), results.get("roofline", ()))
    if {"decoding", "vision", "language"} & set(results):
        targets += model_report.model_targets(*(results.get(name, ()) for name in ("decoding", "vision", "language")))
    summary = _summary(results, targets, device, dtype, durations)
    print(summary)
    if out is not None:
        # a run of some suites names them, so that runs of different suites keep their own summaries
        ran = "" if set(results) == set(SUITES) else "-".join(results) + "-"
        path = out / f"summary-{ran}{report.device_slug(device, args.threads)}-torch{report.torch_version()}.md"
        path.write_text(summary)
        _log(f"wrote {path}")
    return 0


def _summary(
    results: dict[str, list[dict[str, Any]]], targets: list, device: Any, dtype: Any, durations: dict[str, float]
) -> str:
    import torch

    from nalaformer.bench import model_report, report
    from nalaformer.reporting import markdown_table

    command = "nalaformer bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "nalaformer bench"
    where = f"{report.metadata(device)['device']}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [
        f"# Benchmarks: {where}",
        "",
        f"Command: `{command.strip()}`",
        "",
        "Wall time: " + ", ".join(f"{suite} {seconds:.0f} s" for suite, seconds in durations.items()),
    ]
    if targets or set(results) & set(SUITES):  # a run of the ceiling suite alone judges no target
        lines += ["", "## Targets", "", report.targets_markdown(targets)]
    if "operators" in results:
        title = f"## Operators (B=1, H=4, D=64, {str(dtype).removeprefix('torch.')})"
        lines += ["", title, "", report.operators_markdown(results["operators"])]
        lines += ["", report.operators_markdown(results["operators"], pass_name="fwd")]
        if _compiled(results["operators"]):
            lines += ["", "### Compiled operators", "", report.compiled_operators_markdown(results["operators"])]
    if "ceiling" in results:
        from nalaformer.bench import ceiling

        lines += ["", "## Ceiling", "", ceiling.ceiling_markdown(results["ceiling"])]
    model_rows = [results.get(name, ()) for name in ("decoding", "vision", "language")]
    if any(model_rows):
        lines += ["", "## Model level", "", model_report.models_markdown(*model_rows)]
    speedups = ("speedup_vs_1_thread",)
    for suite, columns in (
        ("roofline", ("name", "seq_len", "median_ms", "gflops_per_s", "fraction_of_matmul")),
        (
            "decoding",
            (
                "mixer",
                "threads",
                "context",
                "per_token_ms",
                "speedup_vs_reference",
                *speedups,
                "state_mib",
                *(("compile_s",) if _compiled(results.get("decoding", ())) else ()),
            ),
        ),
        (
            "vision",
            ("layout", "size", "batch", "pass", "threads", "images_per_s", "speedup_vs_softmax", *speedups, "note"),
        ),
        ("language", ("mixer", "seq_len", "batch", "threads", "tokens_per_s", "speedup_vs_softmax", *speedups)),
    ):
        if suite in results:
            table = markdown_table(columns, [[row.get(c, "") for c in columns] for row in results[suite]])
            lines += ["", f"## {suite.capitalize()}", "", table]
    return "\n".join(lines) + "\n"


def _compiled(rows: Any) -> bool:
    """Whether a run timed compiled rows (their ``compile_s`` is a number, the eager rows' NaN)."""
    return any(not math.isnan(row.get("compile_s", math.nan)) for row in rows)


def _suite_runners(args: argparse.Namespace, device: Any, dtype: Any) -> dict[str, Callable[[], list[dict[str, Any]]]]:
    """Each suite's settings from the command line (``--tiny`` picks seconds-long sizes), as a call that runs it."""
    import torch

    from nalaformer.bench import ceiling, decoding, models, operators, report, roofline

    tiny = args.tiny
    counts = args.thread_counts or sorted({1, args.threads or torch.get_num_threads()})
    modes = (False, True) if args.modes is None else tuple(mode == "causal" for mode in args.modes)
    operator_settings = operators.OperatorSettings(
        lengths=tuple(args.lengths or ((64, 128) if tiny else operators.OperatorSettings.lengths)),
        methods=tuple(args.methods or operators.METHODS),
        modes=modes,
        heads=2 if tiny else 4,
        head_dim=16 if tiny else 64,
        dtype=dtype,
        device=device,
        rounds=args.rounds or (1 if tiny else 5),
        sdpa_max_len=args.sdpa_max_len,
        memory_methods=() if args.no_memory else ("nala", "nala_rope", "sdpa"),
        threads=args.threads,
        min_round_s=0.0 if tiny else 0.02,
        compile=args.compile,
    )
    roofline_settings = roofline.RooflineSettings(
        seq_len=256 if tiny else 16384,
        matmul_size=128 if tiny else 2048,
        rounds=args.rounds or (1 if tiny else 7),
        device=device,
        min_round_s=0.0 if tiny else 0.02,
    )
    decoding_settings = decoding.DecodingSettings(
        contexts=tuple(args.contexts or ((32, 64) if tiny else decoding.DecodingSettings.contexts)),
        preset="tiny" if tiny else "small",
        threads=counts,
        rounds=args.rounds or (1 if tiny else 7),
        device=device,
        min_round_s=0.0 if tiny else 0.05,
        compile=args.compile,
    )
    vision_settings = models.VisionSettings(
        variant="nalaformer_nano" if tiny else "nalaformer_t",
        sizes=tuple(args.sizes or ((32,) if tiny else models.VisionSettings.sizes)),
        train_sizes=tuple(args.train_sizes or ((32,) if tiny else (224, 512))),
        batch=None if tiny else {224: 4},
        threads=counts,
        rounds=args.rounds or (1 if tiny else 3),
        budget_s=args.budget,
        device=device,
    )
    language_settings = models.LanguageSettings(
        seq_lens=tuple(args.lm_seq_len or ((32,) if tiny else models.LanguageSettings.seq_lens)),
        preset="tiny" if tiny else "small",
        threads=counts,
        rounds=args.rounds or (1 if tiny else 3),
        device=device,
        min_round_s=0.0 if tiny else 0.02,
    )

    def partial_ceiling(rows: list[dict[str, Any]]) -> None:
        # the cases done so far, written as they finish (a later, longer case may be stopped)
        if args.out is not None or not tiny:
            folder = args.out or Path("benchmarks/results")
            _write_suite("ceiling", rows, folder, device, report_extra, args.threads)
            name = f"summary-ceiling-{report.device_slug(device, args.threads)}-torch{report.torch_version()}.md"
            (folder / name).write_text("# Ceiling (cases so far)\n\n" + ceiling.ceiling_markdown(rows) + "\n")

    report_extra = report.metadata(device, dtype)
    ceiling_settings = ceiling.CeilingSettings(
        cases=tuple(
            ceiling.parse_cases(args.cases)
            if args.cases
            else (("lm", 32), ("vision", 32), ("operator", 64))
            if tiny
            else ceiling.CASES
        ),
        preset="tiny" if tiny else "small",
        variant="nalaformer_nano" if tiny else "nalaformer_t",
        heads=2 if tiny else 4,
        head_dim=16 if tiny else 64,
        rounds=args.rounds or (1 if tiny else 3),
        profile=not args.no_profile,
        device=device,
        min_round_s=0.0 if tiny else 0.02,
    )
    return {
        "ceiling": lambda: ceiling.run_ceiling(ceiling_settings, progress=_log, on_case=partial_ceiling),
        "operators": lambda: operators.run_operator_benchmarks(operator_settings, progress=_log),
        "roofline": lambda: roofline.run_roofline(roofline_settings, progress=_log),
        "decoding": lambda: decoding.run_decoding(decoding_settings, progress=_log),
        "vision": lambda: models.run_vision(vision_settings, progress=_log),
        "language": lambda: models.run_language(language_settings, progress=_log),
    }


def _write_suite(
    suite: str, rows: list[dict[str, Any]], out: Path, device: Any, extra: dict[str, Any], threads: int | None
) -> None:
    """``<suite>-<device>-torch<version>.csv`` and, for the suites with a plot, ``.png``."""
    from nalaformer.bench import report

    out.mkdir(parents=True, exist_ok=True)
    _log(f"wrote {report.write_csv(rows, report.result_path(out, suite, device, 'csv', threads), extra)}")
    title = f"{extra['device']}, {extra['threads']} threads, torch {extra['torch']}"
    path = report.result_path(out, suite, device, "png", threads)
    try:
        if suite == "operators":
            written = report.plot_operators(rows, path, title)
        elif suite == "decoding":
            series = [dict(row, series=f"{row['mixer']} @{row['threads']}") for row in rows]
            label = f"decoding latency ({title})"
            written = report.plot_series(series, "context", "per_token_ms", "series", path, label)
        elif suite == "language":
            series = [dict(row, series=f"{row['mixer']} @{row['threads']}") for row in rows]
            label = f"LM training tokens/s ({title})"
            written = report.plot_series(series, "seq_len", "tokens_per_s", "series", path, label)
        elif suite == "vision":
            series = [dict(row, series=f"{row['layout']} {row['pass']} @{row['threads']}") for row in rows]
            label = f"NaLaFormer images/s ({title})"
            written = report.plot_series(series, "size", "images_per_s", "series", path, label)
        else:
            written = None
    except ImportError as error:  # the CSV above carries every number; the figure is optional
        _log(f"no {suite} figure: {error}")
        written = None
    if written is not None:
        _log(f"wrote {written}")
