"""Effective attention weights of captured queries and keys, and per-query / per-head spikiness statistics.

For analysis only, the weights are formed quadratically (``[queries, keys]`` per head) on a bounded number of query
rows, with every allowed key (padding and causality respected), so each row is the full distribution the block used:

- softmax blocks: ``softmax(rope(q) rope(k)ᵀ / sqrt(D))``;
- linear blocks: the kernel ``A = phi_q phi_kᵀ`` of the block's own feature map, row-normalised (what the
  denominator of normalised linear attention divides by). The entropy is taken on these un-rotated weights. With
  RoPE the numerator uses rotated features, so the effective weights ``rope(phi_q) rope(phi_k)ᵀ / (sum A + eps n)``
  can be negative and rows need not sum to 1 (docs/method.md §4.2); they have no entropy, so their fraction of
  negative entries and their row sums are reported beside it.

Per query: ``||q||``, the entropy of its row, the norm of the key with the largest weight, NaLa's exponent
``p(||q||)``, and the fraction of same-sign dimensions in that top (q, k) pair (after RoPE for softmax, whose
similarity is ``rope(q)·rope(k)``; raw for linear kernels, which act on raw ``q, k``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nalaformer.diagnostics.capture import CapturedAttention
from nalaformer.diagnostics.entropy import positive_sequence_entropy, same_sign_fraction, softmax_entropy
from nalaformer.layers import LinearAttention, NaLaFeatureMap, SoftmaxAttention
from nalaformer.layers.feature_maps import FeatureMap
from nalaformer.ops import apply_rope, nala_exponent, rope_angles_1d, rope_angles_2d

QUERY_FIELDS = ("q_norm", "entropy", "k_argmax_norm", "exponent", "same_sign_fraction", "num_keys", "rope_row_sum")


@dataclass
class LayerAnalysis:
    """Per-query statistics of one captured block call.

    A "unit" is one attention head (for feature maps with several streams, such as PolaFormer's, one head-stream
    pair). ``values[field]`` is an fp64 array ``[units, queries]`` for each name in :data:`QUERY_FIELDS`
    (``exponent`` is NaN for non-NaLa blocks, ``rope_row_sum`` NaN without RoPE on a linear block, ``entropy`` NaN
    for zero rows).

    Attributes:
        name (str): block label (``CapturedAttention.label``).
        kind (str): ``"softmax"`` or ``"linear"``.
        method (str): ``"softmax"``, ``"nala"`` (with its inhibit mode, constant power or temperature when not the
            defaults) or the feature-map class name without ``FeatureMap``.
        causal (bool), rope (bool): the block's settings.
        units (list[str]): unit labels (``"h0"`` ... or ``"h0/s1"``).
        values (dict[str, np.ndarray]): per-query statistics ``[units, queries]``.
        zero_rows (np.ndarray): ``[units]`` rows whose kernel sums to 0 (no distribution).
        negative_rows (np.ndarray): ``[units]`` rows of a linear kernel with negative entries (no entropy).
        rope_negative_fraction (np.ndarray): ``[units]`` fraction of negative RoPE numerator weights (NaN if none).
        top_pair_products (np.ndarray): ``[units, examples, D]`` products ``q_d k_d`` of the top pair of the first
            analysed rows (the paper's Fig. 3).
        nala (dict): ``lam``, ``tau``, ``temperature``, ``power`` of a NaLa feature map (empty otherwise).
    """

    name: str
    kind: str
    method: str
    causal: bool
    rope: bool
    units: list[str]
    values: dict[str, np.ndarray]
    zero_rows: np.ndarray
    negative_rows: np.ndarray
    rope_negative_fraction: np.ndarray
    top_pair_products: np.ndarray
    nala: dict[str, float | None] = field(default_factory=dict)


def _rope_tables(record: CapturedAttention, sample: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    module = record.module
    if not module.use_rope:
        return None
    device = record.q.device
    if module.layout == "2d":
        cos, sin = rope_angles_2d(record.size[0], record.size[1], module.head_dim, module.rope_base, device=device)
    else:
        positions = record.positions if record.positions.dim() == 1 else record.positions[sample]
        cos, sin = rope_angles_1d(positions, module.head_dim, module.rope_base)
    return cos.double(), sin.double()


def _with_temperature(feature_map: FeatureMap, temperature: float | None) -> FeatureMap:
    if temperature is None:
        return feature_map
    if not isinstance(feature_map, NaLaFeatureMap):
        raise TypeError(f"temperature applies to NaLa feature maps only, got {type(feature_map).__name__}")
    fm = feature_map
    return NaLaFeatureMap(fm.lam, fm.tau, temperature, fm.inhibit, fm.alpha, fm.power, fm.eps)


def _check_block(record: CapturedAttention) -> None:
    if not isinstance(record, CapturedAttention):
        raise TypeError(f"record must be a CapturedAttention, got {type(record).__name__}")
    if not isinstance(record.module, (SoftmaxAttention, LinearAttention)):
        raise TypeError(
            f"{record.label}: effective weights are defined for SoftmaxAttention and LinearAttention blocks, "
            f"got {type(record.module).__name__}"
        )


@dataclass
class AttentionRows:
    """Quadratic view of some query rows of one batch row of a captured block (fp64).

    ``U`` units (heads, or head-stream pairs with unit index ``head * streams + stream``), ``Q`` rows, ``T`` keys.

    Attributes:
        rows (torch.Tensor): query positions ``[Q]`` (long).
        allowed (torch.Tensor): ``[Q, T]`` bool, keys each row may see (padding and causality).
        scores (torch.Tensor): ``[U, Q, T]`` logits ``rope(q)·rope(k) / sqrt(D)`` (softmax; ``-inf`` where not
            allowed) or the kernel ``phi_q·phi_k`` (linear; 0 where not allowed).
        weights (torch.Tensor): ``[U, Q, T]`` the non-negative weights: softmax probabilities, or
            ``A / (sum A + eps n)`` for a linear block (the block's weights without RoPE).
        numerator_weights (torch.Tensor | None): ``[U, Q, T]`` ``rope(phi_q)·rope(phi_k) / (sum A + eps n)``, the
            weights a linear block with RoPE applies to the values (may be negative); None otherwise.
        query_vectors, key_vectors (torch.Tensor): ``[T, H, D]`` the vectors whose per-dimension products form
            the similarity (RoPE-rotated for softmax, raw for linear).
    """

    rows: torch.Tensor
    allowed: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    numerator_weights: torch.Tensor | None
    query_vectors: torch.Tensor
    key_vectors: torch.Tensor

    @property
    def applied_weights(self) -> torch.Tensor:
        """``[U, Q, T]`` the weights the block multiplies the values by (numerator weights under RoPE)."""
        return self.weights if self.numerator_weights is None else self.numerator_weights


@torch.no_grad()
def attention_rows(
    record: CapturedAttention,
    sample: int = 0,
    rows: torch.Tensor | None = None,
    *,
    temperature: float | None = None,
) -> AttentionRows:
    """Effective attention weights of the given query rows of one batch row, formed quadratically.

    Args:
        record (CapturedAttention): a captured softmax or linear block call.
        sample (int): batch row. Default: 0.
        rows (torch.Tensor, optional): query positions ``[Q]`` (long). Default: None (every position).
        temperature (float, optional): NaLa norm temperature to use instead of the block's (counterfactual).
            Default: None.

    Returns:
        AttentionRows: fp64 tensors on the device of the captured queries.
    """
    _check_block(record)
    module = record.module
    batch, seq_len, _, head_dim = record.q.shape
    if not 0 <= sample < batch:
        raise ValueError(f"sample must be in [0, {batch}), got {sample}")
    device = record.q.device
    rows = torch.arange(seq_len, device=device) if rows is None else rows.to(device=device, dtype=torch.long)
    key_index = torch.arange(seq_len, device=device)
    valid = torch.ones(seq_len, dtype=torch.bool, device=device)
    if record.attention_mask is not None:
        valid = record.attention_mask[sample].to(device)
    allowed = valid[None, :].expand(rows.numel(), seq_len)
    if module.causal:
        allowed = allowed & (key_index[None, :] <= rows[:, None])
    q, k = record.q[sample].double(), record.k[sample].double()
    rope = _rope_tables(record, sample)
    if isinstance(module, SoftmaxAttention):
        if rope is not None:
            q, k = apply_rope(q[None], *rope)[0], apply_rope(k[None], *rope)[0]
        logits = torch.einsum("qhd,khd->hqk", q[rows], k) * head_dim**-0.5
        logits = logits.masked_fill(~allowed[None], -math.inf)
        return AttentionRows(rows, allowed, logits, torch.softmax(logits, dim=-1), None, q, k)

    feature_map = _with_temperature(module.feature_map, temperature)
    positions = record.positions if record.positions.dim() == 1 else record.positions[sample : sample + 1]
    num_keys = allowed.sum(dim=-1).double()[None, :, None]
    kernels, weights, numerators = [], [], []
    for phi_q, phi_k in feature_map(record.q[sample : sample + 1], record.k[sample : sample + 1], positions):
        phi_q, phi_k = phi_q[0].double(), phi_k[0].double()
        kernel = torch.einsum("qhf,khf->hqk", phi_q[rows], phi_k) * allowed[None]
        denominator = kernel.sum(dim=-1, keepdim=True) + module.eps * num_keys
        kernels.append(kernel)
        weights.append(kernel / denominator)
        if rope is not None:
            rotated_q, rotated_k = apply_rope(phi_q[None], *rope)[0], apply_rope(phi_k[None], *rope)[0]
            numerator = torch.einsum("qhf,khf->hqk", rotated_q[rows], rotated_k) * allowed[None]
            numerators.append(numerator / denominator)

    def units(parts: list[torch.Tensor]) -> torch.Tensor:
        # [H, Q, T] per stream -> [H * streams, Q, T] with unit = head * streams + stream
        return torch.stack(parts, dim=1).flatten(0, 1)

    return AttentionRows(rows, allowed, units(kernels), units(weights), units(numerators) if numerators else None, q, k)


def _query_subset(valid: torch.Tensor, max_queries: int, generator: torch.Generator) -> torch.Tensor:
    candidates = torch.nonzero(valid.cpu(), as_tuple=False).flatten()
    if candidates.numel() > max_queries:
        pick = torch.randperm(candidates.numel(), generator=generator)[:max_queries]
        candidates = candidates[pick.sort().values]
    return candidates


@torch.no_grad()
def analyse_attention(
    record: CapturedAttention,
    *,
    max_queries: int = 256,
    seed: int = 0,
    temperature: float | None = None,
    num_examples: int = 4,
) -> LayerAnalysis:
    """Per-query spikiness statistics of one captured block call.

    Args:
        record (CapturedAttention): from :func:`~nalaformer.diagnostics.capture_attention`.
        max_queries (int): query rows analysed per batch row (a seeded random subset of the real tokens when there
            are more); every head uses the same rows, and each row keeps all its allowed keys. Default: 256.
        seed (int): seed of the query subset. Default: 0.
        temperature (float, optional): re-evaluate a NaLa block as if its norm temperature were this value (the
            captured ``q, k`` are kept: a counterfactual, not a retrained model). Default: None (as built).
        num_examples (int): rows whose top-pair products are kept for the Fig. 3 plot. Default: 4.

    Returns:
        LayerAnalysis: fp64 statistics on CPU.
    """
    _check_block(record)
    if not isinstance(max_queries, int) or max_queries <= 0:
        raise ValueError(f"max_queries must be a positive int, got {max_queries!r}")
    module = record.module
    is_softmax = isinstance(module, SoftmaxAttention)
    feature_map = None if is_softmax else _with_temperature(module.feature_map, temperature)
    streams = 1 if is_softmax else feature_map.streams
    batch, seq_len, num_heads, _ = record.q.shape
    heads = torch.arange(num_heads, device=record.q.device).repeat_interleave(streams)
    generator = torch.Generator().manual_seed(seed)
    columns: dict[str, list[torch.Tensor]] = {name: [] for name in QUERY_FIELDS}
    negative_rows = np.zeros(len(heads), dtype=np.int64)
    rope_negative = np.zeros(len(heads), dtype=np.float64)
    rope_entries = 0
    examples: torch.Tensor | None = None

    for b in range(batch):
        valid = torch.ones(seq_len, dtype=torch.bool) if record.attention_mask is None else record.attention_mask[b]
        rows = _query_subset(valid, max_queries, generator)
        view = attention_rows(record, b, rows, temperature=temperature)
        entropy, negative = _row_entropy(view, is_softmax)
        negative_rows += negative
        top = view.scores.masked_fill(~view.allowed[None], -math.inf).argmax(dim=-1)
        q, k = record.q[b].double(), record.k[b].double()
        q_norm = q[view.rows].norm(dim=-1).T.repeat_interleave(streams, dim=0)
        q_top = view.query_vectors[view.rows][:, heads].transpose(0, 1)
        k_top = view.key_vectors[top, heads[:, None]]
        row_sum = torch.full_like(entropy, math.nan)
        if view.numerator_weights is not None:
            applied = view.numerator_weights
            row_sum = applied.sum(dim=-1)
            rope_negative += ((applied < 0) & view.allowed[None]).sum(dim=(-1, -2)).cpu().double().numpy()
            rope_entries += int(view.allowed.sum())
        columns["entropy"].append(entropy.cpu())
        columns["q_norm"].append(q_norm.cpu())
        columns["k_argmax_norm"].append(k[top, heads[:, None]].norm(dim=-1).cpu())
        columns["same_sign_fraction"].append(same_sign_fraction(q_top, k_top).cpu())
        columns["num_keys"].append(view.allowed.sum(dim=-1).double().expand(len(heads), -1).cpu())
        columns["rope_row_sum"].append(row_sum.cpu())
        columns["exponent"].append(_exponents(feature_map, q_norm).cpu())
        if examples is None:
            examples = (q_top * k_top)[:, :num_examples].cpu()

    values = {name: torch.cat(parts, dim=1).numpy() for name, parts in columns.items()}
    # a NaN entropy is either a zero row or a row with negative kernel entries (counted separately)
    zero = np.isnan(values["entropy"]).sum(axis=1) - negative_rows
    units = [f"h{h}" if streams == 1 else f"h{h}/s{s}" for h in range(num_heads) for s in range(streams)]
    rope_fraction = rope_negative / rope_entries if rope_entries else np.full(len(units), np.nan)
    return LayerAnalysis(
        name=record.label,
        kind="softmax" if is_softmax else "linear",
        method="softmax" if is_softmax else _method_name(feature_map),
        causal=module.causal,
        rope=module.use_rope,
        units=units,
        values=values,
        zero_rows=zero,
        negative_rows=negative_rows,
        rope_negative_fraction=rope_fraction,
        top_pair_products=examples.numpy(),
        nala=_nala_settings(feature_map),
    )


def _row_entropy(view: AttentionRows, is_softmax: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Entropy of each row ``[U, Q]`` and, per unit, how many rows have a kernel that goes negative.

    A linear kernel that goes negative (beyond rounding) has no entropy: such rows get NaN and are counted apart from
    zero rows (which get NaN from the entropy itself).
    """
    if is_softmax:
        return softmax_entropy(view.scores, mask=view.allowed[None]), np.zeros(view.scores.shape[0], dtype=np.int64)
    kernel = view.scores
    scale = kernel.abs().amax(dim=-1, keepdim=True)
    negative = (kernel < -1e-9 * scale).any(dim=-1)
    entropy = positive_sequence_entropy(kernel.clamp_min(0.0))
    entropy = torch.where(negative, torch.full_like(entropy, math.nan), entropy)
    return entropy, negative.sum(dim=-1).cpu().numpy()


def _nala_settings(feature_map: FeatureMap | None) -> dict[str, Any]:
    """NaLa's exponent settings (``lam``, ``tau``, ``temperature``, ``power``); empty for other feature maps."""
    if not isinstance(feature_map, NaLaFeatureMap):
        return {}
    per_head = feature_map.head_temperatures()
    return {
        "lam": feature_map.lam,
        "tau": feature_map.tau,
        "temperature": feature_map.temperature,
        "power": feature_map.power,
        # per-head T_h of a "learned" / "running" temperature, else None
        "head_temperatures": None if per_head is None else per_head.detach().float().tolist(),
    }


def _method_name(feature_map: FeatureMap) -> str:
    """Short label of a feature map: ``"nala"``, ``"nala-cosine T=4"``, ``"nala-sign p=4.5"``, ``"Elu"``..."""
    if not isinstance(feature_map, NaLaFeatureMap):
        return type(feature_map).__name__.removesuffix("FeatureMap")
    name = "nala" if feature_map.inhibit == "sign" else f"nala-{feature_map.inhibit}"
    if feature_map.power is not None:
        return f"{name} p={feature_map.power:g}"
    temperature = feature_map.temperature
    if isinstance(temperature, str):
        return f"{name} T={temperature}"
    return name if temperature == 1.0 else f"{name} T={temperature:g}"


def _exponents(feature_map: FeatureMap | None, q_norm: torch.Tensor) -> torch.Tensor:
    """NaLa's exponent per query (``[H, Q]``): norm-aware, or the constant power of an ablation; NaN otherwise."""
    if not isinstance(feature_map, NaLaFeatureMap):
        return torch.full_like(q_norm, math.nan)
    if feature_map.power is not None:
        return torch.full_like(q_norm, float(feature_map.power))
    # per-head T_h ([H] -> [H, 1]); the map floors ||q|| / T_h at eps when a per-head T scales the queries
    temperature = feature_map.effective_temperature(q_norm.shape[0]).to(q_norm)[:, None]
    if feature_map.head_temperatures() is None:
        return nala_exponent(q_norm.clamp_min(feature_map.eps), feature_map.lam, feature_map.tau, temperature)
    return nala_exponent((q_norm / temperature).clamp_min(feature_map.eps), feature_map.lam, feature_map.tau)
