"""Feature-map modules: the only thing that differs between the linear-attention mixers.

Each module maps per-head ``q, k [B, T, H, D]`` to a list of streams ``(phi_q, phi_k)``; the mixer splits the value
head evenly across the streams (PolaFormer uses two, every other method one). Learnable parameters of a method
(FLatten's scale, PolaFormer's power, Hedgehog's projection) live here; the math is in :mod:`nalaformer.ops`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nalaformer.ops import (
    cosformer_feature_map,
    elu_feature_map,
    focused_feature_map,
    hedgehog_feature_map,
    nala_attention,
    nala_key_map,
    nala_query_map,
    polarity_feature_maps,
    relu_feature_map,
)
from nalaformer.ops.feature_maps import (
    INHIBIT_MODES,
    NALA_ALPHA,
    NALA_EPS,
    NALA_INHIBIT,
    NALA_LAM,
    NALA_TAU,
    NALA_TEMPERATURE,
    check_nala_options,
)
from nalaformer.ops.validation import upcast

Streams = list[tuple[torch.Tensor, torch.Tensor]]


class FeatureMap(nn.Module):
    """Base class: ``forward(q, k, positions) -> [(phi_q, phi_k), ...]`` with ``len == self.streams``."""

    streams: int = 1

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        raise NotImplementedError


TEMPERATURE_MODES = ("learned", "running", "sqrt_d")


class NaLaFeatureMap(FeatureMap):
    """NaLa: norm-aware query power with a sign split (released code) or cosine inhibit (paper Eq. 16).

    The query exponent is ``p = lam * (tau + tanh(||q|| / T))``. With the released ``T = 1`` it is norm-aware only
    while ``||q|| < ~2``; trained queries grow past that (in our study 97.7% of them end within 3% of the ceiling
    ``lam * (tau + 1)``), after which ``p`` is a constant and the map is the ``sign_split_power`` ablation. The
    ``temperature`` option keeps ``||q|| / T`` in tanh's responsive range:

    - a float: a fixed ``T`` (1.0 = released code);
    - ``"sqrt_d"``: ``T = sqrt(D)``, the norm of a query with unit-variance entries, so that a typical query starts
      at ``tanh(1)`` (``p`` about ``0.84`` of its ceiling at the defaults) whatever the head size;
    - ``"learned"``: a per-head ``T_h = exp(log_temperature_h)`` trained with the model. Log-parametrised, so it stays
      positive and a gradient step changes it by a ratio (``T`` spans orders of magnitude as the query norms
      grow). Initialised from data: on the first forward ``T_h`` is set to the median ``||q||`` of head ``h`` in
      that batch, which puts the median query at ``tanh(1)``, in the linear part of tanh, whatever the
      initialisation scale of the projections. Gradient descent can still move ``T_h`` down until the head
      saturates, if a constant sharp exponent is what the task wants; the diagnostics show whether it does;
    - ``"running"``: ``T_h`` is a running median of head ``h``'s query norm (a buffer, initialised like
      ``"learned"``, then moved by ``momentum`` towards each training batch's median when that batch's gradient
      flows back through the layer; inference, evaluation and decoding never change it). ``||q|| / T_h`` is then
      about 1 for a typical query whatever scale the projections drift to, so the exponent cannot saturate as a
      whole: only queries whose norm is over ~2x their head's typical norm reach the ceiling. The exponent responds to
      a query's norm relative to its head's, which is what the sharpness of a softmax row responds to after training
      too. (With ``"learned"``, training can lower ``T_h`` until the head saturates, and in our runs it does.)

    A per-head ``T_h`` is applied by scaling the queries, ``q / T_h``, before the map with ``T = 1``: the map reads
    ``q`` only through ``q / ||q||`` (unchanged by the scaling) and ``||q|| / T_h``, so this is the map with
    temperature ``T_h`` (up to rounding; the ``eps`` floor then applies to ``||q|| / T_h``) and every fast path that
    takes a float temperature serves it. Decoding reads the same ``T_h`` at every step, so a decoded sequence equals
    its full forward.

    Args:
        lam (float): exponent scale. Default: 3.0.
        tau (float): exponent offset. Default: 0.5.
        temperature (float | str): ``T`` (> 0) or one of ``"learned"``, ``"running"``, ``"sqrt_d"``. Default: 1.0.
        inhibit (str): ``"sign"``, ``"cosine"`` or ``"none"`` (keep positive parts only). Default: "sign".
        alpha (float): cosine-inhibit angle sharpness. Default: 20.0.
        power (float, optional): constant query exponent instead of the norm-aware one (ablations). Default: None.
        eps (float): floor of ``||q||``. Default: 1e-6.
        num_heads (int, optional): heads ``H``; required for ``"learned"`` and ``"running"``.
        head_dim (int, optional): ``D``; required for ``"sqrt_d"``.
        momentum (float): weight of each batch's median in the ``"running"`` update. Default: 0.05.
    """

    def __init__(
        self,
        lam: float = NALA_LAM,
        tau: float = NALA_TAU,
        temperature: float | str = NALA_TEMPERATURE,
        inhibit: str = NALA_INHIBIT,
        alpha: float = NALA_ALPHA,
        power: float | None = None,
        eps: float = NALA_EPS,
        *,
        num_heads: int | None = None,
        head_dim: int | None = None,
        momentum: float = 0.05,
    ) -> None:
        super().__init__()
        if inhibit not in INHIBIT_MODES:
            raise ValueError(f"inhibit must be one of {INHIBIT_MODES}, got {inhibit!r}")
        self.temperature_mode = temperature if isinstance(temperature, str) else None
        if self.temperature_mode is not None and self.temperature_mode not in TEMPERATURE_MODES:
            raise ValueError(f"temperature must be a number > 0 or one of {TEMPERATURE_MODES}, got {temperature!r}")
        op_temperature = 1.0 if self.temperature_mode is not None else temperature
        if self.temperature_mode == "sqrt_d":
            if not isinstance(head_dim, int) or head_dim <= 0:
                raise ValueError(f"temperature='sqrt_d' needs head_dim, a positive int, got {head_dim!r}")
            op_temperature = math.sqrt(head_dim)
        check_nala_options(lam, tau, op_temperature, power, alpha, eps)
        self.lam, self.tau, self.temperature = lam, tau, temperature
        self.inhibit, self.alpha, self.power, self.eps = inhibit, alpha, power, eps
        # the float temperature the op receives (1.0 when a per-head T scales the queries instead)
        self.op_temperature = float(op_temperature)
        self.momentum = momentum
        self._initialised = True
        if self.temperature_mode in ("learned", "running"):
            if not isinstance(num_heads, int) or num_heads <= 0:
                raise ValueError(f"temperature={temperature!r} needs num_heads, a positive int, got {num_heads!r}")
            if not 0.0 < momentum <= 1.0:
                raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
            if self.temperature_mode == "learned":
                self.log_temperature = nn.Parameter(torch.zeros(num_heads))
            else:
                self.register_buffer("running_temperature", torch.ones(num_heads))
            # persistent, so a loaded checkpoint is never re-initialised from the first batch it sees
            self.register_buffer("temperature_initialised", torch.zeros((), dtype=torch.bool))
            self._initialised = False

    def head_temperatures(self) -> torch.Tensor | None:
        """The per-head ``T_h`` ``[H]`` of a ``"learned"`` / ``"running"`` map (None for a float or ``"sqrt_d"``)."""
        if self.temperature_mode == "learned":
            return self.log_temperature.exp()
        if self.temperature_mode == "running":
            return self.running_temperature
        return None

    def effective_temperature(self, num_heads: int) -> torch.Tensor:
        """``T`` per head ``[H]`` as the exponent sees it (fp32, detached): for the diagnostics."""
        per_head = self.head_temperatures()
        if per_head is None:
            return torch.full((num_heads,), self.op_temperature)
        return per_head.detach().float()

    @torch.no_grad()
    def _initialise(self, q: torch.Tensor) -> None:
        """Set ``T_h`` to the median ``||q||`` of head ``h`` in this batch (once; see the class docstring)."""
        if not self._initialised:
            self._initialised = bool(self.temperature_initialised)
        if self._initialised:
            return
        median = self._median_norm(q)
        if self.temperature_mode == "learned":
            self.log_temperature.copy_(median.log())
        else:
            self.running_temperature.copy_(median)
        self.temperature_initialised.fill_(True)
        self._initialised = True

    def _median_norm(self, q: torch.Tensor, reduce: bool = True) -> torch.Tensor:
        """Median query norm per head ``[H]`` (fp32, at least ``1e-3``), averaged over processes when distributed
        and ``reduce`` (the running updates are not: DDP broadcasts rank 0's buffers at each forward)."""
        norms = q.detach().float().norm(dim=-1).reshape(-1, q.shape[-2])
        median = norms.median(dim=0).values.clamp_min(1e-3)
        if reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
            # every process must start from the same T_h (the geometric mean of the processes' medians)
            log_median = median.log()
            torch.distributed.all_reduce(log_median)
            median = (log_median / torch.distributed.get_world_size()).exp()
        return median

    def scale_queries(self, q: torch.Tensor) -> torch.Tensor:
        """``q / T_h`` per head for a per-head temperature (initialising it on the first call), else ``q``.

        Feed the result to the NaLa op with ``temperature=self.op_temperature``.
        """
        if self.temperature_mode not in ("learned", "running"):
            return q
        heads = (self.log_temperature if self.temperature_mode == "learned" else self.running_temperature).numel()
        if q.shape[-2] != heads:
            raise ValueError(
                f"q [B, T, H, D] has H={q.shape[-2]} heads, the per-head temperature was built for {heads}"
            )
        self._initialise(q)
        q = upcast(q)
        if self.temperature_mode == "learned":
            return q / self.log_temperature.exp().to(q.dtype)[:, None]
        # a copy: the running statistic may change (below) before autograd reads the divisor back
        scaled = q / self.running_temperature.clone().to(q.dtype)[:, None]
        if self.training and scaled.requires_grad:
            median = self._median_norm(q, reduce=False)

            def update(grad: torch.Tensor) -> None:
                with torch.no_grad():
                    self.running_temperature.lerp_(median.to(self.running_temperature), self.momentum)

            # the statistic moves when this forward is trained on (its backward), never in inference or decoding
            scaled.register_hook(update)
        return scaled

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        q = self.scale_queries(q)
        phi_q = nala_query_map(
            q, self.lam, self.tau, self.op_temperature, self.eps, self.inhibit, self.alpha, self.power
        )
        phi_k = nala_key_map(k, self.lam, self.inhibit, self.alpha, self.eps)
        return [(phi_q, phi_k)]

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options: Any) -> Any:
        """NaLa attention with this map's options: :func:`~nalaformer.ops.nala_attention` (the fast path) on
        ``q, k, v [B, T, H, D]``; ``options`` are the op's other arguments (``causal``, ``rope``, ``eps``, masks,
        state, ``chunk_size``). A per-head temperature scales ``q`` first (in ``q``'s dtype, which the op requires
        to match ``k``'s)."""
        return nala_attention(
            self.scale_queries(q).to(q.dtype),
            k,
            v,
            lam=self.lam,
            tau=self.tau,
            temperature=self.op_temperature,
            inhibit=self.inhibit,
            alpha=self.alpha,
            power=self.power,
            feature_eps=self.eps,
            **options,
        )

    def extra_repr(self) -> str:
        power = "norm-aware" if self.power is None else self.power
        return (
            f"lam={self.lam}, tau={self.tau}, temperature={self.temperature!r}, inhibit={self.inhibit!r}, power={power}"
        )


class EluFeatureMap(FeatureMap):
    """``elu(x) + 1`` for queries and keys (Katharopoulos et al., 2020)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(elu_feature_map(q), elu_feature_map(k))]


class ReluFeatureMap(FeatureMap):
    """``relu(x)`` for queries and keys (EfficientViT's ReLU linear attention)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(relu_feature_map(q), relu_feature_map(k))]


class FocusedFeatureMap(FeatureMap):
    """FLatten's focused map with a learnable per-channel scale (``softplus``) and focusing power.

    Args:
        num_heads (int), head_dim (int): shape of the learnable scale ``[H, D]``.
        power (float): focusing power. Default: 3.0.
    """

    def __init__(self, num_heads: int, head_dim: int, power: float = 3.0) -> None:
        super().__init__()
        self.power = power
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(focused_feature_map(q, self.scale, self.power), focused_feature_map(k, self.scale, self.power))]


class PolarityFeatureMap(FeatureMap):
    """PolaFormer: same-sign and opposite-sign streams with a learnable power ``1 + alpha * sigmoid(w)``.

    Args:
        num_heads (int), head_dim (int): shape of the learnable scale and power ``[H, D]``.
        alpha (float): range of the learnable power. Default: 4.0 (power 3 at initialisation).
    """

    streams = 2

    def __init__(self, num_heads: int, head_dim: int, alpha: float = 4.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"PolaFormer splits each value head in two: head_dim must be even, got {head_dim}")
        self.alpha = alpha
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.power_logit = nn.Parameter(torch.zeros(num_heads, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        power = 1.0 + self.alpha * torch.sigmoid(self.power_logit.float())
        phi_same, phi_opposite, phi_k = polarity_feature_maps(q, k, power, self.scale)
        return [(phi_same, phi_k), (phi_opposite, phi_k)]


class CosFormerFeatureMap(FeatureMap):
    """cosFormer: ReLU features re-weighted by ``cos(pi (i - j) / 2M)`` through sin/cos of the positions.

    Args:
        causal (bool): causal mixers use ``M = max_len``; non-causal ones ``M`` = the sequence length.
        max_len (int): ``M`` for causal use; positions must stay below it. Default: 4096.
    """

    def __init__(self, causal: bool, max_len: int = 4096) -> None:
        super().__init__()
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self.causal, self.max_len = causal, max_len

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        max_len = self.max_len if self.causal else q.shape[1]
        if self.causal and int(positions.max()) >= max_len:
            raise ValueError(f"cosFormer: position {int(positions.max())} reaches max_len={max_len}; raise max_len")
        return [(cosformer_feature_map(q, positions, max_len), cosformer_feature_map(k, positions, max_len))]


class HedgehogFeatureMap(FeatureMap):
    """Hedgehog: learnable per-head projection (identity at init), then ``[softmax(z), softmax(-z)]``.

    Queries and keys have separate projections, as in the original.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        eye = torch.eye(head_dim).expand(num_heads, head_dim, head_dim)
        self.query_weight = nn.Parameter(eye.clone())
        self.key_weight = nn.Parameter(eye.clone())

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> Streams:
        return [(hedgehog_feature_map(q, self.query_weight), hedgehog_feature_map(k, self.key_weight))]
