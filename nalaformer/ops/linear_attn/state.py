"""The carried state of causal normalised linear attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LinearAttentionState:
    """Running sums of causal normalised linear attention, all fp32.

    Attributes:
        kv: ``[B, H, F, Dv]``, ``Σ_s phi_k_num(k_s) v_sᵀ`` (numerator features, RoPE-rotated when RoPE is used).
        k_sum: ``[B, H, F]``, ``Σ_s phi_k(k_s)`` (denominator features).
        count: ``[B]``, the number of real (unpadded) keys summed; the mean-form ``eps`` scales with it.
    """

    kv: torch.Tensor
    k_sum: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(
        cls,
        batch: int,
        heads: int,
        features: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> LinearAttentionState:
        """An empty state (no keys seen)."""
        return cls(
            kv=torch.zeros(batch, heads, features, value_dim, device=device, dtype=dtype),
            k_sum=torch.zeros(batch, heads, features, device=device, dtype=dtype),
            count=torch.zeros(batch, device=device, dtype=dtype),
        )

    def validate(self, batch: int, heads: int, features: int, value_dim: int) -> None:
        """Raise a ValueError naming the field whose shape disagrees with the inputs."""
        expected = {
            "kv": (batch, heads, features, value_dim),
            "k_sum": (batch, heads, features),
            "count": (batch,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"initial_state.{name} must be a torch.Tensor, got {type(value).__name__}")
            if tuple(value.shape) != shape:
                raise ValueError(f"initial_state.{name} must have shape {shape}, got {tuple(value.shape)}")
            if not value.is_floating_point():
                raise TypeError(f"initial_state.{name} must be floating point, got {value.dtype}")

    def to(self, dtype: torch.dtype) -> LinearAttentionState:
        """The state with every field cast to ``dtype``."""
        return LinearAttentionState(self.kv.to(dtype), self.k_sum.to(dtype), self.count.to(dtype))

    def plus(self, other: LinearAttentionState | None) -> LinearAttentionState:
        """The sums of both states (the keys of ``other`` followed by this state's); ``self`` when ``other`` is None."""
        if other is None:
            return self
        return LinearAttentionState(self.kv + other.kv, self.k_sum + other.k_sum, self.count + other.count)
