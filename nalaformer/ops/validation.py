"""Input checks shared by the operators. Every error names the argument, the value received and the expectation."""

from __future__ import annotations

import itertools

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 (and float32) -> float32; float64 stays float64 so double-precision checks stay exact."""
    return x if x.dtype == torch.float64 else x.float()


def check_float_tensor(name: str, x: object, ndim: int | None = None, layout: str = "") -> torch.Tensor:
    """Require a floating-point tensor, optionally of rank ``ndim`` (``layout`` describes the expected shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (float32, bfloat16, float16, float64), got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        expected = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{expected}, got shape {tuple(x.shape)}")
    return x


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, names: tuple[str, str, str] = ("q", "k", "v")) -> None:
    """Check ``[B, T, H, D]`` query / key / value tensors that agree in B, T and H (and q, k in D)."""
    nq, nk, nv = names
    for name, x in zip(names, (q, k, v)):
        check_float_tensor(name, x, 4, "[B, T, H, D]")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{nq}, {nk}, {nv} must agree in [B, T, H]; got {nq} {tuple(q.shape)}, {nk} {tuple(k.shape)}, "
            f"{nv} {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{nq} and {nk} must have the same last dimension; got {nq} {tuple(q.shape)} and {nk} {tuple(k.shape)}"
        )
    if q.shape[1] == 0:
        raise ValueError(f"the sequence length T must be >= 1, got {nq} of shape {tuple(q.shape)}")
    # float64 stays float64 and every other float is computed in float32: the two cannot be mixed
    for name, x in ((nk, k), (nv, v)):
        if (x.dtype == torch.float64) != (q.dtype == torch.float64):
            raise TypeError(
                f"{name} has dtype {x.dtype} but {nq} has {q.dtype}: pass {nq}, {nk}, {nv} all in float64, or all in "
                "float32 / bfloat16 / float16 (computed in float32)"
            )


def check_same_shape(name: str, x: torch.Tensor | None, ref_name: str, ref: torch.Tensor) -> None:
    """Require ``x`` (if given) to have the same shape as ``ref``."""
    if x is None:
        return
    check_float_tensor(name, x)
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")


def check_attention_mask(mask: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor | None:
    """Return a boolean ``[B, T]`` mask (True = real token), or ``None``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor of shape [B, T], got {type(mask).__name__}")
    if mask.shape != (batch, seq_len):
        raise ValueError(f"attention_mask must have shape [B, T] = {(batch, seq_len)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0/1 (or booleans): 1 marks a real token, 0 padding")
        mask = mask != 0
    return mask


def check_cu_seqlens(cu_seqlens: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    """Validate FlashAttention-style cumulative sequence lengths for a packed ``[1, total, ...]`` batch."""
    if cu_seqlens is None:
        return None
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [N + 1]")
    if cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
        raise TypeError(f"cu_seqlens must have an integer dtype, got {cu_seqlens.dtype}")
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch dimension must be 1 (sequences packed along T), got B={batch}")
    if cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must hold at least 2 entries [0, ..., T], got {cu_seqlens.tolist()}")
    values = cu_seqlens.tolist()
    if values[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {values[0]} (cu_seqlens={values})")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"cu_seqlens must be strictly increasing, got {values}")
    if values[-1] != total:
        raise ValueError(f"cu_seqlens must end at the total packed length T={total}, got {values[-1]}")
    return cu_seqlens


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
