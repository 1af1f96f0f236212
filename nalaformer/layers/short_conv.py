"""Depthwise convolutions over the token axis: LePE for sequences (centred, or causal with a decoding state)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortConvolution(nn.Module):
    """Depthwise 1-D convolution over ``[B, T, C]`` tokens.

    Causal: output ``t`` sees inputs ``t-K+1 .. t``; the last ``K-1`` inputs are the decoding state, so running a
    sequence in pieces (passing the state along) equals one call. Non-causal: centred window (odd ``K``).

    Args:
        channels (int): ``C``.
        kernel_size (int): ``K``.
        causal (bool): causal window with state, or centred window. Default: True.
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool = True) -> None:
        super().__init__()
        if kernel_size <= 0 or (not causal and kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be positive (and odd when non-causal), got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal = causal
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=True)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, T, C]`` -> ``(y [B, T, C], new_state [B, C, K-1] or None)``.

        ``state`` (causal only) holds the previous ``K-1`` inputs; ``None`` means zeros (start of a sequence).
        """
        if self.causal and state is not None and x.shape[1] == 1:
            return self._step(x, state)
        x = x.transpose(1, 2)
        if not self.causal:
            y = F.conv1d(x, self.conv.weight, self.conv.bias, padding=self.kernel_size // 2, groups=x.shape[1])
            return y.transpose(1, 2), None
        history = self.kernel_size - 1
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], history)
        full = torch.cat([state.to(x.dtype), x], dim=2)
        y = F.conv1d(full, self.conv.weight, self.conv.bias, groups=x.shape[1])
        new_state = full[:, :, full.shape[2] - history :] if history else full[:, :, :0]
        return y.transpose(1, 2), new_state

    def _step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding token ``x [B, 1, C]``: a weighted sum over the ``K`` inputs of the window. Same result as the
        convolution (up to summation order) without its per-call setup, which dominates at one token."""
        full = torch.cat([state.to(x.dtype), x.transpose(1, 2)], dim=2)
        y = (full * self.conv.weight.squeeze(1)).sum(dim=-1) + self.conv.bias
        return y.unsqueeze(1).to(x.dtype), full[:, :, 1:]
