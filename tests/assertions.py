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


def dtype_tolerance(dtype: torch.dtype, factor: float = 64.0) -> float:
    """A tolerance of ``factor`` units of rounding of ``dtype`` (its machine epsilon): what separates results of the
    same computation through kernels of different shapes (BLAS blocking, chunk boundaries), which differ by CPU."""
    return factor * torch.finfo(dtype).eps


def assert_equal_up_to_rounding(name: str, ref: torch.Tensor, out: torch.Tensor, factor: float = 64.0) -> None:
    """Equal within :func:`dtype_tolerance` of the reference's dtype, relative and absolute (for bit equality, where
    the same kernels run on the same shapes, use ``torch.equal``)."""
    tolerance = dtype_tolerance(ref.dtype, factor)
    torch.testing.assert_close(out, ref, rtol=tolerance, atol=tolerance, msg=lambda text: f"{name}: {text}")


def assert_greedy_tokens_match(model, expected: torch.Tensor, actual: torch.Tensor, factor: float = 64.0) -> None:
    """Two greedy continuations ``[B, T]`` (prompt included) computed along different paths agree token for token,
    or part where the two best next-token logits of the shared prefix are within rounding of each other (a tie that
    rounding may break either way, so any continuation after it is right)."""
    assert expected.shape == actual.shape, f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    for row in range(expected.shape[0]):
        differ = (expected[row] != actual[row]).nonzero()
        if differ.numel() == 0:
            continue
        first = int(differ[0])
        with torch.no_grad():
            logits = model(expected[row : row + 1, :first]).logits[0, -1]
        top2 = logits.double().topk(2).values
        margin, scale = float(top2[0] - top2[1]), float(top2[0].abs()) + 1.0
        assert margin <= dtype_tolerance(logits.dtype, factor) * scale, (
            f"row {row}: tokens differ at position {first} ({int(expected[row, first])} vs "
            f"{int(actual[row, first])}) although the best logit leads by {margin:.3e}"
        )
