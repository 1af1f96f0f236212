"""Spikiness diagnostics: attention entropy against the query norm, NaLa's exponent, sign agreement.

Python API (JSON-serialisable results):

- :func:`capture_attention` (hooks, no change to the model) -> :class:`CapturedAttention` per block call;
- :func:`attention_rows` (quadratic effective weights of some rows) and :func:`analyse_attention` (per-query
  statistics) -> :class:`LayerAnalysis`;
- :func:`summarise` (per-head correlations and rates), :func:`temperature_sweep` (NaLa's norm temperature, post hoc);
- :func:`controlled_entropy_study` (no training: one direction with a growing norm);
- :func:`diagnose` (all of it, JSON + PNG files) and :func:`format_report_table`.

Plots live in :mod:`nalaformer.diagnostics.plots` (needs matplotlib).
"""

from nalaformer.diagnostics.analysis import (
    QUERY_FIELDS,
    AttentionRows,
    LayerAnalysis,
    analyse_attention,
    attention_rows,
)
from nalaformer.diagnostics.capture import CapturedAttention, attention_blocks, capture_attention
from nalaformer.diagnostics.controlled import (
    CONTROLLED_METHODS,
    DEFAULT_SCALES,
    controlled_entropy_study,
    format_controlled_table,
    temperature_method,
)
from nalaformer.diagnostics.entropy import (
    average_ranks,
    pearson,
    positive_sequence_entropy,
    same_sign_fraction,
    softmax_entropy,
    spearman,
)
from nalaformer.diagnostics.report import diagnose, format_report_table
from nalaformer.diagnostics.summary import is_norm_aware, summarise, temperature_sweep
from nalaformer.reporting import to_json, write_json

__all__ = [
    "CONTROLLED_METHODS",
    "DEFAULT_SCALES",
    "QUERY_FIELDS",
    "AttentionRows",
    "CapturedAttention",
    "LayerAnalysis",
    "analyse_attention",
    "attention_blocks",
    "attention_rows",
    "average_ranks",
    "capture_attention",
    "controlled_entropy_study",
    "diagnose",
    "format_controlled_table",
    "format_report_table",
    "is_norm_aware",
    "pearson",
    "positive_sequence_entropy",
    "same_sign_fraction",
    "softmax_entropy",
    "spearman",
    "summarise",
    "temperature_method",
    "temperature_sweep",
    "to_json",
    "write_json",
]
