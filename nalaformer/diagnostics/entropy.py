"""Row entropies of attention weights and the correlation statistics the diagnostics report.

Positive Sequence Entropy (docs/method.md §2.1): for ``x_i >= 0`` with ``s = sum_i x_i > 0``,
``PSE(x) = -sum_i (x_i / s) log(x_i / s)``. It is the Shannon entropy of the normalised row, so it is unchanged by a
positive rescaling of the row; that is why a homogeneous feature map cannot make attention sharper as ``||q||`` grows
(Prop. 2). A row with ``s = 0`` (a query that shares no sign with any key under NaLa's sign split) has no
distribution: its entropy is NaN, never a made-up number, and callers count such rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(value).__name__}")
    return value


def positive_sequence_entropy(
    weights: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None, negative_tolerance: float = 0.0
) -> torch.Tensor:
    """PSE (Shannon entropy of the normalised row) of non-negative weights, in nats.

    Args:
        weights (torch.Tensor): ``[..., N]`` non-negative scores along ``dim`` (any float dtype; computed in fp64).
        dim (int): the dimension that holds one row. Default: -1.
        mask (torch.Tensor, optional): bool, broadcastable to ``weights``; False entries are left out of the row.
            Default: None (every entry counts).
        negative_tolerance (float): entries in ``[-negative_tolerance, 0)`` (rounding noise) are treated as 0;
            anything more negative raises. Default: 0.0.

    Returns:
        torch.Tensor: fp64 ``[...]`` (``dim`` removed); NaN where a row sums to 0.

    Raises:
        ValueError: a weight below ``-negative_tolerance`` (PSE is defined for non-negative rows only; signed rows,
            e.g. RoPE numerator weights, have no entropy).
    """
    weights = _check_tensor("weights", weights).double()
    if mask is not None:
        weights = torch.where(mask, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    lowest = float(weights.min()) if weights.numel() else 0.0
    if lowest < -negative_tolerance:
        raise ValueError(
            f"weights must be non-negative (PSE is defined for x_i >= 0), got a minimum of {lowest:.3g} "
            f"below -negative_tolerance={negative_tolerance}"
        )
    weights = weights.clamp_min(0.0)
    total = weights.sum(dim=dim, keepdim=True)
    probabilities = weights / torch.where(total > 0, total, torch.ones_like(total))
    # 0 log 0 = 0: zero entries contribute nothing
    terms = torch.where(probabilities > 0, probabilities * probabilities.log(), torch.zeros_like(probabilities))
    entropy = -terms.sum(dim=dim)
    return torch.where(total.squeeze(dim) > 0, entropy, torch.full_like(entropy, math.nan))


def softmax_entropy(logits: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` along ``dim`` in nats, computed stably from log-probabilities.

    Args:
        logits (torch.Tensor): ``[..., N]`` (any float dtype; computed in fp64).
        dim (int): Default: -1.
        mask (torch.Tensor, optional): bool, broadcastable to ``logits``; False entries get no probability.
            Every row must keep at least one entry. Default: None.

    Returns:
        torch.Tensor: fp64 ``[...]``.
    """
    logits = _check_tensor("logits", logits).double()
    if mask is not None:
        if not bool(mask.any(dim=dim).all()):
            raise ValueError("mask must leave at least one entry in every row of logits")
        logits = logits.masked_fill(~mask, -math.inf)
    log_p = torch.log_softmax(logits, dim=dim)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=dim)


def _as_vector(name: str, values: object) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def pearson(x: object, y: object) -> float:
    """Pearson correlation of two equally long 1-D samples, NaN pairs dropped.

    Returns NaN when fewer than 3 pairs remain or either sample is constant (the correlation is undefined then;
    e.g. NaLa's exponent saturated at one value).

    Args:
        x, y: 1-D arrays / tensors / sequences of the same length ``n`` (any real dtype; computed in fp64).
    """
    x, y = _as_vector("x", x), _as_vector("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if not denominator > 0:
        return math.nan
    return float(np.clip((x * y).sum() / denominator, -1.0, 1.0))


def average_ranks(values: object) -> np.ndarray:
    """Ranks ``1..n`` of a 1-D sample, ties given the mean of the ranks they span (as Spearman's rho needs).

    Args:
        values: 1-D array / tensor / sequence of length ``n``.

    Returns:
        np.ndarray: fp64 ``[n]``.
    """
    values = _as_vector("values", values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # boundaries of runs of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: object, y: object) -> float:
    """Spearman rank correlation (Pearson of tie-averaged ranks), NaN pairs dropped; NaN if undefined.

    Args:
        x, y: 1-D arrays / tensors / sequences of the same length ``n``.
    """
    x, y = _as_vector("x", x), _as_vector("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    keep = np.isfinite(x) & np.isfinite(y)
    if int(keep.sum()) < 3:
        return math.nan
    return pearson(average_ranks(x[keep]), average_ranks(y[keep]))


def same_sign_fraction(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Fraction of dimensions where ``q_d k_d > 0`` (the paper's Fig. 3 statistic for the top (q, k) pair).

    Args:
        q, k (torch.Tensor): ``[..., D]`` with broadcastable shapes (any float dtype).

    Returns:
        torch.Tensor: fp64 ``[...]`` in ``[0, 1]``; a zero coordinate counts as not same-sign.
    """
    products = _check_tensor("q", q).double() * _check_tensor("k", k).double()
    return (products > 0).double().mean(dim=-1)
