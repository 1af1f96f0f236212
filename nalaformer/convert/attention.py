"""The attention a converted layer runs: a registered feature map on the pretrained queries and keys.

A converted layer keeps the pretrained module's projections and head layout and changes one thing, how the heads
attend: ``softmax(q k^T * scaling)`` becomes normalised linear attention over ``phi(q), phi(k)`` (NaLa by default).
This module holds what every architecture shares:

- :class:`QueryKeyAdapter`, the only parameters a conversion adds besides the feature map's own (see
  :class:`QueryKeyAdapter` for why they exist);
- :func:`explicit_attention`, the ``T x T`` form of the student (also with a softmax sliding window, the hybrid
  option), used where the weights themselves are needed: the attention-transfer KL, entropy diagnostics, the hybrid,
  and single-token steps against a growing Hugging Face cache;
- :class:`LinearizedAttention`, the base of the per-architecture wrappers in :mod:`nalaformer.convert.families`, with
  its three modes: ``"linear"`` (the converted model), ``"softmax"`` (the teacher, bit for bit the original math) and
  ``"transfer"`` (both: the teacher's output goes on, the student's error is recorded for stage 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nalaformer.layers import FeatureMap, LinearAttention, NaLaFeatureMap, build_attention
from nalaformer.ops import linear_attention, nala_attention

if TYPE_CHECKING:  # transformers is imported only where a cache is used
    from nalaformer.convert.cache import LinearStateLayer

MODES = ("linear", "softmax", "transfer")


class QueryKeyAdapter(nn.Module):
    """Per-head ``q -> exp(s_h) * W_q,h q`` and ``k -> W_k,h k`` before the feature map (identity at init).

    The pretrained projections stay frozen during attention transfer, so the student needs parameters of its own to
    move towards the teacher's weights. Hedgehog's map has them (a per-head projection); NaLa, ELU, ReLU and cosFormer
    have none. Every converted mixer therefore gets the same small adapter, so the maps are compared with the same
    trainable budget: a ``D x D`` matrix per head for queries and for keys (Hedgehog's recipe, applied to every map)
    and a per-head query log-scale. The log-scale is NaLa's temperature: NaLa normalises ``q`` and uses ``||q||``
    only in its exponent ``lam * (tau + tanh(||q||))``, so scaling ``q`` by ``exp(s_h)`` is ``tanh(||q|| / T_h)``
    with ``T_h = exp(-s_h)``. Pretrained query norms are far above 1, where that ``tanh`` is flat and NaLa collapses
    to a constant power; :func:`nalaformer.convert.calibrate` starts ``T_h`` at each head's median query norm.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        eye = torch.eye(head_dim).expand(num_heads, head_dim, head_dim)
        self.query_weight = nn.Parameter(eye.clone())
        self.key_weight = nn.Parameter(eye.clone())
        self.query_log_scale = nn.Parameter(torch.zeros(num_heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k [B, T, H, D]`` -> adapted ``q, k`` (same shapes, fp32)."""
        q = torch.einsum("bthd,hed->bthe", q.float(), self.query_weight.float())
        k = torch.einsum("bthd,hed->bthe", k.float(), self.key_weight.float())
        return q * self.query_log_scale.float().exp()[:, None], k


def build_feature_map(mixer: str, num_heads: int, head_dim: int, causal: bool, options: dict[str, Any]) -> FeatureMap:
    """The feature map of the registered linear mixer ``mixer`` for this head layout (ValueError otherwise)."""
    built = build_attention(
        mixer, num_heads * head_dim, num_heads, causal=causal, rope=False, lepe=False, gate=False, **options
    )
    if not isinstance(built, LinearAttention):
        raise ValueError(
            f"mixer {mixer!r} is not a feature-map linear attention ({type(built).__name__}); the converter needs one "
            "whose attention is phi(q) phi(k)^T (e.g. nala, nala_cosine, elu, relu, hedgehog, cosformer)"
        )
    return built.feature_map


def _streams(
    feature_map: FeatureMap, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return feature_map(q, k, positions)


def explicit_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    window: int = 0,
    scores: torch.Tensor | None = None,
    window_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised linear attention written out with its ``Tq x Tk`` weights (reference and short inputs).

    Queries are the last ``Tq`` of the ``Tk`` positions (``Tq < Tk`` when decoding against cached keys). Without a
    window the output equals :func:`nalaformer.ops.linear_attention`'s mean form,
    ``Σ_s (phi_q·phi_k_s) v_s / (Σ_s phi_q·phi_k_s + eps * n)``. With ``window = w > 0`` the ``w`` nearest keys
    (causal: ``t - w < s <= t``; non-causal: ``|t - s| < w``) use ``exp(score - max)`` instead, from the softmax
    ``scores [B, H, Tq, Tk]``, and the linear terms outside the window are weighted by ``window_weight [H]``.

    Args:
        phi_q (torch.Tensor): ``[B, Tq, H, F]``; phi_k ``[B, Tk, H, F]``; v ``[B, Tk, H, Dv]``.
        causal (bool): key ``s`` is visible to query ``t`` only when ``s <= t``.
        key_mask (torch.Tensor, optional): ``[B, Tk]`` bool, True = real key.

    Returns:
        ``(o [B, Tq, H, Dv], weights [B, H, Tq, Tk])``, fp32; rows without a visible key are 0.
    """
    q_len, k_len = phi_q.shape[1], phi_k.shape[1]
    a = torch.einsum("bthf,bshf->bhts", phi_q.float(), phi_k.float())
    query_pos = torch.arange(k_len - q_len, k_len, device=a.device)[:, None]
    key_pos = torch.arange(k_len, device=a.device)[None, :]
    visible = (key_pos <= query_pos) if causal else torch.ones(q_len, k_len, dtype=torch.bool, device=a.device)
    visible = visible[None, None]
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :].bool()
    count = visible.sum(-1, keepdim=True).float()
    if window > 0:
        if scores is None:
            raise ValueError("explicit_attention: window > 0 needs the softmax scores")
        distance = query_pos - key_pos
        band = ((distance >= 0) & (distance < window)) if causal else (distance.abs() < window)
        band = band[None, None] & visible
        masked = scores.float().masked_fill(~band, float("-inf"))
        peak = masked.amax(-1, keepdim=True).clamp_min(-1e30)
        soft = torch.where(band, (masked - peak).exp(), torch.zeros((), device=a.device))
        gain = torch.ones((), device=a.device) if window_weight is None else window_weight.float()[None, :, None, None]
        a = torch.where(band, soft, a * gain)
    a = torch.where(visible, a, torch.zeros((), device=a.device))
    weights = a / (a.sum(-1, keepdim=True) + eps * count).clamp_min(1e-30)
    o = torch.einsum("bhts,bshd->bthd", weights, v.float())
    return o, weights


def softmax_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scaling: float,
    causal: bool,
    key_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's attention from ``q [B, Tq, H, D]``, ``k, v [B, Tk, H, D]``: ``(o, weights, scores)``."""
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scaling
    q_len, k_len = q.shape[1], k.shape[1]
    visible = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device)
    if causal:
        visible = torch.arange(k_len, device=q.device)[None, :] <= torch.arange(k_len - q_len, k_len)[:, None]
    visible = visible[None, None]
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :].bool()
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)
    return torch.einsum("bhts,bshd->bthd", weights, v.float()).to(v.dtype), weights, scores


@dataclass
class TransferRecord:
    """What the converted layers add up during one stage-1 forward pass (reset by the trainer each step)."""

    mse: list[torch.Tensor] = field(default_factory=list)
    kl: list[torch.Tensor] = field(default_factory=list)
    kl_max_len: int = 64


class LinearizedAttention(nn.Module):
    """Base of the converted layers: feature map, adapter, optional softmax window, mode switch.

    Subclasses (one per architecture) keep the pretrained projections under their original attribute names, so
    LoRA target names and state-dict keys are those of the pretrained model, and implement ``forward`` with the
    original module's signature and return convention.

    Args:
        mixer (str): registered linear mixer name. options (dict): its ``build_attention`` options.
        num_heads (int), head_dim (int): query heads and their width.
        causal (bool): decoder (causal) or encoder (bidirectional) attention.
        window (int): softmax sliding window size (0 = pure linear attention).
        eps (float): added to the mean denominator, as in the library's linear attention.
    """

    def __init__(
        self, mixer: str, options: dict[str, Any], num_heads: int, head_dim: int, causal: bool, window: int, eps: float
    ) -> None:
        super().__init__()
        self.mixer, self.mixer_options = mixer, dict(options)
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.window, self.eps = window, eps
        self.feature_map = build_feature_map(mixer, num_heads, head_dim, causal, options)
        self.adapter = QueryKeyAdapter(num_heads, head_dim)
        self.window_weight = nn.Parameter(torch.ones(num_heads)) if window > 0 else None
        self.mode = "linear"
        self.record: TransferRecord | None = None
        # when a list: every call appends the teacher's and the student's row entropies and the query norms
        self.capture: list[dict[str, torch.Tensor]] | None = None

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def student(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        key_mask: torch.Tensor | None,
        scores: torch.Tensor | None = None,
        want_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Converted attention of ``q [B, Tq, H, D]`` over ``k, v [B, Tk, H, D]``; weights only when asked."""
        q_len, k_len = q.shape[1], k.shape[1]
        qa, ka = self.adapter(q, k)
        explicit = want_weights or self.window > 0 or q_len != k_len
        fm = self.feature_map
        if not explicit and isinstance(fm, NaLaFeatureMap) and getattr(fm, "temperature_mode", None) is None:
            # the library's NaLa op (blocked, never materialising all features when there is no padding)
            options = {"lam": fm.lam, "tau": fm.tau, "inhibit": fm.inhibit, "alpha": fm.alpha, "power": fm.power}
            temperature = getattr(fm, "op_temperature", fm.temperature)
            o = nala_attention(
                qa, ka, v, causal=self.causal, temperature=temperature, eps=self.eps, attention_mask=key_mask, **options
            )
            return o, None
        positions = torch.arange(k_len, device=q.device)
        if q_len < k_len:
            # decoding against cached keys: the queries are the last positions (position-aware maps need them)
            qa = torch.cat([qa.new_zeros(qa.shape[0], k_len - q_len, *qa.shape[2:]), qa], dim=1)
        streams = _streams(fm, qa, ka, positions)
        values = v.chunk(len(streams), dim=-1)
        outputs, first_weights = [], None
        for (phi_q, phi_k), value in zip(streams, values):
            if explicit:
                if scores is None and self.window > 0:
                    raise ValueError("the softmax window needs the teacher's scores")
                o, weights = explicit_attention(
                    phi_q[:, k_len - q_len :],
                    phi_k,
                    value,
                    causal=self.causal,
                    key_mask=key_mask,
                    eps=self.eps,
                    window=self.window,
                    scores=scores,
                    window_weight=self.window_weight,
                )
                first_weights = weights if first_weights is None else first_weights
            else:
                o = linear_attention(phi_q, phi_k, value, causal=self.causal, eps=self.eps, attention_mask=key_mask)
            outputs.append(o)
        return torch.cat(outputs, dim=-1).to(v.dtype), first_weights

    def decodes_with_state(self, cache: Any) -> bool:
        """Whether a call with ``cache`` carries the constant-size running state (linear mode, no softmax window)
        rather than the growing keys and values of transformers' cache."""
        return cache is not None and self.causal and self.mode == "linear" and self.window == 0

    def recurrent(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer: LinearStateLayer,
        *,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Converted attention of the new tokens ``q, k, v [B, T, H, D]`` continuing ``layer``'s running state.

        Same result as :meth:`student` over the whole sequence (causal mean form, padded keys never summed), but only
        the fixed-size ``LinearAttentionState`` per stream is kept: NaLa's maps run the fast op
        (:func:`~nalaformer.ops.nala_attention`, one small step per decoded token), the others their features and
        :func:`~nalaformer.ops.linear_attention`.
        """
        if not self.causal:
            raise ValueError("a bidirectional converted layer has no decoding state")
        q_len = q.shape[1]
        qa, ka = self.adapter(q, k)
        fm = self.feature_map
        previous = layer.states
        if isinstance(fm, NaLaFeatureMap) and getattr(fm, "temperature_mode", None) is None:
            options = {"lam": fm.lam, "tau": fm.tau, "inhibit": fm.inhibit, "alpha": fm.alpha, "power": fm.power}
            o, state = nala_attention(
                qa, ka, v, causal=True, temperature=getattr(fm, "op_temperature", fm.temperature), eps=self.eps,
                attention_mask=key_mask, initial_state=None if previous is None else previous[0],
                output_final_state=True, **options,
            )  # fmt: skip
            layer.advance((state,), q_len)
            return o.to(v.dtype)
        positions = torch.arange(layer.length, layer.length + q_len, device=q.device)
        streams = _streams(fm, qa, ka, positions)
        outputs, states = [], []
        for index, ((phi_q, phi_k), value) in enumerate(zip(streams, v.chunk(len(streams), dim=-1))):
            o, state = linear_attention(
                phi_q, phi_k, value, causal=True, eps=self.eps, attention_mask=key_mask,
                initial_state=None if previous is None else previous[index], output_final_state=True,
            )  # fmt: skip
            outputs.append(o)
            states.append(state)
        layer.advance(tuple(states), q_len)
        return torch.cat(outputs, dim=-1).to(v.dtype)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scaling: float, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-head attention in the current mode: ``(o [B, Tq, H, D], weights or None)``.

        ``q`` and ``k`` are what the original module feeds its softmax (after RoPE where it has it), ``k, v``
        repeated to ``H`` heads (grouped-query attention). In ``"transfer"`` mode the teacher's output is returned
        and the student's relative MSE (and, for inputs up to ``record.kl_max_len`` tokens, the KL between the
        teacher's and the student's weights) is appended to :attr:`record`.
        """
        if self.capture is not None:
            self._capture(q, k, v, scaling, key_mask)
        if self.mode == "linear" and self.window == 0:
            return self.student(q, k, v, key_mask=key_mask)
        teacher_o, teacher_w, scores = softmax_reference(
            q, k, v, scaling=scaling, causal=self.causal, key_mask=key_mask
        )
        if self.mode == "softmax":
            return teacher_o, teacher_w
        if self.mode == "linear":
            return self.student(q, k, v, key_mask=key_mask, scores=scores)
        record = self.record
        with_kl = record is not None and k.shape[1] <= record.kl_max_len
        student_o, student_w = self.student(q, k, v, key_mask=key_mask, scores=scores, want_weights=with_kl)
        if record is not None:
            valid = None if key_mask is None else key_mask[:, k.shape[1] - q.shape[1] :]
            record.mse.append(relative_mse(student_o, teacher_o.detach(), valid))
            if with_kl:
                record.kl.append(attention_kl(teacher_w.detach(), student_w, valid))
        return teacher_o, teacher_w

    @torch.no_grad()
    def _capture(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, key_mask: torch.Tensor | None
    ) -> None:
        _, teacher_w, scores = softmax_reference(q, k, v, scaling=scaling, causal=self.causal, key_mask=key_mask)
        _, student_w = self.student(q, k, v, key_mask=key_mask, scores=scores, want_weights=True)
        valid = torch.ones(q.shape[:2], dtype=torch.bool) if key_mask is None else key_mask[:, -q.shape[1] :]
        self.capture.append(
            {
                "teacher_entropy": row_entropy(teacher_w),
                "student_entropy": row_entropy(student_w),
                "query_norm": q.float().norm(dim=-1).transpose(1, 2),
                "valid": valid[:, None, :].expand(-1, q.shape[2], -1),
            }
        )


def relative_mse(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``mean((s - t)^2) / mean(t^2)`` over real tokens (``valid [B, T]``), so layers of any scale weigh alike."""
    error = (student.float() - teacher.float()).pow(2).flatten(2).mean(-1)
    power = teacher.float().pow(2).flatten(2).mean(-1)
    if valid is not None:
        weight = valid.float()
        return (error * weight).sum() / ((power * weight).sum() + 1e-12)
    return error.mean() / (power.mean() + 1e-12)


def attention_kl(teacher: torch.Tensor, student: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``KL(teacher || student)`` of ``[B, H, Tq, Tk]`` attention rows, averaged over real query rows."""
    log_ratio = teacher.clamp_min(1e-12).log() - student.float().clamp_min(1e-12).log()
    rows = (teacher * log_ratio).sum(-1)
    if valid is not None:
        weight = valid.float()[:, None, :].expand_as(rows)
        return (rows * weight).sum() / weight.sum().clamp_min(1.0)
    return rows.mean()


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each attention row of ``[B, H, Tq, Tk]`` weights: ``[B, H, Tq]``."""
    p = weights.float().clamp_min(0.0)
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def uniform_entropy(length: int) -> float:
    """Entropy of a uniform row over ``length`` keys."""
    return math.log(max(length, 1))


def expand_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Repeat ``[B, T, Hkv, D]`` to ``[B, T, Hkv * groups, D]`` (grouped-query attention)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


def key_mask_from(mask: torch.Tensor | None, k_len: int) -> torch.Tensor | None:
    """Real keys ``[B, Tk]`` (bool) from a Hugging Face attention mask as a layer receives it, or ``None``.

    Layers get a 4-D ``[B, 1, Tq, Tk]`` mask, additive float (eager) or bool (SDPA), or ``None`` (no padding). The
    last query row sees every real key in both the causal and the bidirectional case (left or right padding).
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        keep = mask.bool() if mask.dtype == torch.bool else mask > 0
        return keep[:, -k_len:]
    if mask.dtype == torch.bool:
        keep = mask
    else:
        keep = mask > torch.finfo(mask.dtype).min / 2
    keep = keep[:, 0, -1, -k_len:]
    return None if bool(keep.all()) else keep
