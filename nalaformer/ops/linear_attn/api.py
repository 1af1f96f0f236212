"""One entry point for every form of normalised linear attention over precomputed features."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from nalaformer.ops.linear_attn.chunk import chunk_core
from nalaformer.ops.linear_attn.naive import final_state, naive_core
from nalaformer.ops.linear_attn.parallel import parallel_core
from nalaformer.ops.linear_attn.recurrent import recurrent_core
from nalaformer.ops.linear_attn.state import LinearAttentionState
from nalaformer.ops.validation import (
    check_attention_mask,
    check_choice,
    check_chunk_size,
    check_cu_seqlens,
    check_qkv,
    check_same_shape,
    upcast,
)

CAUSAL_MODES = ("auto", "naive", "chunk", "recurrent")
NONCAUSAL_MODES = ("auto", "naive", "parallel")

Output = torch.Tensor | tuple[torch.Tensor, LinearAttentionState]


def fp32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast so features, states and denominators stay in fp32 (nothing to do when it is off)."""
    try:
        if not torch.is_autocast_enabled(device.type):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def linear_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    phi_q_num: torch.Tensor | None = None,
    phi_k_num: torch.Tensor | None = None,
    eps: float = 1e-6,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: LinearAttentionState | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> Output:
    """Normalised linear attention ``o_t = phi_q_num_t · S_t / (phi_q_t · z_t + eps * n_t)``.

    ``S_t = Σ_s phi_k_num_s v_sᵀ``, ``z_t = Σ_s phi_k_s`` and ``n_t`` the number of keys, over all valid keys
    (non-causal) or over ``s <= t`` plus the carried state (causal). This is the mean form of the released NaLaFormer
    code, ``(phi_q · S/n) / (phi_q · z/n + eps)``, for the non-causal case, and the running mean for the causal one.

    Args:
        phi_q (torch.Tensor): query features ``[B, T, H, F]`` (non-negative for a proper distribution).
        phi_k (torch.Tensor): key features ``[B, T, H, F]``.
        v (torch.Tensor): values ``[B, T, H, Dv]``; the output has its dtype.
        causal (bool): attend to ``s <= t`` only. Default: False.
        phi_q_num (torch.Tensor, optional): numerator query features ``[B, T, H, F]`` (e.g. RoPE-rotated);
            the denominator keeps ``phi_q``. Default: None (``phi_q``).
        phi_k_num (torch.Tensor, optional): numerator key features ``[B, T, H, F]``. Default: None (``phi_k``).
        eps (float): added to the *mean* denominator (scaled by ``n_t`` in the sum form). Default: 1e-6.
        attention_mask (torch.Tensor, optional): ``[B, T]`` bool or 0/1, 1 = real token. Padded tokens never enter
            the sums, the count or the state; their outputs are 0. Default: None.
        cu_seqlens (torch.Tensor, optional): ``[N + 1]`` int cumulative lengths of ``N`` sequences packed along
            ``T`` (requires ``B == 1``); each sequence attends only within itself. Default: None.
        initial_state (LinearAttentionState, optional): causal only; ``B`` (or ``N`` with ``cu_seqlens``) rows.
        output_final_state (bool): causal only; also return the state after the last token. Default: False.
        mode (str): causal ``"auto" | "chunk" | "recurrent" | "naive"``; non-causal ``"auto" | "parallel" |
            "naive"``. ``"auto"`` picks ``"recurrent"`` for ``T == 1`` and ``"chunk"`` otherwise (causal), and
            ``"parallel"`` (non-causal). ``"naive"`` writes out the ``T x T`` weights (reference only).
        chunk_size (int): chunk length of the causal chunked form. Default: 64.

    Returns:
        ``o [B, T, H, Dv]`` in ``v``'s dtype, or ``(o, final_state)`` when ``output_final_state=True``.
        Features, sums and denominators are computed in fp32 with autocast disabled.
    """
    check_qkv(phi_q, phi_k, v, names=("phi_q", "phi_k", "v"))
    check_same_shape("phi_q_num", phi_q_num, "phi_q", phi_q)
    check_same_shape("phi_k_num", phi_k_num, "phi_k", phi_k)
    check_choice("mode", mode, CAUSAL_MODES if causal else NONCAUSAL_MODES)
    check_chunk_size(chunk_size)
    if not (eps >= 0.0 and eps != float("inf")):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not causal and (initial_state is not None or output_final_state):
        raise ValueError("initial_state and output_final_state need causal=True (non-causal attention has no state)")
    batch, seq_len = phi_q.shape[:2]
    mask = check_attention_mask(attention_mask, batch, seq_len)
    cu_seqlens = check_cu_seqlens(cu_seqlens, batch, seq_len)
    if cu_seqlens is not None and mask is not None:
        raise ValueError("pass either attention_mask or cu_seqlens, not both")

    form = _Form(causal, eps, mode, chunk_size, output_final_state)
    with fp32_region(phi_q.device):
        if cu_seqlens is not None:
            o, state = _run_packed(phi_q, phi_k, phi_q_num, phi_k_num, v, cu_seqlens, initial_state, form)
        else:
            o, state = _run(phi_q, phi_k, phi_q_num, phi_k_num, v, mask, initial_state, form)
    o = o.to(v.dtype)
    return (o, state) if output_final_state else o


@dataclass(frozen=True)
class _Form:
    """Which form runs and what it returns: the ``linear_attention`` arguments every internal step passes on."""

    causal: bool
    eps: float
    mode: str
    chunk_size: int
    want_state: bool


def _run(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    phi_q_num: torch.Tensor | None,
    phi_k_num: torch.Tensor | None,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    state: LinearAttentionState | None,
    form: _Form,
) -> tuple[torch.Tensor, LinearAttentionState | None]:
    batch, seq_len, heads, features = phi_q.shape
    q, k, qn, kn, values = _head_major((phi_q, phi_k, phi_q_num, phi_k_num, v), mask)
    valid = torch.ones(batch, seq_len, device=q.device, dtype=q.dtype) if mask is None else mask.to(q.dtype)
    if state is not None:
        if not isinstance(state, LinearAttentionState):
            raise TypeError(f"initial_state must be a LinearAttentionState, got {type(state).__name__}")
        state.validate(batch, heads, features, v.shape[-1])
        state = state.to(q.dtype)

    if form.causal and 0 in (batch, heads, features, v.shape[-1]):
        # nothing to attend over: an empty output, and the state (of no size, or unchanged but for the count)
        start = state or LinearAttentionState.zeros(batch, heads, features, v.shape[-1], q.device, q.dtype)
        o = q.new_zeros(batch, seq_len, heads, v.shape[-1])
        return o, LinearAttentionState(start.kv, start.k_sum, start.count + valid.sum(dim=1))
    if form.causal and form.mode == "auto":
        form = replace(form, mode="recurrent" if seq_len == 1 else "chunk")
    o, final = _core(q, k, qn, kn, values, valid, state, form)
    o = o.transpose(1, 2)
    if mask is not None:
        o = torch.where(mask[:, :, None, None], o, torch.zeros((), device=o.device))
    # (the containment branches on tensor values, so torch.compile / torch.export graphs go without it)
    if form.causal and form.mode != "recurrent" and not torch.compiler.is_compiling() and not bool(o.isfinite().all()):
        # a NaN or infinity at token t reaches earlier positions through the chunked and quadratic forms' matmuls
        # (0 * NaN = NaN); recompute the outputs before t without it, so that a bad token never changes them
        bad = first_nonfinite(k, kn, values)
        if bad:
            before = (None if x is None else x[:, :bad] for x in (phi_q, phi_k, phi_q_num, phi_k_num, v, mask))
            start, _ = _run(*before, state, replace(form, want_state=False))
            o = torch.cat([start, o[:, bad:]], dim=1)
    return o, final


def _head_major(inputs: tuple[torch.Tensor | None, ...], mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``inputs = (phi_q, phi_k, phi_q_num, phi_k_num, v)`` in fp32 and ``[B, H, T, X]``, padded keys and values
    zeroed; a missing numerator feature is the denominator's."""
    phi_q, phi_k, phi_q_num, phi_k_num, v = inputs

    def prepare(x: torch.Tensor, is_key: bool) -> torch.Tensor:
        x = upcast(x)
        if is_key and mask is not None:
            x = torch.where(mask[:, :, None, None], x, torch.zeros((), device=x.device))
        return x.transpose(1, 2)

    q = prepare(phi_q, False)
    k = prepare(phi_k, True)
    qn = q if phi_q_num is None else prepare(phi_q_num, False)
    kn = k if phi_k_num is None else prepare(phi_k_num, True)
    return q, k, qn, kn, prepare(v, True)


def _core(
    q: torch.Tensor,
    k: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor,
    state: LinearAttentionState | None,
    form: _Form,
) -> tuple[torch.Tensor, LinearAttentionState | None]:
    """Run the form ``form.mode`` names (``"auto"`` already resolved for causal) on head-major tensors:
    ``o [B, H, T, Dv]`` and, for causal forms, the final state (the chunked and naive forms build it only when
    ``form.want_state``)."""
    eps = form.eps
    if not form.causal:
        if form.mode == "naive":
            return naive_core(q, k, qn, kn, values, valid, None, False, eps), None
        return parallel_core(q, k, qn, kn, values, valid, eps), None
    if form.mode == "recurrent":
        start = state or LinearAttentionState.zeros(*q.shape[:2], q.shape[-1], values.shape[-1], q.device, q.dtype)
        return recurrent_core(q, k, qn, kn, values, valid, start, eps)
    if form.mode == "chunk":
        o, kv_total, k_sum_total = chunk_core(q, k, qn, kn, values, valid, state, eps, form.chunk_size)
        final = LinearAttentionState(kv_total, k_sum_total, valid.sum(dim=1)).plus(state) if form.want_state else None
        return o, final
    o = naive_core(q, k, qn, kn, values, valid, state, True, eps)
    return o, final_state(k, kn, values, valid, state) if form.want_state else None


def first_nonfinite(*tensors: torch.Tensor) -> int | None:
    """The first position (dim 2 of head-major ``[B, H, T, X]`` tensors) holding a NaN or an infinity, or None."""
    bad = torch.zeros(tensors[0].shape[2], dtype=torch.bool, device=tensors[0].device)
    for x in tensors:
        bad |= (~x.isfinite()).any(dim=-1).flatten(0, 1).any(dim=0)
    positions = bad.nonzero()
    return int(positions[0]) if positions.numel() else None


@dataclass(frozen=True)
class Packing:
    """Where each token of a packed ``[1, total, ...]`` batch goes in the right-padded ``[N, max_len, ...]`` one."""

    seq_id: torch.Tensor
    position: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def of(cls, cu_seqlens: torch.Tensor, device: torch.device) -> Packing:
        cu_seqlens = cu_seqlens.to(device=device, dtype=torch.long)
        lengths = cu_seqlens.diff()
        num_seqs, max_len = lengths.numel(), int(lengths.max())
        seq_id = torch.repeat_interleave(torch.arange(num_seqs, device=device), lengths)
        position = torch.arange(int(cu_seqlens[-1]), device=device) - cu_seqlens[seq_id]
        mask = torch.zeros(num_seqs, max_len, dtype=torch.bool, device=device)
        mask[seq_id, position] = True
        return cls(seq_id, position, mask)

    def unpack(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """``[1, total, ...]`` -> ``[N, max_len, ...]`` (zeros in the padding)."""
        if x is None:
            return None
        padded = x.new_zeros(*self.mask.shape, *x.shape[2:])
        return padded.index_put((self.seq_id, self.position), x[0])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, max_len, ...]`` -> ``[1, total, ...]``."""
        return x[self.seq_id, self.position].unsqueeze(0)


def _run_packed(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    phi_q_num: torch.Tensor | None,
    phi_k_num: torch.Tensor | None,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    state: LinearAttentionState | None,
    form: _Form,
) -> tuple[torch.Tensor, LinearAttentionState | None]:
    """Unpack ``[1, total, ...]`` into a right-padded ``[N, max_len, ...]`` batch, run it masked, pack it back."""
    packing = Packing.of(cu_seqlens, phi_q.device)
    tensors = (phi_q, phi_k, phi_q_num, phi_k_num, v)
    o, final = _run(*(packing.unpack(x) for x in tensors), packing.mask, state, form)
    return packing.pack(o), final
