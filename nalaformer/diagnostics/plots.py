"""Figures of the diagnostics, one PNG each (matplotlib, Agg backend; the ``plot`` extra).

- :func:`plot_controlled_study`: entropy against ``||q||`` per method, and NaLa's exponent (docs/method.md §6).
- :func:`plot_entropy_vs_norm`: scatter of row entropy against ``||q||`` or the top key's norm, one panel per head,
  with a least-squares line and Pearson's r (the paper's Fig. 1 for softmax, Fig. 4 for linear maps).
- :func:`plot_exponent_histogram`: NaLa's exponent ``p(||q||)`` against its supremum ``lam (tau + 1)``, per
  temperature.
- :func:`plot_top_pair_products`: per-dimension products ``q_d k_d`` of the top (q, k) pair of a few rows (Fig. 3).
- :func:`plot_same_sign_fraction`: the distribution of the same-sign fraction per block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nalaformer.diagnostics.analysis import LayerAnalysis
from nalaformer.diagnostics.entropy import pearson
from nalaformer.reporting import load_pyplot, save_figure


def plot_controlled_study(study: dict[str, Any], path: str | Path) -> Path:
    """Mean entropy (band: one standard deviation over draws) against ``||q||`` per method, and NaLa's exponent.

    Args:
        study (dict): the result of :func:`~nalaformer.diagnostics.controlled_entropy_study`.
        path (str | Path): the PNG to write.
    """
    plt = load_pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    scales = np.asarray(study["scales"])
    for curve in study["methods"].values():
        mean, std = np.asarray(curve["entropy_mean"]), np.asarray(curve["entropy_std"])
        (line,) = left.plot(scales, mean, marker="o", markersize=3, label=curve["label"])
        left.fill_between(scales, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        if "exponent" in curve:
            right.plot(scales, curve["exponent"], label=curve["label"], color=line.get_color())
    left.axhline(study["max_entropy"], color="grey", linestyle="--", linewidth=1, label="ln N (uniform)")
    config = study["config"]
    left.set_xscale("log", base=2)
    left.set_xlabel("query norm ||q||")
    left.set_ylabel("row entropy (nats)")
    left.set_title(f"Entropy vs query norm: d={config['dim']}, N={config['num_keys']}, {config['trials']} random draws")
    left.legend(fontsize=8)
    right.axhline(config["lam"] * (config["tau"] + 1), color="grey", linestyle="--", linewidth=1, label="lam(tau+1)")
    right.set_xscale("log", base=2)
    right.set_xlabel("query norm ||q||")
    right.set_ylabel("exponent p(||q||)")
    right.set_title("NaLa exponent p = lam (tau + tanh(||q|| / T))")
    right.legend(fontsize=8)
    return save_figure(figure, path)


def _panels(analyses: Sequence[LayerAnalysis], max_panels: int) -> list[tuple[LayerAnalysis, int]]:
    """Up to ``max_panels`` (layer, unit) pairs, spread over the layers: unit 0 of every layer first, then unit 1..."""
    panels: list[tuple[LayerAnalysis, int]] = []
    depth = 0
    while len(panels) < max_panels and any(depth < len(layer.units) for layer in analyses):
        for layer in analyses:
            if depth < len(layer.units) and len(panels) < max_panels:
                panels.append((layer, depth))
        depth += 1
    return panels


def plot_entropy_vs_norm(
    analyses: Sequence[LayerAnalysis],
    path: str | Path,
    *,
    norms: Sequence[str] = ("q_norm",),
    max_panels: int = 8,
    title: str | None = None,
) -> Path:
    """Scatter of row entropy against norms, one panel per head (one row of panels per norm).

    Args:
        analyses (Sequence[LayerAnalysis]): the blocks to show (e.g. the softmax ones for Fig. 1).
        path (str | Path): the PNG to write.
        norms (Sequence[str]): ``"q_norm"`` and / or ``"k_argmax_norm"``. Default: ``("q_norm",)``.
        max_panels (int): heads shown per norm. Default: 8.
        title (str, optional): figure title. Default: None.
    """
    names = {"q_norm": "query norm ||q||", "k_argmax_norm": "norm of the top key ||k*||"}
    unknown = [n for n in norms if n not in names]
    if unknown or not norms:
        raise ValueError(f"norms must be a non-empty subset of {list(names)}, got {list(norms)}")
    panels = _panels(analyses, max_panels)
    if not panels:
        raise ValueError("analyses is empty: nothing to plot")
    plt = load_pyplot()
    columns = min(4, len(panels))
    rows_per_norm = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(
        rows_per_norm * len(norms), columns, figsize=(3.6 * columns, 3.0 * rows_per_norm * len(norms)), squeeze=False
    )
    for axis in axes.flat:
        axis.set_visible(False)
    for n, norm in enumerate(norms):
        for index, (layer, unit) in enumerate(panels):
            axis = axes[n * rows_per_norm + index // columns, index % columns]
            axis.set_visible(True)
            x, y = layer.values[norm][unit], layer.values["entropy"][unit]
            keep = np.isfinite(x) & np.isfinite(y)
            x, y = x[keep], y[keep]
            axis.scatter(x, y, s=6, alpha=0.5)
            label = f"{layer.name} {layer.units[unit]}"
            r = pearson(x, y)
            if np.isfinite(r):
                slope, intercept = np.polyfit(x, y, 1)
                grid = np.linspace(x.min(), x.max(), 20)
                axis.plot(grid, slope * grid + intercept, color="C3", linewidth=1.5)
                label += f"\nr = {r:+.2f}"
            axis.set_title(label, fontsize=8)
            axis.set_xlabel(names[norm], fontsize=8)
            axis.set_ylabel("row entropy (nats)", fontsize=8)
            axis.tick_params(labelsize=7)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_exponent_histogram(sweep: dict[str, Any], path: str | Path) -> Path:
    """Histogram of NaLa's exponent, pooled over NaLa blocks, one panel per temperature of a sweep.

    Args:
        sweep (dict): the result of :func:`~nalaformer.diagnostics.temperature_sweep` (at least one layer).
        path (str | Path): the PNG to write.
    """
    if not sweep["layers"]:
        raise ValueError("the sweep holds no NaLa layer: nothing to plot")
    plt = load_pyplot()
    temperatures = sweep["temperatures"]
    figure, axes = plt.subplots(1, len(temperatures), figsize=(3.8 * len(temperatures), 3.4), squeeze=False)
    lam, tau = sweep["layers"][0]["lam"], sweep["layers"][0]["tau"]
    for index, temperature in enumerate(temperatures):
        axis = axes[0, index]
        pooled = np.concatenate([np.asarray(layer["exponents"][index]) for layer in sweep["layers"]])
        axis.hist(pooled, bins=40, range=(lam * tau, lam * (tau + 1)), color="C0")
        axis.axvline(lam * (tau + 1), color="C3", linestyle="--", label=f"supremum lam(tau+1) = {lam * (tau + 1):g}")
        saturated = float((pooled >= lam * (tau + sweep["saturation"])).mean())
        axis.set_title(f"T = {temperature:g}: {100 * saturated:.0f}% saturated", fontsize=9)
        axis.set_xlabel("exponent p(||q||)")
        axis.set_ylabel("queries")
        axis.legend(fontsize=7)
    figure.suptitle("NaLa exponent on the captured queries (temperature applied post hoc)")
    return save_figure(figure, path)


def plot_top_pair_products(layer: LayerAnalysis, path: str | Path, *, unit: int = 0) -> Path:
    """Bar charts of ``q_d k_d`` for the top (q, k) pair of a few rows of one head (the paper's Fig. 3).

    Args:
        layer (LayerAnalysis): the block.
        path (str | Path): the PNG to write.
        unit (int): the head (unit) index. Default: 0.
    """
    if not 0 <= unit < len(layer.units):
        raise ValueError(f"unit must be in [0, {len(layer.units)}), got {unit}")
    products = layer.top_pair_products[unit]
    plt = load_pyplot()
    figure, axes = plt.subplots(1, len(products), figsize=(3.6 * len(products), 3.0), squeeze=False)
    for index, row in enumerate(products):
        axis = axes[0, index]
        colours = np.where(row >= 0, "C0", "C3")
        axis.bar(np.arange(row.size), row, color=colours)
        axis.axhline(0, color="black", linewidth=0.6)
        same = float((row > 0).mean())
        axis.set_title(f"row {index}: {100 * same:.0f}% same-sign dims", fontsize=9)
        axis.set_xlabel("dimension d")
        axis.set_ylabel("q_d k_d")
    figure.suptitle(f"Top (q, k) pair per row: {layer.name} {layer.units[unit]}")
    return save_figure(figure, path)


def plot_same_sign_fraction(analyses: Sequence[LayerAnalysis], path: str | Path) -> Path:
    """Distribution of the same-sign fraction of each row's top (q, k) pair, one box per block (0.5 = chance).

    Args:
        analyses (Sequence[LayerAnalysis]): the blocks.
        path (str | Path): the PNG to write.
    """
    if not analyses:
        raise ValueError("analyses is empty: nothing to plot")
    plt = load_pyplot()
    figure, axis = plt.subplots(figsize=(max(5.0, 0.7 * len(analyses) + 2), 3.6))
    data = [layer.values["same_sign_fraction"].ravel() for layer in analyses]
    axis.boxplot(data, showfliers=False)
    axis.set_xticks(range(1, len(analyses) + 1), [f"{a.name}\n({a.method})" for a in analyses], fontsize=7, rotation=30)
    axis.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (random signs)")
    axis.set_ylabel("same-sign fraction of the top (q, k) pair")
    axis.set_title("Sign agreement of the most similar key (paper Fig. 3)")
    axis.legend(fontsize=8)
    return save_figure(figure, path)
