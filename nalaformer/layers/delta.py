"""Delta-rule token mixers: DeltaNet, Gated DeltaNet, and the paper's NaLa+DN / NaLa+GDN.

The paper's language models (docs/method.md) put NaLa's feature maps in place of SiLU inside DeltaNet and Gated
DeltaNet. Here the four share one mixer in the shared block (fused ``q, k, v, g`` projection, output LayerNorm times
``SiLU(g)``, output projection), so they differ only in the feature map and in the decay:

- the originals' short causal convolution (kernel 4) over ``q, k, v``, then the feature map on ``q, k`` and SiLU on
  ``v``; ``beta_t = sigmoid(W_beta x_t)`` per head (``2 sigmoid`` with ``allow_neg_eigval``); Gated DeltaNet's decay
  ``log alpha_t = -exp(A_log) * softplus(W_alpha x_t + dt_bias)`` per head (Mamba-2 parametrisation);
- keys are always L2-normalised after the map: the delta rule is only stable for ``||k_t|| <= 1``
  (``nalaformer/ops/delta/README.md``). For NaLa that keeps the sign split and the cubic sharpening of the key
  direction and drops the key magnitude, whose role (a per-key write strength) ``beta_t`` takes over;
- queries are L2-normalised after the map too (``query_norm="l2"``, the default), as DeltaNet's ``l2norm(silu(q))``.

Why the query norm matters here and not in NaLa's linear attention: normalised linear attention divides the read-out
by ``phi_q · sum(phi_k)``, so the scale of ``phi_q`` cancels; the delta rule reads ``o_t = S_tᵀ phi_q / sqrt(F)``
with nothing to cancel it. NaLa's ``phi_q = |q / ||q|| |^p`` (sign split, ``p`` near 4.5 at ``lam = 3``) has a norm
of about ``D^((1 - p) / 2)``: 0.027 at head size 32 for random queries, where ``l2norm(silu(q))`` has exactly 1, so
the unnormalised NaLa read-out is ~40x smaller than DeltaNet's, drowns in the output LayerNorm's epsilon and hands the
output scale to ``p``. With ``query_norm="l2"`` the map keeps its job (which state directions a query reads, sharper for
a larger ``p``) and the read-out has DeltaNet's scale. ``query_norm="none"`` is the earlier construction.

Why NaLa+DN / NaLa+GDN default to ``lam = 1`` (:data:`NALA_DELTA_LAM`) and not the released vision code's 3: after
the L2 normalisation only the *direction* of the features is left, and ``lam`` sets how concentrated it is (key power
``lam``, query exponent ``lam (tau + tanh(||q||))``). The delta rule stores one value per key direction and overwrites
along ``k_t``, so keys that share their few large coordinates interfere: it wants spread keys. Measured as the
participation ratio ``1 / sum_i w_i^2``, ``w = phi^2 / ||phi||^2`` (how many of the ``F`` feature dimensions a
vector uses) at initialisation on MQAR's width, ``lam = 3`` spreads queries and keys over about 2.4 and 3.2 of
``F = 64`` dimensions, against 9.3 and 9.0 of 32 for DeltaNet's ``l2norm(silu(·))``; ``lam = 1`` gives 7.9 and
11.9 (``benchmarks/norm_temperature/delta_features.py``). On MQAR at the study's full-mode setting NaLa+GDN with
``lam = 3`` left seed 0 at 0.28 accuracy, where ``lam = 1`` ended at 1.000 on seeds 0, 1 and 2 (README, *Norm
temperature and the NaLa delta rule*). NaLa+DN shares the default because it receives the same features (same map,
projections and convolution; only ``beta`` and the decay differ); with ``lam = 1`` it ended at 0.999, 1.000 and
0.9995 on the same MQAR setting (seeds 0, 1, 2), where ``lam = 3`` had 0.895 +- 0.025.
The map is otherwise NaLa's (sign split, norm-aware query exponent, now in [0.5, 1.5)); ``lam=3.0`` gives the
released exponents. ``lam`` has no parameter, so the weights of a model trained with the earlier default load under
either; what keeps such a model's map is its config: ``NaLaConfig`` records the resolved ``lam`` of every NaLa delta
mixer it uses, and a config saved before that (no ``mixer_defaults``) is read with :data:`NALA_DELTA_LAM_BEFORE`.

Differences from the released DeltaNet layers: the output norm is the shared block's LayerNorm over all heads (theirs
is a per-head RMSNorm), so comparisons with the other mixers differ only in the token mixing; no RoPE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.layers.block import AttentionBlock
from nalaformer.layers.feature_maps import FeatureMap, NaLaFeatureMap, Streams
from nalaformer.layers.registry import register_attention
from nalaformer.layers.short_conv import ShortConvolution
from nalaformer.ops.delta import delta_rule


@dataclass
class DeltaRuleState:
    """Decoding state of a delta-rule mixer (the ``attention`` field of its ``MixerState``).

    Attributes:
        recurrent: ``[B, H, F, Dv]`` fp32 delta-rule state (``F`` = query/key feature size).
        conv: ``[B, 3C, K - 1]`` last inputs of the ``q, k, v`` short convolution, or ``None`` without it.
    """

    recurrent: torch.Tensor
    conv: torch.Tensor | None


class SiluL2FeatureMap(FeatureMap):
    """The released DeltaNet / Gated DeltaNet maps: ``silu(q)`` and ``silu(k)`` (the mixer L2-normalises both)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(F.silu(q.float()), F.silu(k.float()))]


QUERY_NORMS = ("l2", "none")


class DeltaRuleAttention(AttentionBlock):
    """A delta-rule mixer (causal 1-D only) in the shared block; ``feature_map`` and ``gated`` select the method.

    Args:
        dim (int): channels ``C``.
        num_heads (int): heads ``H`` (must divide ``C``).
        feature_map (FeatureMap): maps per-head ``q, k [B, T, H, D]`` to one stream ``(phi_q, phi_k)``, each
            ``[B, T, H, F]``; keys are L2-normalised afterwards.
        gated (bool): Gated DeltaNet (data-dependent decay) instead of DeltaNet. Default: False.
        query_norm (str): ``"l2"`` L2-normalises the query features (DeltaNet's read-out scale, see the module
            docstring) or ``"none"`` reads the state with them as mapped. Default: "l2".
        causal (bool): must be True. Default: True.
        layout (str): must be ``"1d"``. Default: "1d".
        conv_size (int): kernel of the causal short convolution over ``q, k, v``; 0 switches it off. Default: 4.
        allow_neg_eigval (bool): ``beta`` in (0, 2) instead of (0, 1). Default: False.
        chunk_size (int): chunk length of the chunked delta rule. Default: 64.
        rope (bool): must be False (the delta rule has no RoPE). Default: False.
        lepe (bool): the shared block's LePE (off by default: the short convolution plays its part). Default: False.
        **block_options: ``gate``, ``lepe_kernel_size``, ``qkv_bias`` (see :class:`AttentionBlock`).
    """

    supports_noncausal = False
    supports_2d = False

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        feature_map: FeatureMap,
        gated: bool = False,
        query_norm: str = "l2",
        causal: bool = True,
        layout: str = "1d",
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
        chunk_size: int = 64,
        rope: bool = False,
        lepe: bool = False,
        **block_options: Any,
    ) -> None:
        if rope:
            raise ValueError(
                f"{type(self).__name__}: rope={rope!r}; the delta-rule mixers have no RoPE, use rope=False"
            )
        if isinstance(conv_size, bool) or not isinstance(conv_size, int) or conv_size < 0:
            raise ValueError(f"{type(self).__name__}: conv_size must be an int >= 0 (0 = off), got {conv_size!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"{type(self).__name__}: chunk_size must be a positive int, got {chunk_size!r}")
        if query_norm not in QUERY_NORMS:
            raise ValueError(f"{type(self).__name__}: query_norm must be one of {QUERY_NORMS}, got {query_norm!r}")
        super().__init__(dim, num_heads, causal=causal, layout=layout, rope=False, lepe=lepe, **block_options)
        self.feature_map = feature_map
        self.query_norm = query_norm
        self.gated, self.allow_neg_eigval, self.chunk_size = gated, allow_neg_eigval, chunk_size
        self.qkv_conv = ShortConvolution(3 * dim, conv_size, causal=True) if conv_size else None
        self.beta_proj = nn.Linear(dim, num_heads)
        self.decay_proj: nn.Linear | None = None
        if gated:
            self.decay_proj = nn.Linear(dim, num_heads)
            # Mamba-2 / Gated DeltaNet init: A ~ U(1, 16), time step dt log-uniform in [1e-3, 0.1].
            self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1, 16).log())
            dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(0.1))).clamp_min(1e-4)
            # softplus(dt_bias) = dt at init.
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))

    def _write_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token write strength ``beta [B, T, H]`` and log decay (gated only) from the block input, in fp32."""
        x32 = x.float()
        beta = torch.sigmoid(F.linear(x32, self.beta_proj.weight.float(), self.beta_proj.bias.float()))
        if self.allow_neg_eigval:
            beta = 2.0 * beta
        log_decay = None
        if self.decay_proj is not None:
            rate = F.linear(x32, self.decay_proj.weight.float(), self.decay_proj.bias.float()) + self.dt_bias.float()
            log_decay = -self.A_log.float().exp() * F.softplus(rate)
        return beta, log_decay

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        inputs: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        state: DeltaRuleState | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, DeltaRuleState | None]:
        beta, log_decay = self._write_gates(inputs)
        if state is not None and not isinstance(state, DeltaRuleState):
            raise TypeError(f"state.attention must be a DeltaRuleState, got {type(state).__name__}")
        batch, seq_len, heads, head_dim = q.shape
        qkv = torch.cat([x.reshape(batch, seq_len, self.dim) for x in (q, k, v)], dim=-1)
        if attention_mask is not None:
            # Padding must not reach real tokens through the convolution window (left padding = a fresh start).
            qkv = qkv * attention_mask[..., None].to(qkv.dtype)
        conv_state = None
        if self.qkv_conv is not None:
            qkv, conv_state = self.qkv_conv(qkv, None if state is None else state.conv)
        q, k, v = (x.reshape(batch, seq_len, heads, head_dim) for x in qkv.split(self.dim, dim=-1))
        ((phi_q, phi_k),) = self.feature_map(q, k, positions)
        phi_k = F.normalize(phi_k.float(), dim=-1, eps=1e-6)
        if self.query_norm == "l2":
            phi_q = F.normalize(phi_q.float(), dim=-1, eps=1e-6)
        result = delta_rule(
            phi_q.float(),
            phi_k,
            F.silu(v.float()),
            beta,
            g=log_decay,
            initial_state=None if state is None else state.recurrent,
            output_final_state=use_cache,
            attention_mask=attention_mask,
            chunk_size=self.chunk_size,
        )
        if not use_cache:
            return result.to(v.dtype), None
        o, recurrent = result
        return o.to(v.dtype), DeltaRuleState(recurrent=recurrent, conv=conv_state)

    def extra_repr(self) -> str:
        conv = 0 if self.qkv_conv is None else self.qkv_conv.kernel_size
        return (
            f"{super().extra_repr()}, gated={self.gated}, query_norm={self.query_norm!r}, conv_size={conv}, "
            f"allow_neg_eigval={self.allow_neg_eigval}"
        )


NALA_DELTA_LAM = 1.0  # NaLa+DN / NaLa+GDN's default exponent scale (spread features, see the module docstring)
NALA_DELTA_LAM_BEFORE = 3.0  # their default before NALA_DELTA_LAM: what configs saved back then were trained with
NALA_DELTA_MIXERS = ("nala_deltanet", "nala_gated_deltanet")  # the mixers whose default lam changed

_DELTA_OPTIONS = {"conv_size", "allow_neg_eigval", "chunk_size", "lepe", "gate", "lepe_kernel_size", "qkv_bias", "rope"}
_NALA_OPTIONS = {"lam", "tau", "temperature", "inhibit", "alpha", "eps"}
# the NaLa variants' read-out scale (see the module docstring); DeltaNet's own map is always L2-normalised
_NALA_DELTA_OPTIONS = {"query_norm"}


def _delta_builder(name: str, *, gated: bool, nala: bool):
    def build(dim: int, num_heads: int, *, causal: bool, layout: str, **options: Any) -> DeltaRuleAttention:
        accepted = _DELTA_OPTIONS | (_NALA_OPTIONS | _NALA_DELTA_OPTIONS if nala else set())
        unknown = set(options) - accepted
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for attention {name!r}; accepted: {sorted(accepted)}"
            )
        own = {key: options.pop(key) for key in _NALA_OPTIONS & set(options)}
        if nala:
            own.setdefault("lam", NALA_DELTA_LAM)
        heads = {"num_heads": num_heads, "head_dim": dim // max(num_heads, 1)}
        feature_map = NaLaFeatureMap(**own, **heads) if nala else SiluL2FeatureMap()
        return DeltaRuleAttention(
            dim, num_heads, feature_map=feature_map, gated=gated, causal=causal, layout=layout, **options
        )

    return build


_DELTANET = "Yang et al., Parallelizing Linear Transformers with the Delta Rule, arXiv 2406.06484"
_GATED_DELTANET = "Yang, Kautz & Hatamizadeh, Gated Delta Networks, arXiv 2412.06464"
_NALA = "Meng et al., NaLaFormer, arXiv 2506.21137 (§4.4, Table 4)"
for _name, _gated, _nala, _paper, _summary in [
    ("deltanet", False, False, _DELTANET, "delta rule S(I - beta k kᵀ) + beta k vᵀ; l2norm(silu(.)) q, k"),
    ("gated_deltanet", True, False, _GATED_DELTANET, "delta rule with data-dependent decay alpha_t; l2norm(silu)"),
    ("nala_deltanet", False, True, _NALA, "NaLa+DN: DeltaNet with NaLa's maps, lambda = 1, unit q, k"),
    ("nala_gated_deltanet", True, True, _NALA, "NaLa+GDN: Gated DeltaNet with NaLa's maps, lambda = 1, unit q, k"),
]:
    register_attention(
        _name,
        _delta_builder(_name, gated=_gated, nala=_nala),
        paper=_paper,
        summary=_summary,
        noncausal=False,
        image=False,
    )
