"""Norm-aware linear attention: NaLa feature maps + the right attention form, in one call."""

from __future__ import annotations

import torch

from nalaformer.ops.feature_maps import (
    INHIBIT_MODES,
    NALA_ALPHA,
    NALA_EPS,
    NALA_INHIBIT,
    NALA_LAM,
    NALA_TAU,
    NALA_TEMPERATURE,
    check_key_range,
    check_nala_options,
    nala_key_map,
    nala_query_map,
)
from nalaformer.ops.linear_attn import LinearAttentionState, linear_attention
from nalaformer.ops.linear_attn.api import CAUSAL_MODES, NONCAUSAL_MODES, Output, Packing, fp32_region
from nalaformer.ops.nala.causal import NaLaCausal, first_nonfinite_key, nala_step
from nalaformer.ops.nala.common import NaLaMap, overflowed, rotation_table
from nalaformer.ops.nala.noncausal import NaLaNonCausal
from nalaformer.ops.rope import apply_rope, check_rope
from nalaformer.ops.validation import (
    check_attention_mask,
    check_choice,
    check_chunk_size,
    check_cu_seqlens,
    check_qkv,
    upcast,
)


def nala_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    lam: float = NALA_LAM,
    tau: float = NALA_TAU,
    temperature: float = NALA_TEMPERATURE,
    inhibit: str = NALA_INHIBIT,
    alpha: float = NALA_ALPHA,
    power: float | None = None,
    eps: float = NALA_EPS,
    feature_eps: float | None = None,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: LinearAttentionState | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> Output:
    """Norm-aware linear attention (NaLa).

    ``phi_q = nala_query_map(q)``, ``phi_k = nala_key_map(k)`` (``[..., 2D]``), then normalised linear attention
    (see :func:`nalaformer.ops.linear_attention`). With ``rope``, each ``D``-sized half of the features is rotated in
    the numerator only and the denominator uses the un-rotated features, as in the released code.

    Args:
        q (torch.Tensor): queries ``[B, T, H, D]``.
        k (torch.Tensor): keys ``[B, T, H, D]``.
        v (torch.Tensor): values ``[B, T, H, Dv]``; the output has its dtype.
        causal (bool): causal attention (running mean over ``s <= t``). Default: False.
        rope (tuple, optional): ``(cos, sin)`` tables, each ``[T, D]`` or ``[B, T, D]`` (interleaved pairs; see
            :mod:`nalaformer.ops.rope`). Default: None.
        lam, tau, temperature, inhibit, alpha, power: feature-map options (:func:`nala_query_map`,
            :func:`nala_key_map`). Defaults: 3.0, 0.5, 1.0, "sign", 20.0, None (released code).
        eps (float): added to the mean denominator. Default: 1e-6.
        feature_eps (float, optional): the feature maps' ``eps`` (floor of ``||q||``, and of ``||k||`` in the cosine
            angle map). Default: None (``eps``).
        attention_mask, cu_seqlens, initial_state, output_final_state, chunk_size: as in
            :func:`nalaformer.ops.linear_attention`.
        mode (str): ``"auto"`` (and ``"chunk"`` / ``"parallel"``, the forms it runs) take the fast path below;
            ``"naive"`` and ``"recurrent"`` compute the features and run that form of
            :func:`~nalaformer.ops.linear_attention` (references). Default: "auto".

    Returns:
        ``o [B, T, H, Dv]``, or ``(o, final_state)`` when ``output_final_state=True``.

    The fast path computes features, RoPE and attention a block of tokens at a time from ``q, k, v``
    (:mod:`~nalaformer.ops.nala.noncausal`, :mod:`~nalaformer.ops.nala.causal`; a single decoding token with a
    carried state takes :func:`~nalaformer.ops.nala.causal.nala_step`), never holding the features of the whole
    sequence; every option above is covered. Math in fp32 (fp64 for fp64 inputs) with autocast off.
    """
    check_qkv(q, k, v)
    check_chunk_size(chunk_size)
    check_choice("mode", mode, CAUSAL_MODES if causal else NONCAUSAL_MODES)
    check_choice("inhibit", inhibit, INHIBIT_MODES)
    check_nala_options(lam, tau, temperature, power, alpha, eps)
    if feature_eps is not None:
        check_nala_options(eps=feature_eps)
    if not causal and (initial_state is not None or output_final_state):
        raise ValueError("initial_state and output_final_state need causal=True (non-causal attention has no state)")
    feature_eps = eps if feature_eps is None else feature_eps
    options = dict(lam=lam, tau=tau, temperature=temperature, inhibit=inhibit, alpha=alpha, power=power)
    if mode in ("naive", "recurrent"):
        return reference_nala_attention(
            q,
            k,
            v,
            causal=causal,
            rope=rope,
            attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
            initial_state=initial_state,
            output_final_state=output_final_state,
            mode=mode,
            chunk_size=chunk_size,
            eps=eps,
            feature_eps=feature_eps,
            **options,
        )
    batch, seq_len, heads, dim = q.shape
    mask = check_attention_mask(attention_mask, batch, seq_len)
    cu_seqlens = check_cu_seqlens(cu_seqlens, batch, seq_len)
    if cu_seqlens is not None and mask is not None:
        raise ValueError("pass either attention_mask or cu_seqlens, not both")
    if rope is not None:
        rope = check_rope(rope, batch, seq_len, dim)
    query = NaLaMap(True, lam, tau, temperature, inhibit, alpha, power, feature_eps)
    key = NaLaMap(False, lam, tau, temperature, inhibit, alpha, power, feature_eps)
    with fp32_region(q.device):
        q, k, values = upcast(q), upcast(k), upcast(v)
        table = None if rope is None else rotation_table(rope, q.dtype, key.width(dim) // dim)
        if cu_seqlens is not None:
            packing = Packing.of(cu_seqlens, q.device)
            q, k, values, table = (packing.unpack(x) for x in (q, k, values, table))
            mask = packing.mask
        if 0 in (q.shape[0], heads, dim, v.shape[-1]):
            o, state = _empty(q, values, key, initial_state, mask)
        elif causal:
            o, state = _causal(q, k, values, table, mask, initial_state, query, key, eps, chunk_size)
        else:
            o, state = NaLaNonCausal.apply(q, k, values, table, mask, query, key, eps), None
        if cu_seqlens is not None:
            o = packing.pack(o)
    o = o.to(v.dtype)
    return (o, state) if output_final_state else o


def _causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor | None,
    valid: torch.Tensor | None,
    state: LinearAttentionState | None,
    query: NaLaMap,
    key: NaLaMap,
    eps: float,
    chunk_size: int,
) -> tuple[torch.Tensor, LinearAttentionState]:
    batch, seq_len, heads, dim = q.shape
    kv0 = z0 = count0 = None
    if state is not None:
        if not isinstance(state, LinearAttentionState):
            raise TypeError(f"initial_state must be a LinearAttentionState, got {type(state).__name__}")
        state.validate(batch, heads, key.width(dim), v.shape[-1])
        kv0, z0, count0 = state.kv.to(q.dtype), state.k_sum.to(q.dtype), state.count.to(q.dtype)
    tensors = (q, k, v) if state is None else (q, k, v, kv0, z0)
    if seq_len == 1 and not (torch.is_grad_enabled() and any(x.requires_grad for x in tensors)):
        o, kv, k_sum, count = nala_step(q, k, v, kv0, z0, count0, table, valid, query, key, eps)
        if overflowed(k_sum, nonnegative=True):  # the key features are >= 0
            check_key_range(k, key.lam, q.dtype)
        return o, LinearAttentionState(kv, k_sum, count)
    o, kv, k_sum = NaLaCausal.apply(q, k, v, kv0, z0, count0, table, valid, query, key, eps, chunk_size)
    # the containment below branches on tensor values: torch.compile / torch.export graphs go without it
    if overflowed(kv) or overflowed(k_sum):
        # keys so large that their features' sums overflow: every output would be NaN, say so instead
        check_key_range(k, key.lam, q.dtype)
        # a NaN or infinity at token t reaches every chunk through the chunked form's matmuls (0 * NaN = NaN);
        # recompute the outputs before t without it, so that a bad token never changes earlier outputs
        bad = first_nonfinite_key(k, v, key, table, valid)
        if bad:
            start = NaLaCausal.apply(
                q[:, :bad],
                k[:, :bad],
                v[:, :bad],
                kv0,
                z0,
                count0,
                None if table is None else table[:, :bad],
                None if valid is None else valid[:, :bad],
                query,
                key,
                eps,
                chunk_size,
            )[0]
            o = torch.cat([start, o[:, bad:]], dim=1)
    added = valid.sum(dim=1).to(q.dtype) if valid is not None else q.new_full((batch,), float(seq_len))
    return o, LinearAttentionState(kv, k_sum, added if count0 is None else count0 + added)


def _empty(q, v, key, state, valid) -> tuple[torch.Tensor, LinearAttentionState]:
    """The result of a call with no batch rows, heads or channels: zeros (and the state, unchanged by no keys)."""
    batch, seq_len, heads, dim = q.shape
    o = v.new_zeros(batch, seq_len, heads, v.shape[-1])
    if state is None:
        state = LinearAttentionState.zeros(batch, heads, key.width(dim), v.shape[-1], q.device, q.dtype)
    added = valid.sum(dim=1).to(q.dtype) if valid is not None else q.new_full((batch,), float(seq_len))
    return o, LinearAttentionState(state.kv, state.k_sum, state.count + added)


def reference_nala_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    lam: float = NALA_LAM,
    tau: float = NALA_TAU,
    temperature: float = NALA_TEMPERATURE,
    inhibit: str = NALA_INHIBIT,
    alpha: float = NALA_ALPHA,
    power: float | None = None,
    eps: float = NALA_EPS,
    feature_eps: float | None = None,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: LinearAttentionState | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> Output:
    """:func:`nala_attention` the generic way: the feature maps, :func:`~nalaformer.ops.apply_rope` for the
    numerator, then :func:`~nalaformer.ops.linear_attention` in ``mode``. The reference the tests compare the fast
    path against (same arguments, same results)."""
    check_qkv(q, k, v)
    if rope is not None:
        rope = check_rope(rope, q.shape[0], q.shape[1], q.shape[-1])
    feature_eps = eps if feature_eps is None else feature_eps
    with fp32_region(q.device):
        phi_q = nala_query_map(
            q, lam=lam, tau=tau, temperature=temperature, eps=feature_eps, inhibit=inhibit, alpha=alpha, power=power
        )
        phi_k = nala_key_map(k, lam=lam, inhibit=inhibit, alpha=alpha, eps=feature_eps)
        phi_q_num = phi_k_num = None
        if rope is not None:
            cos, sin = rope[0].to(phi_q.dtype), rope[1].to(phi_q.dtype)
            phi_q_num = apply_rope(phi_q, cos, sin)
            phi_k_num = apply_rope(phi_k, cos, sin)
    return linear_attention(
        phi_q,
        phi_k,
        v,
        causal=causal,
        phi_q_num=phi_q_num,
        phi_k_num=phi_k_num,
        eps=eps,
        attention_mask=attention_mask,
        cu_seqlens=cu_seqlens,
        initial_state=initial_state,
        output_final_state=output_final_state,
        mode=mode,
        chunk_size=chunk_size,
    )
