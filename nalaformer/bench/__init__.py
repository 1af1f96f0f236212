"""Operator and model benchmarks (``nalaformer bench``).

- :mod:`~nalaformer.bench.timing`: :func:`time_interleaved` (warm-up, repeats, medians, candidates interleaved per
  round) and :func:`paired_ratio`;
- :mod:`~nalaformer.bench.memory`: :func:`peak_memory_bytes` (fresh process per configuration on CPU);
- :mod:`~nalaformer.bench.operators`, :mod:`~nalaformer.bench.roofline`, :mod:`~nalaformer.bench.decoding`,
  :mod:`~nalaformer.bench.models`: the suites;
- :mod:`~nalaformer.bench.ceiling`: the suite run only when named (``nalaformer bench ceiling``): each model's step
  without attention (the best ratio any attention could give) and a profile of its step by part;
- :mod:`~nalaformer.bench.report`: result files named by device and torch version, the targets, tables and plots.

Submodules import their suites' dependencies (the language model needs the ``lm`` extra) only when used.
"""

from nalaformer.bench.memory import peak_memory_bytes
from nalaformer.bench.timing import Timing, paired_ratio, time_interleaved

__all__ = ["Timing", "paired_ratio", "peak_memory_bytes", "time_interleaved"]
