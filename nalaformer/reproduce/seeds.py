"""Seed statistics, and the one rule every report of the study uses to call a difference "beyond seed noise".

Two results, each a mean over seeds, differ beyond seed noise when the difference of the means exceeds twice its
standard error, ``2 sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the sample standard deviations ``s`` (``ddof=1``) over the
``n`` seeds of each side. That threshold, :func:`noise_threshold`, is the "noise" figure the reports print. With fewer
than two seeds on either side there is no spread to judge by, and no call is made.

The study's claims (:func:`nalaformer.reproduce.results.compare`), the boundary map's best-mixer calls
(:func:`nalaformer.reproduce.boundary_stats.call_best`) and the conversion reports
(:func:`nalaformer.reproduce.conversion_report.verdict`) all decide through :func:`seed_call`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# how many standard errors of the difference a difference must exceed
STANDARD_ERRORS = 2.0


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` over the finite values: the mean (None without any), the sample standard deviation
    (``ddof=1``; None with fewer than 2 values) and their count."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "n": len(finite),
    }


def difference_spread(std_a: float | None, n_a: int, std_b: float | None, n_b: int) -> float:
    """``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` from whatever spread there is (a missing std counts as 0): the figure a
    table may show beside a difference even where :func:`standard_error` gives none."""
    return math.sqrt((std_a or 0.0) ** 2 / n_a + (std_b or 0.0) ** 2 / n_b)


def standard_error(std_a: float | None, n_a: int, std_b: float | None, n_b: int) -> float | None:
    """The standard error of the difference of two means, ``sqrt(s_a^2 / n_a + s_b^2 / n_b)``; None with fewer than
    two seeds on either side (no spread to estimate it from)."""
    if n_a < 2 or n_b < 2:
        return None
    return difference_spread(std_a, n_a, std_b, n_b)


def noise_threshold(std_a: float | None, n_a: int, std_b: float | None, n_b: int) -> float | None:
    """The seed noise a difference of two means must exceed: twice its standard error (None with one seed)."""
    error = standard_error(std_a, n_a, std_b, n_b)
    return None if error is None else STANDARD_ERRORS * error


def seed_call(a: dict[str, Any], b: dict[str, Any], higher_is_better: bool = True) -> dict[str, Any]:
    """``a`` against ``b``, each ``{"mean", "std", "n"}`` over seeds (as :func:`mean_std` gives).

    Returns ``{"difference", "gain", "standard_error", "noise", "call"}``: ``difference`` is ``a - b``, ``gain`` the
    same signed so that positive is better, ``noise`` the threshold of :func:`noise_threshold` (None with one seed),
    and ``call`` ``"better"`` / ``"worse"`` (|difference| > noise), ``"within seed noise"`` (|difference| <= noise)
    or ``"not called"`` (fewer than two seeds on either side).
    """
    if a.get("mean") is None or b.get("mean") is None:
        raise ValueError("seed_call: both sides need a mean (a result measured on at least one seed)")
    difference = a["mean"] - b["mean"]
    gain = difference if higher_is_better else -difference
    spreads = (a.get("std"), a["n"], b.get("std"), b["n"])
    error, noise = standard_error(*spreads), noise_threshold(*spreads)
    if noise is None:
        call = "not called"
    elif abs(difference) > noise:
        call = "better" if gain > 0 else "worse"
    else:
        call = "within seed noise"
    return {"difference": difference, "gain": gain, "standard_error": error, "noise": noise, "call": call}
