"""Per-head summaries of the per-query statistics and the norm-temperature sweep.

Per head (unit): Pearson and Spearman correlation of the row entropy with ``||q||`` and with the norm of the
top-weighted key (the paper's Fig. 1), the mean fraction of same-sign dimensions in each row's top (q, k) pair
(Fig. 3), the ``||q||`` range, zero rows, NaLa's exponent and how much of it sits in tanh's saturated zone
(docs/method.md §7 item 3), and for linear blocks with RoPE the share of negative numerator weights
(docs/method.md §4.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nalaformer.diagnostics.analysis import LayerAnalysis, analyse_attention
from nalaformer.diagnostics.capture import CapturedAttention
from nalaformer.diagnostics.entropy import pearson, spearman
from nalaformer.layers import LinearAttention, NaLaFeatureMap

# the per-head statistics averaged into each layer's ``mean_<name>`` (a head may lack some: no exponent in softmax)
LAYER_STATISTICS = (
    "entropy_mean",
    "max_entropy_mean",
    "q_norm_mean",
    "pearson_entropy_q_norm",
    "spearman_entropy_q_norm",
    "pearson_entropy_k_norm",
    "same_sign_fraction_mean",
    "exponent_mean",
    "exponent_saturated_fraction",
    "rope_negative_fraction",
)


def _finite_stat(values: np.ndarray, fn) -> float:
    finite = values[np.isfinite(values)]
    return float(fn(finite)) if finite.size else math.nan


def _head_summary(layer: LayerAnalysis, unit: int, saturation: float) -> dict[str, Any]:
    v = {name: values[unit] for name, values in layer.values.items()}
    entropy = v["entropy"]
    summary: dict[str, Any] = {
        "unit": layer.units[unit],
        "queries": int(entropy.size),
        "entropy_mean": _finite_stat(entropy, np.mean),
        "max_entropy_mean": float(np.mean(np.log(v["num_keys"]))),
        "q_norm_mean": float(v["q_norm"].mean()),
        "q_norm_std": float(v["q_norm"].std()),
        "q_norm_min": float(v["q_norm"].min()),
        "q_norm_max": float(v["q_norm"].max()),
        "k_argmax_norm_mean": float(v["k_argmax_norm"].mean()),
        "pearson_entropy_q_norm": pearson(entropy, v["q_norm"]),
        "spearman_entropy_q_norm": spearman(entropy, v["q_norm"]),
        "pearson_entropy_k_norm": pearson(entropy, v["k_argmax_norm"]),
        "spearman_entropy_k_norm": spearman(entropy, v["k_argmax_norm"]),
        "same_sign_fraction_mean": float(v["same_sign_fraction"].mean()),
        "zero_rows": int(layer.zero_rows[unit]),
        "negative_rows": int(layer.negative_rows[unit]),
    }
    if layer.nala:
        lam, tau = layer.nala["lam"], layer.nala["tau"]
        exponent = v["exponent"]
        summary["exponent_mean"] = float(exponent.mean())
        summary["exponent_min"] = float(exponent.min())
        summary["exponent_max"] = float(exponent.max())
        # a constant exponent (the Table-5 ablations) has no tanh to saturate
        if layer.nala.get("power") is None:
            summary["exponent_supremum"] = lam * (tau + 1.0)
            summary["exponent_saturated_fraction"] = float((exponent >= lam * (tau + saturation)).mean())
    if np.isfinite(layer.rope_negative_fraction[unit]):
        row_sum = v["rope_row_sum"]
        summary["rope_negative_fraction"] = float(layer.rope_negative_fraction[unit])
        summary["rope_row_sum_min"] = float(row_sum.min())
        summary["rope_row_sum_mean"] = float(row_sum.mean())
        summary["rope_row_sum_max"] = float(row_sum.max())
    return summary


def _mean_of(heads: list[dict[str, Any]], key: str) -> float:
    values = np.asarray([h[key] for h in heads if key in h], dtype=np.float64)
    return _finite_stat(values, np.mean)


def summarise(analyses: Sequence[LayerAnalysis], *, saturation: float = 0.95) -> dict[str, Any]:
    """Per-layer, per-head summary of :func:`analyse_attention` results (JSON-ready after ``reporting.to_json``).

    Args:
        analyses (Sequence[LayerAnalysis]): one per captured block call.
        saturation (float): a NaLa query counts as saturated when ``tanh(||q|| / T) >= saturation``, i.e.
            ``p >= lam (tau + saturation)``. Default: 0.95 (``||q|| >= 1.83 T``).

    Returns:
        dict: ``layers``: a list of ``{name, kind, method, causal, rope, nala, heads: [...], mean_*}`` where each
        head holds the statistics named in this module's docstring, and ``mean_*`` averages a few of them over
        the heads (NaN-aware).
    """
    if not 0 < saturation < 1:
        raise ValueError(f"saturation must be in (0, 1), got {saturation}")
    layers = []
    for layer in analyses:
        heads = [_head_summary(layer, unit, saturation) for unit in range(len(layer.units))]
        entry: dict[str, Any] = {
            "name": layer.name,
            "kind": layer.kind,
            "method": layer.method,
            "causal": layer.causal,
            "rope": layer.rope,
            "nala": dict(layer.nala),
            "heads": heads,
        }
        for key in LAYER_STATISTICS:
            if any(key in h for h in heads):
                entry[f"mean_{key}"] = _mean_of(heads, key)
        entry["zero_rows"] = int(sum(h["zero_rows"] for h in heads))
        layers.append(entry)
    return {"saturation": saturation, "layers": layers}


def is_norm_aware(record: CapturedAttention) -> bool:
    """Whether a captured block is NaLa with the norm-aware exponent (the temperature sweep applies to it)."""
    module = record.module
    return (
        isinstance(module, LinearAttention)
        and isinstance(module.feature_map, NaLaFeatureMap)
        and module.feature_map.power is None
    )


def temperature_sweep(
    records: Sequence[CapturedAttention],
    temperatures: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    *,
    max_queries: int = 256,
    seed: int = 0,
    saturation: float = 0.95,
) -> dict[str, Any]:
    """Re-evaluate every norm-aware NaLa block with other norm temperatures on the same captured ``q, k``.

    A counterfactual: the model was trained with its own temperature, so this shows what the temperature changes
    in the exponent's spread and in the entropy–``||q||`` correlation at these norms, not the retrained result.

    Args:
        records (Sequence[CapturedAttention]): captured block calls (non-NaLa ones are skipped).
        temperatures (Sequence[float]): ``T`` values, each > 0. Default: ``(1, 2, 4, 8)``.
        max_queries, seed: as in :func:`analyse_attention`.
        saturation (float): as in :func:`summarise`. Default: 0.95.

    Returns:
        dict: ``temperatures`` and ``layers``: per NaLa block ``{name, trained_temperature, by_temperature: [{
        temperature, exponent_mean, exponent_std, exponent_saturated_fraction, entropy_mean,
        pearson_entropy_q_norm, spearman_entropy_q_norm}]}`` (head-averaged; exponent statistics pooled over heads).
        ``exponents`` holds the pooled exponents per layer and temperature for the histogram.
    """
    bad = [t for t in temperatures if not (isinstance(t, (int, float)) and t > 0)]
    if bad or not temperatures:
        raise ValueError(f"temperatures must be a non-empty list of numbers > 0, got {list(temperatures)}")
    layers = []
    for record in records:
        if not is_norm_aware(record):
            continue
        feature_map = record.module.feature_map
        rows, exponents = [], []
        for temperature in temperatures:
            layer = analyse_attention(record, max_queries=max_queries, seed=seed, temperature=float(temperature))
            summary = summarise([layer], saturation=saturation)["layers"][0]
            exponent = layer.values["exponent"]
            exponents.append(exponent.ravel().tolist())
            rows.append(
                {
                    "temperature": float(temperature),
                    "exponent_mean": float(exponent.mean()),
                    "exponent_std": float(exponent.std()),
                    "exponent_saturated_fraction": summary["mean_exponent_saturated_fraction"],
                    "entropy_mean": summary["mean_entropy_mean"],
                    "pearson_entropy_q_norm": summary["mean_pearson_entropy_q_norm"],
                    "spearman_entropy_q_norm": summary["mean_spearman_entropy_q_norm"],
                }
            )
        layers.append(
            {
                "name": record.label,
                "trained_temperature": feature_map.temperature,
                "lam": feature_map.lam,
                "tau": feature_map.tau,
                "by_temperature": rows,
                "exponents": exponents,
            }
        )
    return {"temperatures": [float(t) for t in temperatures], "saturation": saturation, "layers": layers}
