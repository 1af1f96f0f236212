"""One call that runs every diagnostic on a model and a batch and writes JSON and PNG files.

``diagnose(model, inputs, out_dir)`` captures the attention blocks, analyses them, summarises per head, sweeps NaLa's
norm temperature, and (optionally) runs the controlled study; it returns the report as a dict and writes
``diagnostics.json``, the per-query statistics (``per_query.npz``, keys ``<block>/<field>``) and one PNG per figure
into ``out_dir``. :func:`format_report_table` renders the terminal summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from nalaformer.diagnostics.analysis import analyse_attention
from nalaformer.diagnostics.capture import capture_attention
from nalaformer.diagnostics.controlled import controlled_entropy_study, format_controlled_table
from nalaformer.diagnostics.summary import summarise, temperature_sweep
from nalaformer.reporting import write_json


def diagnose(
    model: nn.Module,
    inputs: Any,
    out_dir: str | Path | None = None,
    *,
    max_queries: int = 256,
    max_samples: int | None = 8,
    temperatures: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    controlled: bool = True,
    plots: bool = True,
    seed: int = 0,
    saturation: float = 0.95,
    max_panels: int = 8,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Spikiness diagnostics of every softmax / linear attention block of ``model`` on ``inputs``.

    Args:
        model (nn.Module): any module containing nalaformer attention blocks.
        inputs: the batch, passed as in :func:`~nalaformer.diagnostics.capture_attention`.
        out_dir (str | Path, optional): folder for ``diagnostics.json``, ``per_query.npz`` and the PNGs.
            Default: None (write nothing).
        max_queries (int): query rows per batch row and block. Default: 256.
        max_samples (int, optional): batch rows analysed. Default: 8.
        temperatures (Sequence[float]): NaLa norm temperatures of the post-hoc sweep (empty: no sweep).
            Default: ``(1, 2, 4, 8)``.
        controlled (bool): also run :func:`~nalaformer.diagnostics.controlled_entropy_study` with its defaults.
            Default: True.
        plots (bool): write the PNGs (needs matplotlib). Default: True.
        seed (int): seed of the query subsets. Default: 0.
        saturation (float): tanh level above which a NaLa query counts as saturated. Default: 0.95.
        max_panels (int): heads shown per scatter figure. Default: 8.
        source (dict, optional): where the model and batch came from (checkpoint, data), stored in the report.

    Returns:
        dict: ``source``, ``settings``, ``summary`` (:func:`summarise`), ``skipped`` (blocks without defined
        weights, e.g. delta-rule mixers), ``temperature_sweep`` (or None), ``controlled`` (or None) and ``files``.
    """
    records = capture_attention(model, inputs, max_samples=max_samples)
    analysable, skipped = [], []
    for record in records:
        try:
            analysable.append((record, analyse_attention(record, max_queries=max_queries, seed=seed)))
        except TypeError as error:
            skipped.append({"name": record.label, "reason": str(error)})
    if not analysable:
        raise ValueError(f"no softmax or linear attention block in the model could be analysed: {skipped}")
    analyses = [layer for _, layer in analysable]
    summary = summarise(analyses, saturation=saturation)
    sweep = None
    if temperatures:
        sweep = temperature_sweep(
            [r for r, _ in analysable], temperatures, max_queries=max_queries, seed=seed, saturation=saturation
        )
        if not sweep["layers"]:
            sweep = None
    study = controlled_entropy_study() if controlled else None
    report: dict[str, Any] = {
        "source": dict(source or {}),
        "settings": {
            "max_queries": max_queries,
            "max_samples": max_samples,
            "temperatures": [float(t) for t in temperatures],
            "seed": seed,
            "saturation": saturation,
            "entropy": "natural-log PSE of the un-rotated rows (RoPE numerator weights reported separately)",
        },
        "summary": summary,
        "skipped": skipped,
        "temperature_sweep": sweep,
        "controlled": study,
        "files": [],
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        if plots:
            report["files"] = [str(p) for p in _write_plots(analyses, sweep, study, out_dir, max_panels)]
        report["files"].append(str(_write_points(analyses, out_dir / "per_query.npz")))
        report["files"].append(str(out_dir / "diagnostics.json"))
        write_json(report, out_dir / "diagnostics.json")
    return report


def _write_points(analyses, path: Path) -> Path:
    """Per-query arrays ``[units, queries]`` as ``<block>/<field>`` entries of one compressed ``.npz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{layer.name}/{name}": values for layer in analyses for name, values in layer.values.items()}
    np.savez_compressed(path, **arrays)
    return path


def _write_plots(analyses, sweep, study, out_dir: Path, max_panels: int) -> list[Path]:
    from nalaformer.diagnostics import plots

    written = []
    softmax = [a for a in analyses if a.kind == "softmax"]
    linear = [a for a in analyses if a.kind == "linear"]
    if softmax:
        written.append(
            plots.plot_entropy_vs_norm(
                softmax,
                out_dir / "fig1_softmax_entropy_vs_norms.png",
                norms=("q_norm", "k_argmax_norm"),
                max_panels=max_panels,
                title="Softmax blocks: row entropy vs ||q|| (top) and vs the top key's norm (bottom)",
            )
        )
    if linear:
        written.append(
            plots.plot_entropy_vs_norm(
                linear,
                out_dir / "fig4_linear_entropy_vs_query_norm.png",
                max_panels=max_panels,
                title="Linear blocks: row entropy (un-rotated kernel) vs ||q||",
            )
        )
    written.append(plots.plot_same_sign_fraction(analyses, out_dir / "same_sign_fraction.png"))
    written.append(plots.plot_top_pair_products(analyses[0], out_dir / "fig3_top_pair_products.png"))
    if sweep is not None:
        written.append(plots.plot_exponent_histogram(sweep, out_dir / "nala_exponent_histogram.png"))
    if study is not None:
        written.append(plots.plot_controlled_study(study, out_dir / "controlled_entropy_vs_query_norm.png"))
    return written


def _cell(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


_LAYER_COLUMNS = (
    ("H mean", "mean_entropy_mean", ".3f", 8),
    ("ln n", "mean_max_entropy_mean", ".2f", 7),
    ("|q| mean", "mean_q_norm_mean", ".2f", 9),
    ("r(H,|q|)", "mean_pearson_entropy_q_norm", "+.2f", 10),
    ("rho(H,|q|)", "mean_spearman_entropy_q_norm", "+.2f", 11),
    ("r(H,|k*|)", "mean_pearson_entropy_k_norm", "+.2f", 10),
    ("same-sign", "mean_same_sign_fraction_mean", ".2f", 10),
    ("p mean", "mean_exponent_mean", ".2f", 8),
    ("p sat", "mean_exponent_saturated_fraction", ".0%", 7),
    ("RoPE neg", "mean_rope_negative_fraction", ".0%", 9),
)


def format_report_table(report: dict[str, Any]) -> str:
    """Plain-text summary of :func:`diagnose`'s result: one line per block, the sweep, the controlled study."""
    header = f"{'block':<34}{'method':<18}" + "".join(f"{title:>{width}}" for title, _, _, width in _LAYER_COLUMNS)
    lines = [header, "-" * len(header)]
    for layer in report["summary"]["layers"]:
        cells = "".join(f"{_cell(layer.get(key), spec):>{width}}" for _, key, spec, width in _LAYER_COLUMNS)
        lines.append(f"{layer['name'][-33:]:<34}{layer['method'][:17]:<18}{cells}")
    lines.append("(per-layer means over heads; r = Pearson, rho = Spearman; k* = the key with the largest weight)")
    for item in report["skipped"]:
        lines.append(f"skipped {item['name']}: {item['reason']}")
    sweep = report.get("temperature_sweep")
    if sweep:
        lines.append("")
        lines.append("NaLa norm temperature, applied post hoc to the captured q, k (mean over NaLa blocks):")
        lines.append(f"{'T':>6}{'p mean':>9}{'p std':>8}{'p sat':>8}{'H mean':>9}{'r(H,|q|)':>10}")
        for index, temperature in enumerate(sweep["temperatures"]):
            rows = [layer["by_temperature"][index] for layer in sweep["layers"]]

            def mean(key: str, rows=rows) -> float:
                values = [r[key] for r in rows if r[key] is not None and r[key] == r[key]]
                return sum(values) / len(values) if values else float("nan")

            lines.append(
                f"{temperature:>6g}{_cell(mean('exponent_mean'), '.2f'):>9}{_cell(mean('exponent_std'), '.2f'):>8}"
                f"{_cell(mean('exponent_saturated_fraction'), '.0%'):>8}{_cell(mean('entropy_mean')):>9}"
                f"{_cell(mean('pearson_entropy_q_norm'), '+.2f'):>10}"
            )
    if report.get("controlled"):
        lines.append("")
        lines.append("Controlled study (one direction, growing ||q||; mean row entropy in nats):")
        lines.append(format_controlled_table(report["controlled"]))
    return "\n".join(lines)
