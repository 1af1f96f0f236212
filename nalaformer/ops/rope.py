"""Rotary position embeddings with interleaved pairs, as tables ``(cos, sin)`` of shape ``[T, D]``.

Pair ``(x[2i], x[2i+1])`` is rotated by angle ``a_i``: ``cos[t, 2i] = cos[t, 2i+1] = cos(a_i(t))``. NaLa applies the
rotation to its non-negative features in the numerator only (the released code); :func:`apply_rope` rotates every
``D``-sized block of a ``[..., r*D]`` tensor with the same table, so the two halves of NaLa's ``2D`` features are
rotated independently.
"""

from __future__ import annotations

import torch

from nalaformer.ops.validation import check_float_tensor


def _interleave(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles ``[..., D/2]`` -> ``(cos, sin)`` each ``[..., D]`` with every angle repeated for its pair."""
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def rope_angles_1d(
    positions: int | torch.Tensor, dim: int, base: float = 10000.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D RoPE tables with the usual frequencies ``base^(-2i/D)``.

    Args:
        positions (int | torch.Tensor): a length ``T`` (positions ``0..T-1``) or integer positions ``[T]`` / ``[B, T]``
            (e.g. offsets during decoding, or per-row positions with left padding).
        dim (int): head dimension ``D`` (even).
        base (float): frequency base. Default: 10000.0.
        device: device of the tables when ``positions`` is an int. Default: None (CPU).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: fp32 ``(cos, sin)``, each ``[T, D]`` (or ``[B, T, D]``).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"dim must be a positive even number for 1-D RoPE, got {dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions, device=device)
    freqs = base ** (-torch.arange(0, dim // 2, device=positions.device, dtype=torch.float32) / (dim // 2))
    return _interleave(positions.float().unsqueeze(-1) * freqs)


def rope_angles_2d(
    height: int, width: int, dim: int, base: float = 10000.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D axial RoPE tables for an ``H x W`` grid flattened row-major, as in the released NaLaFormer code.

    The first ``D/2`` channels rotate with the row index and the last ``D/2`` with the column index; the ``D/4``
    frequencies are ``1 / base^linspace(0, 1, D/4)``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: fp32 ``(cos, sin)``, each ``[H * W, D]``.
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"dim must be a positive multiple of 4 for 2-D RoPE, got {dim}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {(height, width)}")
    freqs = 1.0 / base ** torch.linspace(0, 1, dim // 4, device=device)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    row_angles = (rows[:, None] * freqs).unsqueeze(1).expand(height, width, dim // 4)
    col_angles = (cols[:, None] * freqs).unsqueeze(0).expand(height, width, dim // 4)
    angles = torch.cat([row_angles, col_angles], dim=-1).reshape(height * width, dim // 2)
    return _interleave(angles)


def check_rope(rope: object, batch: int, seq_len: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``rope=(cos, sin)`` tables: each ``[T, D]`` or ``[B, T, D]``."""
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        raise TypeError(f"rope must be a (cos, sin) pair of tensors, got {type(rope).__name__}")
    cos, sin = rope
    for name, table in (("rope cos", cos), ("rope sin", sin)):
        check_float_tensor(name, table)
        if tuple(table.shape) not in ((seq_len, dim), (batch, seq_len, dim)):
            raise ValueError(
                f"{name} must have shape [T, D] = {(seq_len, dim)} or [B, T, D] = {(batch, seq_len, dim)}, "
                f"got {tuple(table.shape)}"
            )
    if cos.shape != sin.shape:
        raise ValueError(f"rope cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x [B, T, H, r*D]`` with tables ``[T, D]`` or ``[B, T, D]``.

    Each ``D``-sized block of the last dimension is rotated with the same table (``r = 2`` for NaLa features).
    Computed in the dtype of ``x`` promoted with the tables (fp32 tables give fp32 results).
    """
    dim = cos.shape[-1]
    if x.shape[-1] % dim:
        raise ValueError(f"the last dimension of x ({x.shape[-1]}) must be a multiple of the RoPE dim ({dim})")
    blocks = x.shape[-1] // dim
    # tables -> [(B,) T, 1, 1, D] against x viewed as [B, T, H, blocks, D]
    cos = cos.unsqueeze(-2).unsqueeze(-2)
    sin = sin.unsqueeze(-2).unsqueeze(-2)
    xb = x.unflatten(-1, (blocks, dim))
    pairs = xb.unflatten(-1, (dim // 2, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (xb * cos + rotated * sin).flatten(-2)
