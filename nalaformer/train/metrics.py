"""Metrics: weighted running means, and the JSON-lines log of a run folder (one record per line)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nalaformer.reporting import json_line, to_json


def as_float(value: float | int | torch.Tensor) -> float:
    """A Python float from a number or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric values must be scalars, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().float().item())
    return float(value)


class WeightedMeans:
    """Running weighted means of named metrics (weights = samples or tokens behind each value)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, metrics: Mapping[str, float | torch.Tensor], weight: float = 1.0) -> None:
        """Add one batch's metrics (batch means) with ``weight``."""
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + as_float(value) * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def merge(self, other_sums: Mapping[str, float], other_weights: Mapping[str, float]) -> None:
        """Fold in another tracker's sums and weights (e.g. from another rank)."""
        for name, total in other_sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + total
            self.weights[name] = self.weights.get(name, 0.0) + other_weights[name]

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.weights[name] for name in self.sums if self.weights[name] > 0}

    def reset(self) -> None:
        self.sums.clear()
        self.weights.clear()


class MetricsLog:
    """Append-only ``metrics.jsonl`` of a run folder; ``None`` path keeps records in memory only.

    Args:
        path: the JSONL file, or ``None``.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (a flat mapping of JSON-ready values; NaN / inf are written as null)."""
        record = to_json(dict(record))
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json_line(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written by an interrupted run that is being resumed from ``step``)."""
        if self.path is None or not self.path.exists():
            return
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        self.path.write_text("".join(json_line(record) + "\n" for record in kept), encoding="utf-8")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file; a torn last line (crash while writing) is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def format_metrics(metrics: Mapping[str, float], digits: int = 4) -> str:
    """``"loss 0.1234  accuracy 0.9812"``: a short human-readable line."""
    return "  ".join(f"{name} {value:.{digits}g}" for name, value in metrics.items())
