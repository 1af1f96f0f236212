"""Numerical comparison helpers shared by the test suite."""

from __future__ import annotations

import torch


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (the RMS ratio flash-linear-attention's tests use)."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float = 2e-4, atol: float = 1e-5) -> None:
    """Pass if the max abs error is <= ``atol`` or the relative RMS error is < ``ratio``; never with NaNs."""
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(ref).all(), f"{name}: reference has non-finite values"
    assert torch.isfinite(out).all(), f"{name}: output has non-finite values"
    max_abs = float((out.detach().double() - ref.detach().double()).abs().max()) if ref.numel() else 0.0
    if max_abs <= atol:
        return
    err = relative_error(ref, out)
    assert err < ratio, f"{name}: relative error {err:.3e} >= {ratio:.1e} (max abs diff {max_abs:.3e})"
