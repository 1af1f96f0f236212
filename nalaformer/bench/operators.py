"""Operator benchmarks: NaLa, the linear baselines (same attention forms, their own feature maps) and torch SDPA.

Every method takes ``q, k, v [B, T, H, D]``. Times are taken at each sequence length with every method of one mode
(non-causal or causal) interleaved in the same rounds (:mod:`nalaformer.bench.timing`), forward and
forward+backward, and reported with the ratio to SDPA measured in those rounds. Peak memory (forward+backward) comes
from :mod:`nalaformer.bench.memory`, one fresh process per configuration.

With ``compile`` the NaLa methods are also timed as ``torch.compile`` of the same call (rows ``nala+compile`` and
``nala_rope+compile``, in the same rounds as the eager rows, which stay the reference). Each compiles per mode and
length with static shapes (``dynamic=False``, dynamo's caches reset first, so every length is a fresh, specialised
compilation and no cache limit is reached): its first calls of each pass are timed apart (``compile_s``; a cold
compilation only when inductor's on-disk cache does not hold it already).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nalaformer.bench.memory import peak_memory_bytes
from nalaformer.bench.timing import COMPILED, first_calls_seconds, paired_ratio, time_interleaved
from nalaformer.layers.feature_maps import (
    CosFormerFeatureMap,
    EluFeatureMap,
    FeatureMap,
    FocusedFeatureMap,
    HedgehogFeatureMap,
    PolarityFeatureMap,
    ReluFeatureMap,
)
from nalaformer.ops import linear_attention, nala_attention, rope_angles_1d
from nalaformer.ops.feature_maps import reference_sign_split_power
from nalaformer.ops.validation import upcast

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# the linear baselines: the registry's feature-map modules over the shared attention forms
BASELINE_MAPS: dict[str, Callable[[int, int, bool], FeatureMap]] = {
    "elu": lambda heads, dim, causal: EluFeatureMap(),
    "relu": lambda heads, dim, causal: ReluFeatureMap(),
    "flatten": lambda heads, dim, causal: FocusedFeatureMap(heads, dim),
    "polaformer": lambda heads, dim, causal: PolarityFeatureMap(heads, dim),
    "cosformer": lambda heads, dim, causal: CosFormerFeatureMap(causal, max_len=1 << 20),
    "hedgehog": lambda heads, dim, causal: HedgehogFeatureMap(heads, dim),
}
METHODS = ("nala", "nala_rope", "nala_plain", *BASELINE_MAPS, "sdpa")
REFERENCE = "sdpa"
PASSES = ("fwd", "fwd+bwd")
# the methods timed also as torch.compile of the same call (rows "<method>+compile")
COMPILABLE = ("nala", "nala_rope")
# compiled calls before the timed rounds, per pass: the compilation and one call that would show a recompile
COMPILE_CALLS = 2


def plain_nala_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """NaLa written plainly with autograd (reference maps, ``einsum``, ``cumsum``): what an unfused version costs.

    Non-causal: the mean form. Causal: chunks of 64 with the per-chunk state as a ``cumsum`` and the denominator as a
    running ``cumsum`` of the key features (the straightforward chunked formula). ``[B, T, H, D]`` in, fp32 (fp64 for
    fp64 inputs) out.
    """
    phi_q = reference_sign_split_power(upcast(q), True, 3.0, 0.5, 1.0, None, 1e-6)
    phi_k = reference_sign_split_power(upcast(k), False, 3.0, 0.5, 1.0, None, 1e-6)
    v = upcast(v)
    seq_len = q.shape[1]
    if not causal:
        kv = torch.einsum("bthf,bthd->bhfd", phi_k, v) / seq_len
        den = torch.einsum("bthf,bhf->bth", phi_q, phi_k.mean(dim=1)) + 1e-6
        return torch.einsum("bthf,bhfd->bthd", phi_q, kv) / den.unsqueeze(-1)
    chunk = 64
    pad = (-seq_len) % chunk
    qh, kh, vh = (F.pad(x, (0, 0, 0, 0, 0, pad)).transpose(1, 2) for x in (phi_q, phi_k, v))
    qc, kc, vc = (x.unflatten(2, (-1, chunk)) for x in (qh, kh, vh))
    kv_chunks = kc.transpose(-1, -2) @ vc
    kv_before = kv_chunks.cumsum(dim=2) - kv_chunks
    scores = (qc @ kc.transpose(-1, -2)).tril()
    num = (qc @ kv_before + scores @ vc).flatten(2, 3)
    count = torch.arange(1, seq_len + pad + 1, device=q.device, dtype=num.dtype)
    den = (qh * kh.cumsum(dim=2)).sum(dim=-1) + 1e-6 * count
    return (num / den.unsqueeze(-1)).transpose(1, 2)[:, :seq_len]


@contextlib.contextmanager
def sdpa_backend(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """On CUDA with half precision pin SDPA to its flash kernel (the usual reference); elsewhere let it choose."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            yield
    else:
        yield


@functools.lru_cache(maxsize=4)
def _rope_tables(seq_len: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_angles_1d(seq_len, head_dim, device=device)


def build_method(
    method: str,
    causal: bool,
    heads: int,
    head_dim: int,
    device: torch.device,
    compiler: Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]] | None = None,
) -> Attention:
    """The attention ``(q, k, v) -> o`` of ``method`` (one of :data:`METHODS`) on ``[B, T, H, D]`` tensors.

    ``compiler`` (methods of :data:`COMPILABLE` only), e.g. ``torch.compile``, is applied to the operator call itself;
    the RoPE tables are made outside it and passed in, as a model layer does.
    """
    if compiler is not None and method not in COMPILABLE:
        raise ValueError(f"only {COMPILABLE} are compiled here, got method {method!r}")
    if method in COMPILABLE:

        def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: Any = None) -> torch.Tensor:
            return nala_attention(q, k, v, causal=causal, rope=rope)

        operator = call if compiler is None else compiler(call)
        if method == "nala":
            return lambda q, k, v: operator(q, k, v)
        # what every model layer calls: decoupled RoPE (rotated numerator, plain denominator); tables made once per T
        return lambda q, k, v: operator(q, k, v, _rope_tables(q.shape[1], head_dim, q.device))
    if method == "nala_plain":
        return lambda q, k, v: plain_nala_attention(q, k, v, causal)
    if method == "sdpa":

        def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k, v = (x.transpose(1, 2) for x in (q, k, v))
            with sdpa_backend(q.device, q.dtype):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2)

        return sdpa
    if method not in BASELINE_MAPS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    feature_map = BASELINE_MAPS[method](heads, head_dim, causal).to(device)

    def linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(q.shape[1], device=q.device)
        streams = feature_map(q, k, positions)
        values = v.chunk(len(streams), dim=-1)
        outputs = [linear_attention(pq, pk, part, causal=causal) for (pq, pk), part in zip(streams, values)]
        return torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]

    return linear


def make_inputs(
    batch: int, seq_len: int, heads: int, head_dim: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> list[torch.Tensor]:
    """Seeded ``q, k, v [B, T, H, D]`` that require grad."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, seq_len, heads, head_dim)
    return [torch.randn(shape, generator=generator).to(device, dtype).requires_grad_() for _ in range(3)]


def _calls(attention: Attention, inputs: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    def forward() -> None:
        with torch.no_grad():
            attention(*inputs)

    def forward_backward() -> None:
        for x in inputs:
            x.grad = None
        attention(*inputs).float().sum().backward()

    return {"fwd": forward, "fwd+bwd": forward_backward}


def memory_case(
    method: str,
    causal: bool,
    seq_len: int,
    batch: int,
    heads: int,
    head_dim: int,
    dtype: str = "float32",
    device: str = "cpu",
    backward: bool = True,
) -> tuple[Callable[[], object], Callable[[], object]]:
    """``(run, warmup)`` for :func:`nalaformer.bench.memory.peak_memory_bytes`: the same call twice.

    The warm-up is the measured call itself, so that workspaces the libraries keep after a first call of this size
    (BLAS packing buffers, thread pools) are in the baseline and the peak is what the call needs each time.
    """
    torch_device, torch_dtype = torch.device(device), getattr(torch, dtype)
    attention = build_method(method, causal, heads, head_dim, torch_device)
    inputs = make_inputs(batch, seq_len, heads, head_dim, torch_device, torch_dtype)
    run = _calls(attention, inputs)["fwd+bwd" if backward else "fwd"]

    def warmup() -> None:
        run()
        # the measured call's gradients must be allocated by that call, not left over from this one
        for x in inputs:
            x.grad = None

    return run, warmup


@dataclass(frozen=True)
class OperatorSettings:
    """What :func:`run_operator_benchmarks` measures.

    Attributes:
        lengths: sequence lengths ``T``.
        methods: names from :data:`METHODS` (``"sdpa"`` is always added: it is the reference).
        modes: ``(False, True)`` = non-causal and causal.
        batch, heads, head_dim: ``B, H, D``.
        dtype, device: of the inputs.
        rounds: interleaved timing rounds up to 4096 tokens (half of them, at least 2, beyond).
        sdpa_max_len: SDPA (quadratic time) is skipped above this length.
        plain_max_len: the plain NaLa formula is skipped above this length.
        memory_methods: methods whose forward+backward peak memory is measured (a fresh process each).
        threads: torch threads of the memory subprocesses (None = default).
        min_round_s: a fast call is repeated to last this long per round (:func:`time_interleaved`).
        compile: also time ``torch.compile`` of the methods of :data:`COMPILABLE` among ``methods`` (rows
            ``<method>+compile``).
        compile_backend: their ``torch.compile`` backend (``"inductor"``: the default one).
        compile_dynamic: their ``dynamic`` (False: a compilation specialised to each length).
    """

    lengths: Sequence[int] = (256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
    methods: Sequence[str] = METHODS
    modes: Sequence[bool] = (False, True)
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"
    rounds: int = 5
    sdpa_max_len: int = 16384
    plain_max_len: int = 16384
    memory_methods: Sequence[str] = ("nala", "nala_rope", "sdpa")
    threads: int | None = None
    min_round_s: float = 0.02
    compile: bool = False
    compile_backend: str = "inductor"
    compile_dynamic: bool | None = False


def _skipped(method: str, seq_len: int, settings: OperatorSettings) -> str | None:
    if method == "sdpa" and seq_len > settings.sdpa_max_len:
        return f"quadratic: skipped above T={settings.sdpa_max_len}"
    if method == "nala_plain" and seq_len > settings.plain_max_len:
        return f"skipped above T={settings.plain_max_len}"
    return None


def run_operator_benchmarks(
    settings: OperatorSettings, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Time (and measure the memory of) every method at every length; one row per method, mode, length and pass.

    Row fields: ``method, causal, seq_len, pass, median_ms, min_ms, max_ms, rounds, speedup_vs_sdpa`` (SDPA's time
    over the method's, paired per round; empty where SDPA was skipped), ``rope_over_plain`` (``nala_rope`` rows: its
    time over ``nala``'s, paired per round), ``peak_mib, peak_bytes_per_token`` (forward+backward rows of
    ``memory_methods``) and ``note``. With ``compile``, rows ``<method>+compile`` too, and on every row
    ``speedup_vs_eager`` (the eager method's time over the compiled one's, paired per round; NaN on eager rows) and
    ``compile_s`` (seconds of the compiled method's first calls of that pass at that length; NaN on eager rows).
    """
    methods = list(dict.fromkeys([*settings.methods, REFERENCE]))
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    compiled = [method + COMPILED for method in methods if method in COMPILABLE] if settings.compile else []
    if settings.compile and not compiled:
        raise ValueError(f"compile: methods must include one of {COMPILABLE}, got {list(settings.methods)}")

    def compiler(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return torch.compile(fn, backend=settings.compile_backend, dynamic=settings.compile_dynamic)

    rows: list[dict[str, Any]] = []
    for causal in settings.modes:
        for seq_len in settings.lengths:
            inputs = make_inputs(
                settings.batch, seq_len, settings.heads, settings.head_dim, settings.device, settings.dtype
            )
            candidates: dict[str, Callable[[], object]] = {}
            notes: dict[str, str] = {}
            for method in methods:
                reason = _skipped(method, seq_len, settings)
                if reason:
                    notes[method] = reason
                    continue
                attention = build_method(method, causal, settings.heads, settings.head_dim, settings.device)
                for pass_name, call in _calls(attention, inputs).items():
                    candidates[f"{method}|{pass_name}"] = call
            compile_seconds: dict[str, float] = {}
            if compiled:
                # a fresh compilation per length: its time is this length's, and the caches stay within their limit
                torch._dynamo.reset()
                if progress:
                    progress(f"operators: compiling {', '.join(compiled)} at T={seq_len}")
            for name in compiled:
                attention = build_method(
                    name.removesuffix(COMPILED), causal, settings.heads, settings.head_dim, settings.device, compiler
                )
                for pass_name, call in _calls(attention, inputs).items():
                    key = f"{name}|{pass_name}"
                    candidates[key] = call
                    compile_seconds[key] = first_calls_seconds(call, COMPILE_CALLS, settings.device)
            rounds = settings.rounds if seq_len <= 4096 else max(2, settings.rounds // 2)
            if progress:
                progress(f"operators: {'causal' if causal else 'non-causal'} T={seq_len} ({len(candidates)} calls)")
            timings = time_interleaved(
                candidates, rounds=rounds, min_round_s=settings.min_round_s, device=settings.device
            )
            for method in methods + compiled:
                base, suffix = method.removesuffix(COMPILED), COMPILED if method in compiled else ""
                for pass_name in PASSES:
                    timing = timings.get(f"{method}|{pass_name}")
                    reference = timings.get(f"{REFERENCE}|{pass_name}")
                    # the compiled pair's ratio is taken between the compiled rows
                    plain = timings.get(f"nala{suffix}|{pass_name}") if base == "nala_rope" else None
                    eager = timings.get(f"{base}|{pass_name}") if suffix else None
                    row: dict[str, Any] = {
                        "method": method,
                        "causal": causal,
                        "seq_len": seq_len,
                        "pass": pass_name,
                        "median_ms": math.nan if timing is None else 1e3 * timing.median_s,
                        "min_ms": math.nan if timing is None else 1e3 * timing.min_s,
                        "max_ms": math.nan if timing is None else 1e3 * timing.max_s,
                        "rounds": 0 if timing is None else timing.rounds,
                        "speedup_vs_sdpa": (
                            math.nan if timing is None or reference is None else paired_ratio(reference, timing)
                        ),
                        "rope_over_plain": (
                            math.nan if timing is None or plain is None else paired_ratio(timing, plain)
                        ),
                        "peak_mib": math.nan,
                        "peak_bytes_per_token": math.nan,
                        "note": notes.get(method, ""),
                    }
                    if settings.compile:
                        row["speedup_vs_eager"] = (
                            math.nan if timing is None or eager is None else paired_ratio(eager, timing)
                        )
                        row["compile_s"] = compile_seconds.get(f"{method}|{pass_name}", math.nan)
                    if timing is not None and pass_name == "fwd+bwd" and method in settings.memory_methods:
                        peak = peak_memory_bytes(
                            "nalaformer.bench.operators:memory_case",
                            dict(
                                method=method,
                                causal=causal,
                                seq_len=seq_len,
                                batch=settings.batch,
                                heads=settings.heads,
                                head_dim=settings.head_dim,
                                dtype=str(settings.dtype).removeprefix("torch."),
                                device=str(settings.device),
                            ),
                            device=str(settings.device),
                            threads=settings.threads,
                        )
                        row["peak_mib"] = peak / 2**20
                        row["peak_bytes_per_token"] = peak / (seq_len * settings.batch)
                    rows.append(row)
            del inputs, candidates, timings
    return rows
