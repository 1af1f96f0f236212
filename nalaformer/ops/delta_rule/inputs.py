"""Input checks, dtype handling, padding masks and varlen packing shared by every delta-rule form.

Each form (naive, chunk, recurrent) only implements a *core* on clean inputs: equal-length sequences, no padding,
everything in the compute dtype, ``q`` already multiplied by ``scale``. ``run_delta_rule_form`` turns the public
arguments into such inputs and the core's result back into the public outputs, so the three forms cannot disagree
on masking, varlen or dtype rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from numbers import Real

import torch

# core(q_scaled, k, v, beta, g, state) -> (o, final_state); q, k [B, T, H, Dk], v [B, T, H, Dv], beta/g [B, T, H],
# state [B, H, Dk, Dv], all in the compute dtype; g is None for the ungated rule.
DeltaRuleCore = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]

MODES = ("auto", "naive", "chunk", "recurrent")


def _check_float_tensor(name: str, x: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim} {layout}, got shape {tuple(x.shape)}")
    return x


def check_chunk_size(chunk_size: object) -> int:
    """Return ``chunk_size`` if it is a positive int, else raise naming the value received."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is one of ``MODES``, else raise naming the value received."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def check_cu_seqlens(cu_seqlens: object, batch: int, length: int) -> torch.Tensor:
    """Check FlashAttention-style cumulative lengths ``[N + 1]`` for a packed ``[1, length, ...]`` batch."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor of integers [N + 1], got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype == torch.bool or cu_seqlens.is_floating_point() or cu_seqlens.is_complex():
        raise TypeError(f"cu_seqlens must have an integer dtype, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries [N + 1], got shape {tuple(cu_seqlens.shape)}")
    if batch != 1:
        raise ValueError(f"cu_seqlens needs the sequences packed into batch size 1, got batch size {batch}")
    values = cu_seqlens.tolist()
    if values[0] != 0 or values[-1] != length or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"cu_seqlens must start at 0, increase strictly and end at the packed length {length}, got {values}"
        )
    return cu_seqlens


def check_attention_mask(attention_mask: object, batch: int, length: int) -> torch.Tensor:
    """Return ``attention_mask [B, T]`` as a bool tensor (True = real token); values must be 0/1."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor [B, T], got {type(attention_mask).__name__}")
    if attention_mask.is_complex():
        raise TypeError(f"attention_mask must be bool, integer or float 0/1, got {attention_mask.dtype}")
    if tuple(attention_mask.shape) != (batch, length):
        shape = tuple(attention_mask.shape)
        raise ValueError(f"attention_mask must have shape [B, T] = {(batch, length)}, got {shape}")
    if attention_mask.dtype != torch.bool:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1 (1 = real token), got other values")
        attention_mask = attention_mask != 0
    return attention_mask


def check_inputs(
    q: object,
    k: object,
    v: object,
    beta: object,
    g: object,
    scale: object,
    initial_state: object,
    num_states: int | None,
) -> None:
    """Check ranks, shapes, dtypes and devices of the delta-rule inputs (see ``delta_rule`` for the contract)."""
    q = _check_float_tensor("q", q, 4, "[B, T, H, Dk]")
    k = _check_float_tensor("k", k, 4, "[B, T, H, Dk]")
    v = _check_float_tensor("v", v, 4, "[B, T, H, Dv]")
    beta = _check_float_tensor("beta", beta, 3, "[B, T, H]")
    if q.shape[1] == 0:
        raise ValueError(f"q must hold at least one token (T >= 1), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)} [B, T, H, Dk], got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have [B, T, H] = {tuple(q.shape[:3])} like q, got shape {tuple(v.shape)}")
    if beta.shape != q.shape[:3]:
        raise ValueError(f"beta must have shape [B, T, H] = {tuple(q.shape[:3])}, got {tuple(beta.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    tensors = {"k": k, "v": v, "beta": beta}
    if g is not None:
        g = _check_float_tensor("g", g, 3, "[B, T, H]")
        if g.shape != q.shape[:3]:
            raise ValueError(f"g must have shape [B, T, H] = {tuple(q.shape[:3])}, got {tuple(g.shape)}")
        tensors["g"] = g
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, Real)):
        raise TypeError(f"scale must be a real number or None (= Dk ** -0.5), got {type(scale).__name__}")
    if initial_state is not None:
        batch = q.shape[0] if num_states is None else num_states
        expected = (batch, q.shape[2], q.shape[3], v.shape[3])
        initial_state = _check_float_tensor("initial_state", initial_state, 4, "[B, H, Dk, Dv]")
        if tuple(initial_state.shape) != expected:
            shape = tuple(initial_state.shape)
            raise ValueError(f"initial_state must have shape [B, H, Dk, Dv] = {expected}, got {shape}")
        tensors["initial_state"] = initial_state
    for name, x in tensors.items():
        if x.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}), got {x.device}")


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half / bfloat16 / fp32 inputs, fp64 for fp64 inputs (so float64 gradcheck stays exact)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def run_delta_rule_form(
    core: DeltaRuleCore,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    attention_mask: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Validate, cast, apply padding / varlen, run ``core`` and return ``o`` or ``(o, final_state)``."""
    num_states = None if cu_seqlens is None or not isinstance(cu_seqlens, torch.Tensor) else cu_seqlens.numel() - 1
    check_inputs(q, k, v, beta, g, scale, initial_state, num_states)
    batch, length, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    if cu_seqlens is not None and attention_mask is not None:
        raise ValueError("pass either attention_mask or cu_seqlens, not both")
    mask = None if attention_mask is None else check_attention_mask(attention_mask, batch, length)
    if cu_seqlens is not None:
        cu_seqlens = check_cu_seqlens(cu_seqlens, batch, length)
    out_dtype = q.dtype
    dtype = compute_dtype_for(q.dtype)
    scale = key_dim**-0.5 if scale is None else float(scale)

    # Autocast off: the state recursion must not be silently run in half precision.
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
        g = None if g is None else g.to(dtype)
        q = q * scale
        if cu_seqlens is not None:
            # Varlen: unpack to a right-padded batch [N, L_max] and let the padding mask do the rest.
            lengths = cu_seqlens.diff()
            positions = torch.arange(int(lengths.max()), device=q.device)
            mask = positions[None, :] < lengths[:, None].to(q.device)
            index = (cu_seqlens[:-1, None].to(q.device) + positions[None, :]).clamp(max=length - 1)
            # [1, total, ...] -> [N, L_max, ...]; entries past a sequence's end are copies, masked just below.
            q, k, v, beta = (x[0][index] for x in (q, k, v, beta))
            g = None if g is None else g[0][index]
        if mask is not None:
            # A padded token writes nothing (beta = 0, k = v = 0) and does not decay the state (g = 0).
            token = mask[..., None]
            beta = torch.where(token, beta, 0.0)
            g = None if g is None else torch.where(token, g, 0.0)
            k = torch.where(token[..., None], k, 0.0)
            v = torch.where(token[..., None], v, 0.0)
        state_batch = q.shape[0]
        if initial_state is None:
            state = q.new_zeros(state_batch, heads, key_dim, value_dim)
        else:
            state = initial_state.to(dtype)
        o, final_state = core(q, k, v, beta, g, state)
        if mask is not None:
            o = torch.where(mask[..., None, None], o, 0.0)
        if cu_seqlens is not None:
            o = o[mask].unsqueeze(0)
    o = o.to(out_dtype)
    return (o, final_state) if output_final_state else o
