"""Controlled study without training: one query direction with a growing norm against fixed random keys.

docs/method.md §2 and §6: softmax attention sharpens as ``||q||`` grows (Prop. 1); a homogeneous feature map
(``phi(c x) = c^r phi(x)``: ReLU, ReLU³) gives exactly the same normalised row at every scale (Prop. 2); 1+ELU is only
nearly homogeneous; NaLa's norm-aware exponent ``p = lam (tau + tanh(||q|| / T))`` restores a dependence that
saturates once ``tanh`` does (``||q|| ≈ 2 T``).

Setup: a query direction ``q_hat ~ N(0, I_d)`` normalised, queries ``c * q_hat`` for each scale ``c`` (so
``||q|| = c``), keys ``k ~ N(0, key_std² I_d)`` (``[N, d]``), softmax logits ``softmax_scale * q·k``. The feature maps
are the library's own (:mod:`nalaformer.ops`), the rows are formed in fp64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nalaformer.diagnostics.entropy import positive_sequence_entropy, softmax_entropy
from nalaformer.ops import elu_feature_map, nala_exponent, nala_key_map, nala_query_map, relu_feature_map

CONTROLLED_METHODS = ("softmax", "elu", "relu", "relu3", "nala", "nala_cosine")
# 2^-2 ... 2^4 in quarter-octave steps: every reference norm of docs/method.md §6 is on the grid, exactly
DEFAULT_SCALES = tuple(2.0 ** (exponent / 4) for exponent in range(-8, 17))
METHOD_LABELS = {
    "softmax": "softmax (exp q·k)",
    "elu": "1 + ELU",
    "relu": "ReLU",
    "relu3": "ReLU³",
    "nala": "NaLa (sign split)",
    "nala_cosine": "NaLa (cosine inhibit)",
}

FeaturePair = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _feature_pair(method: str, lam: float, tau: float, alpha: float, temperature: float) -> FeaturePair:
    if method == "elu":
        return lambda q, k: (elu_feature_map(q), elu_feature_map(k))
    if method == "relu":
        return lambda q, k: (relu_feature_map(q), relu_feature_map(k))
    if method == "relu3":
        return lambda q, k: (relu_feature_map(q).pow(3), relu_feature_map(k).pow(3))
    inhibit = "cosine" if method == "nala_cosine" else "sign"
    return lambda q, k: (
        nala_query_map(q, lam=lam, tau=tau, temperature=temperature, inhibit=inhibit, alpha=alpha),
        nala_key_map(k, lam=lam, inhibit=inhibit, alpha=alpha),
    )


def temperature_method(temperature: float) -> str:
    """Name of the NaLa (sign split) curve with norm temperature ``T`` in the study, e.g. ``"nala_T4"``."""
    return f"nala_T{temperature:g}"


def _saturation_norm(scales: np.ndarray, curve: np.ndarray, tolerance: float) -> float | None:
    """Smallest scale from which the curve stays within ``tolerance`` of its total change from its final value."""
    change = abs(curve[0] - curve[-1])
    if not change > 0:
        return None
    inside = np.abs(curve - curve[-1]) <= tolerance * change
    # first index after the last point still outside the band
    outside = np.flatnonzero(~inside)
    first = 0 if outside.size == 0 else int(outside[-1]) + 1
    return None if first >= len(scales) - 1 else float(scales[first])


def _checked_scales(scales: Sequence[float]) -> np.ndarray:
    values = np.asarray([float(s) for s in scales], dtype=np.float64)
    if values.size < 2 or not (values > 0).all() or not (np.diff(values) > 0).all():
        raise ValueError(f"scales must be at least two increasing positive norms, got {list(scales)}")
    return values


def _check_arguments(
    *, dim: int, num_keys: int, trials: int, methods: Sequence[str], temperatures: Sequence[float]
) -> None:
    for name, value in (("dim", dim), ("num_keys", num_keys), ("trials", trials)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    unknown = [m for m in methods if m not in CONTROLLED_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in methods; known: {list(CONTROLLED_METHODS)}")
    if not all(t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be > 0, got {list(temperatures)}")


def _nala_temperature(name: str) -> float | None:
    """The norm temperature of a NaLa curve (1 for ``nala`` and ``nala_cosine``); None for the other methods."""
    if name not in METHOD_LABELS:
        return float(name.removeprefix("nala_T"))
    return 1.0 if name.startswith("nala") else None


def _draw(norms: torch.Tensor, dim: int, num_keys: int, key_std: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One trial: queries ``norms * q_hat`` (``[S, d]``) along one random unit direction, keys ``[N, d]``."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm()
    keys = key_std * torch.randn(num_keys, dim, generator=generator, dtype=torch.float64)
    return norms * direction, keys


def _row_entropies(
    name: str, queries: torch.Tensor, keys: torch.Tensor, *, lam: float, tau: float, alpha: float, softmax_scale: float
) -> tuple[torch.Tensor, str | None]:
    """Entropy of the row of each query for one curve, and the dtype of its features (None for softmax)."""
    if name == "softmax":
        return softmax_entropy(softmax_scale * queries @ keys.T), None
    temperature = _nala_temperature(name)
    method = "nala" if name not in METHOD_LABELS else name
    phi_q, phi_k = _feature_pair(method, lam, tau, alpha, 1.0 if temperature is None else temperature)(queries, keys)
    entropy = positive_sequence_entropy(phi_q.double() @ phi_k.double().T)
    return entropy, str(phi_q.dtype).removeprefix("torch.")


def _curve_summary(per_trial: np.ndarray, scales: np.ndarray, saturation_tolerance: float) -> dict[str, Any]:
    """The per-trial curves ``[trials, scales]``, their mean and spread, and how and where the mean settles."""
    mean = per_trial.mean(axis=0)
    return {
        "entropy": per_trial.tolist(),
        "entropy_mean": mean.tolist(),
        "entropy_std": per_trial.std(axis=0).tolist(),
        "max_abs_change": float((per_trial.max(axis=1) - per_trial.min(axis=1)).max()),
        "drop": float(mean[0] - mean[-1]),
        "monotone_non_increasing": bool((np.diff(per_trial, axis=1) <= 1e-12).all()),
        "saturation_norm": _saturation_norm(scales, mean, saturation_tolerance),
    }


def controlled_entropy_study(
    *,
    dim: int = 64,
    num_keys: int = 196,
    scales: Sequence[float] = DEFAULT_SCALES,
    methods: Sequence[str] = CONTROLLED_METHODS,
    temperatures: Sequence[float] = (4.0,),
    lam: float = 3.0,
    tau: float = 0.5,
    alpha: float = 20.0,
    key_std: float = 0.25,
    softmax_scale: float = 1.0,
    trials: int = 8,
    seed: int = 0,
    saturation_tolerance: float = 0.05,
) -> dict[str, Any]:
    """Entropy of one attention row against the query norm, for softmax and each feature map.

    Args:
        dim (int): head dimension ``d``. Default: 64 (docs/method.md §6).
        num_keys (int): keys ``N``. Default: 196 (a 14x14 map).
        scales (Sequence[float]): query norms ``||q||``, increasing, positive. Default: ``2^-2 ... 2^4`` in
            quarter-octave steps (25 values).
        methods (Sequence[str]): from :data:`CONTROLLED_METHODS`. Default: all of them.
        temperatures (Sequence[float]): norm temperatures ``T`` for extra NaLa (sign split) curves named
            ``nala_T<T>``. Default: ``(4.0,)``.
        lam, tau (float): NaLa exponent ``p = lam (tau + tanh(||q|| / T))``. Defaults: 3.0, 0.5 (released code).
        alpha (float): cosine-inhibit sharpness. Default: 20.0.
        key_std (float): standard deviation of the key entries; only softmax and 1+ELU depend on it (the other maps
            are homogeneous in ``k``). Default: 0.25.
        softmax_scale (float): logits are ``softmax_scale * q·k``. Default: 1.0 (docs/method.md §6 uses ``q·k``).
        trials (int): independent draws of the direction and keys (seeds ``seed .. seed + trials - 1``); curves
            are reported per trial and as mean and standard deviation. Default: 8.
        seed (int): first seed. Default: 0.
        saturation_tolerance (float): a curve has saturated at the smallest ``||q||`` from which it stays within
            this fraction of its total change of its final value. Default: 0.05.

    Returns:
        dict: JSON-serialisable. ``config``; ``scales``; ``max_entropy`` (``ln N``); ``feature_dtype``; and
        ``methods[name]`` with ``label``, ``entropy`` (``[trials][scales]``), ``entropy_mean``, ``entropy_std``,
        ``max_abs_change`` (largest ``max - min`` over the scales within one trial), ``drop`` (mean entropy at the
        first scale minus at the last), ``monotone_non_increasing`` (every trial), ``saturation_norm`` (of the mean
        curve; None when flat or still changing at the last scale) and, for NaLa curves, ``exponent`` and
        ``temperature``.
    """
    scale_values = _checked_scales(scales)
    _check_arguments(dim=dim, num_keys=num_keys, trials=trials, methods=methods, temperatures=temperatures)
    if not key_std > 0:
        raise ValueError(f"key_std must be > 0, got {key_std}")
    curves: dict[str, dict[str, Any]] = {m: {"label": METHOD_LABELS[m]} for m in methods}
    for temperature in temperatures:
        curves[temperature_method(temperature)] = {"label": f"NaLa (sign split), T = {temperature:g}"}
    norms = torch.tensor(scale_values, dtype=torch.float64)[:, None]
    maps = dict(lam=lam, tau=tau, alpha=alpha, softmax_scale=softmax_scale)
    entropies: dict[str, list[list[float]]] = {name: [] for name in curves}
    feature_dtype = None
    for trial in range(trials):
        queries, keys = _draw(norms, dim, num_keys, key_std, seed + trial)
        for name in curves:
            entropy, dtype = _row_entropies(name, queries, keys, **maps)
            feature_dtype = dtype or feature_dtype
            entropies[name].append(entropy.tolist())
    for name, curve in curves.items():
        curve.update(_curve_summary(np.asarray(entropies[name], dtype=np.float64), scale_values, saturation_tolerance))
        temperature = _nala_temperature(name)
        if temperature is not None:
            curve["temperature"] = temperature
            curve["exponent"] = nala_exponent(norms[:, 0], lam, tau, temperature).tolist()

    return {
        "config": {
            "dim": dim,
            "num_keys": num_keys,
            "lam": lam,
            "tau": tau,
            "alpha": alpha,
            "key_std": key_std,
            "softmax_scale": softmax_scale,
            "trials": trials,
            "seed": seed,
            "saturation_tolerance": saturation_tolerance,
            "temperatures": [float(t) for t in temperatures],
        },
        "scales": scale_values.tolist(),
        "max_entropy": math.log(num_keys),
        "feature_dtype": feature_dtype,
        "methods": curves,
    }


def format_controlled_table(study: dict[str, Any], scales: Sequence[float] = (0.25, 1.0, 4.0, 8.0, 16.0)) -> str:
    """A plain-text table of the mean entropy per method at the given query norms (those on the study's grid).

    Args:
        study (dict): the result of :func:`controlled_entropy_study`.
        scales (Sequence[float]): norms to show. Default: ``(0.25, 1, 4, 8, 16)`` (docs/method.md §6).
    """
    grid = study["scales"]
    shown = [(s, grid.index(s)) for s in scales if s in grid] or list(zip(grid, range(len(grid))))
    header = f"{'method':<28}" + "".join(f"{'|q|=' + format(s, 'g'):>10}" for s, _ in shown)
    header += f"{'max change':>12}{'saturates':>11}"
    lines = [header, "-" * len(header)]
    for curve in study["methods"].values():
        mean = curve["entropy_mean"]
        saturation = curve["saturation_norm"]
        cells = "".join(f"{mean[i]:>10.4f}" for _, i in shown)
        sat = "-" if saturation is None else f"{saturation:.3g}"
        lines.append(f"{curve['label']:<28}{cells}{curve['max_abs_change']:>12.2e}{sat:>11}")
    lines.append(f"ln N = {study['max_entropy']:.4f}; mean over {study['config']['trials']} draws")
    return "\n".join(lines)
