"""Input checks, dtype handling, padding masks and varlen packing shared by every delta-rule form.

Each form (naive, chunk, recurrent) only implements a *core* on clean inputs: equal-length sequences, no padding,
everything in the compute dtype, ``q`` already multiplied by ``scale``. ``run_delta_rule_form`` turns the public
arguments into such inputs and the core's result back into the public outputs, so the three forms cannot disagree
on masking, varlen or dtype rules.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch

from nalaformer.ops.linear_attn.api import Packing, fp32_region
from nalaformer.ops.validation import (
    check_attention_mask,
    check_choice,
    check_cu_seqlens,
    check_float_tensor,
    upcast,
)

# core(q_scaled, k, v, beta, g, state) -> (o, final_state); q, k [B, T, H, Dk], v [B, T, H, Dv], beta/g [B, T, H],
# state [B, H, Dk, Dv], all in the compute dtype; g is None for the ungated rule.
DeltaRuleCore = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]

MODES = ("auto", "naive", "chunk", "recurrent")


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is one of ``MODES``, else raise naming the value received."""
    check_choice("mode", mode, MODES)
    return mode


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
    q = check_float_tensor("q", q, 4, "[B, T, H, Dk]")
    k = check_float_tensor("k", k, 4, "[B, T, H, Dk]")
    v = check_float_tensor("v", v, 4, "[B, T, H, Dv]")
    beta = check_float_tensor("beta", beta, 3, "[B, T, H]")
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
        g = check_float_tensor("g", g, 3, "[B, T, H]")
        if g.shape != q.shape[:3]:
            raise ValueError(f"g must have shape [B, T, H] = {tuple(q.shape[:3])}, got {tuple(g.shape)}")
        tensors["g"] = g
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, Real)):
        raise TypeError(f"scale must be a real number or None (= Dk ** -0.5), got {type(scale).__name__}")
    if initial_state is not None:
        batch = q.shape[0] if num_states is None else num_states
        expected = (batch, q.shape[2], q.shape[3], v.shape[3])
        initial_state = check_float_tensor("initial_state", initial_state, 4, "[B, H, Dk, Dv]")
        if tuple(initial_state.shape) != expected:
            shape = tuple(initial_state.shape)
            raise ValueError(f"initial_state must have shape [B, H, Dk, Dv] = {expected}, got {shape}")
        tensors["initial_state"] = initial_state
    for name, x in tensors.items():
        if x.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}), got {x.device}")


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
    mask = check_attention_mask(attention_mask, batch, length)
    cu_seqlens = check_cu_seqlens(cu_seqlens, batch, length)
    out_dtype = q.dtype
    scale = key_dim**-0.5 if scale is None else float(scale)

    # fp32 (fp64 for fp64 inputs, so that gradcheck stays exact) with autocast off: the state recursion must not be
    # silently run in half precision.
    with fp32_region(q.device):
        q, k, v, beta = (upcast(x) for x in (q, k, v, beta))
        g = None if g is None else g.to(q.dtype)
        beta = beta.to(q.dtype)
        q = q * scale
        packing = None
        if cu_seqlens is not None:
            # Varlen: unpack to a right-padded batch [N, L_max] and let the padding mask do the rest.
            packing = Packing.of(cu_seqlens, q.device)
            q, k, v, beta, g = (packing.unpack(x) for x in (q, k, v, beta, g))
            mask = packing.mask
        if mask is not None:
            # A padded token writes nothing (beta = 0, k = v = 0) and does not decay the state (g = 0).
            token = mask[..., None]
            beta = torch.where(token, beta, 0.0)
            g = None if g is None else torch.where(token, g, 0.0)
            k = torch.where(token[..., None], k, 0.0)
            v = torch.where(token[..., None], v, 0.0)
        if initial_state is None:
            state = q.new_zeros(q.shape[0], heads, key_dim, value_dim)
        else:
            state = initial_state.to(q.dtype)
        o, final_state = core(q, k, v, beta, g, state)
        if mask is not None:
            o = torch.where(mask[..., None, None], o, 0.0)
        if packing is not None:
            o = packing.pack(o)
    o = o.to(out_dtype)
    return (o, final_state) if output_final_state else o
