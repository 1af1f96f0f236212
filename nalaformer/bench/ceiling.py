"""Where a train step's time goes: the attention ceiling of a model, and a profile of its step by part.

**Ceiling.** The same model and train step with every token mixer's attention replaced by the identity over the
values (``o = v``; the block around it — projections, LePE, norm, gate, output projection — still runs): the step no
attention can beat. ``softmax_step / no_attention_step`` is then the largest speed-up over softmax that any attention
could give that model at that size on this machine; a target above it is out of reach whatever the attention does.
The softmax, NaLa and no-attention steps are timed interleaved in the same rounds (:mod:`nalaformer.bench.timing`),
so every ratio comes from one run.

**Breakdown.** One train step under ``torch.profiler``, every operator's own CPU time assigned to a part of the model:
the attention operator (its matmuls and its other ops apart), NaLa's feature maps inside it, RoPE (the block's tables
and the rotations), linear layers, norms, convolutions (LePE, CPE, stem), the optimizer, and the rest (embedding, loss,
activations, residual adds, reshapes). Forward ops take the part of the module or function that ran them (labelled
for the profile only); a backward op takes the part of the forward op that created its autograd node (the profiler's
sequence numbers link the two). The profiler's own overhead inflates small ops, so the shares, not the profiled
milliseconds, are the result; the timed medians come from the interleaved rounds.

**Operator.** The same breakdown, by aten op, of one forward+backward of NaLa with RoPE against torch SDPA (non-causal,
B=1, H=4, D=64), beside their interleaved timing.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.bench.models import build_preset_lm, lm_loss, lm_tokens, train_step
from nalaformer.bench.timing import paired_ratio, time_interleaved
from nalaformer.layers.block import AttentionBlock

PARTS = (
    "attention matmuls",
    "attention other ops",
    "feature maps",
    "rope",
    "linear layers",
    "norms",
    "convolutions",
    "optimizer",
    "other",
)
NO_ATTENTION = "none"
_LABEL = "bench::"
_MATMULS = {
    f"aten::{name}{suffix}"
    for name in ("mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot")
    for suffix in ("", "_")
}
# the attention ops' own profiler events: SDPA's aten ops, NaLa's autograd functions (forward and backward)
_ATTENTION_OPS = ("scaled_dot_product", "NaLaCausal", "NaLaNonCausal", "SeparateFeatureParallel", "CausalChunkSums")


def _identity_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
    return v, None


@contextlib.contextmanager
def attention_removed(model: nn.Module) -> Iterator[int]:
    """Inside the context every :class:`~nalaformer.layers.block.AttentionBlock` of ``model`` attends as the
    identity over its values (``o = v``), everything else in the block unchanged; yields how many blocks."""
    blocks = [module for module in model.modules() if isinstance(module, AttentionBlock)]
    for block in blocks:
        block.attend = _identity_attend
    try:
        yield len(blocks)
    finally:
        for block in blocks:
            del block.attend


def without_attention(model: nn.Module) -> nn.Module:
    """``model`` with its attention removed for good (see :func:`attention_removed`); the same object."""
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.attend = _identity_attend
    return model


# ---------------------------------------------------------------------------------------------------------- profile


def _labelled(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(_LABEL + part):
            return fn(*args, **kwargs)

    return run


def _module_part(module: nn.Module) -> str | None:
    from nalaformer.layers.short_conv import ShortConvolution
    from nalaformer.models.lm.modeling_nala import NaLaRMSNorm

    if isinstance(module, nn.Linear):
        return "linear layers"
    if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, NaLaRMSNorm)):
        return "norms"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, ShortConvolution)):
        return "convolutions"
    return None


@contextlib.contextmanager
def labelled_parts(model: nn.Module) -> Iterator[None]:
    """Label, for a profile, the calls of every part of :data:`PARTS` that ``model`` (and NaLa's op) makes.

    Module forwards and the attention blocks' ``attend`` and RoPE tables are wrapped per instance; NaLa's feature
    maps and RoPE rotations, and the RoPE inside softmax attention, per function (module globals, restored on exit).
    """
    from nalaformer.ops import softmax as softmax_ops
    from nalaformer.ops.nala import api, causal, common, noncausal

    wrapped: list[tuple[Any, str]] = []
    saved: list[tuple[Any, str, Any]] = []

    def wrap_instance(obj: Any, name: str, part: str) -> None:
        setattr(obj, name, _labelled(getattr(obj, name), part))
        wrapped.append((obj, name))

    def wrap_global(owner: Any, name: str, part: str) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, _labelled(getattr(owner, name), part))

    try:
        for module in model.modules():
            part = _module_part(module)
            if part is not None:
                wrap_instance(module, "forward", part)
            if isinstance(module, AttentionBlock):
                wrap_instance(module, "attend", "attention")
                wrap_instance(module, "_rope_tables", "rope")
        wrap_global(common.NaLaMap, "forward", "feature maps")
        wrap_global(common.NaLaMap, "backward", "feature maps")
        for owner, names in (
            (noncausal, ("rotate",)),
            (causal, ("add_rotated",)),
            (api, ("rotation_table",)),
            (softmax_ops, ("apply_rope",)),
        ):
            for name in names:
                wrap_global(owner, name, "rope")
        yield
    finally:
        for obj, name in reversed(wrapped):
            if name in vars(obj):
                delattr(obj, name)
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def breakdown(events: Sequence[Any]) -> dict[str, Any]:
    """Own CPU time per part (ms) of a profile made under :func:`labelled_parts`; ``aten``: the part's time in aten
    ops (the rest is Python and dispatch: the labels', autograd functions' and backward steps' own time); ``ops``:
    the own time of each aten op per ``(part, op)`` (ms); ``calls``: the number of attention-op events per name.

    ``events``: the profile's ``events()``. An event belongs to the part of its nearest labelled enclosing call; a
    backward step (``autograd::engine::evaluate_function``) to the part of the forward op that made its node; an
    optimizer call to ``optimizer``; anything else to ``other``.
    """
    roots = [event for event in events if event.cpu_parent is None]
    forward_part: dict[tuple[int, int], str] = {}
    parts: dict[str, float] = defaultdict(float)
    ops: dict[tuple[str, str], float] = defaultdict(float)
    aten: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def visit(event: Any, part: str | None) -> None:
        name = event.name
        if name.startswith(_LABEL):
            part = name[len(_LABEL) :]
        elif name.startswith("autograd::engine::evaluate_function"):
            part = forward_part.get((event.fwd_thread, event.sequence_nr), "other")
        elif name.startswith("Optimizer."):
            part = "optimizer"
        here = part or "other"
        if here == "attention":
            here = "attention matmuls" if name in _MATMULS else "attention other ops"
        if name.startswith("aten::"):
            ops[(here, name)] += event.self_cpu_time_total / 1e3
            aten[here] += event.self_cpu_time_total / 1e3
        if not name.startswith(_LABEL) and any(op in name for op in _ATTENTION_OPS):
            calls[name] += 1
        parts[here] += event.self_cpu_time_total / 1e3
        for child in event.cpu_children:
            visit(child, part)

    # forward events first (their parts label the backward steps), then everything in time order
    for root in sorted(roots, key=lambda event: event.time_range.start):
        if not root.name.startswith("autograd::engine::evaluate_function"):
            _record_forward(root, None, forward_part)
    for root in sorted(roots, key=lambda event: event.time_range.start):
        visit(root, None)
    return {
        "parts": {part: parts.get(part, 0.0) for part in PARTS},
        "aten": {part: aten.get(part, 0.0) for part in PARTS},
        "ops": dict(ops),
        "calls": dict(calls),
    }


def _record_forward(event: Any, part: str | None, forward_part: dict[tuple[int, int], str]) -> None:
    if event.name.startswith(_LABEL):
        part = event.name[len(_LABEL) :]
    elif event.name.startswith("Optimizer."):
        part = "optimizer"
    if event.name.startswith("autograd::engine::evaluate_function"):
        return
    if event.sequence_nr >= 0 and part is not None:
        forward_part.setdefault((event.thread, event.sequence_nr), part)
    for child in event.cpu_children:
        _record_forward(child, part, forward_part)


def profile_call(fn: Callable[[], object], model: nn.Module | None = None, warmup: bool = True) -> dict[str, Any]:
    """:func:`breakdown` of one call of ``fn`` (after one unprofiled call with ``warmup``), labelled through
    ``model``'s modules; ``total_ms``: the sum of the parts."""
    if warmup:
        fn()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with (
        labelled_parts(model if model is not None else nn.Module()),
        torch.profiler.profile(activities=activities) as profile,
    ):
        fn()
    result = breakdown(profile.events())
    result["total_ms"] = sum(result["parts"].values())
    return result


# ---------------------------------------------------------------------------------------------------------- suites


CASES = (("lm", 1024), ("vision", 512), ("lm", 8192), ("operator", 4096))
MODELS = ("lm", "vision", "operator")


@dataclass(frozen=True)
class CeilingSettings:
    """Attributes: ``cases`` (``(model, size)`` pairs, run in this order: ``lm`` at a sequence length, 2048 tokens
    per step as in the language suite; ``vision`` at an image side, batch 1; ``operator`` at a sequence length,
    non-causal, B=1), ``preset`` and ``vocab_size`` (the LM's), ``variant`` (the vision model), ``heads`` and
    ``head_dim`` (the operator's), ``rounds``, ``profile`` (add the breakdown rows), ``device``, ``min_round_s``."""

    cases: Sequence[tuple[str, int]] = CASES
    preset: str = "small"
    vocab_size: int = 256
    variant: str = "nalaformer_t"
    heads: int = 4
    head_dim: int = 64
    rounds: int = 3
    profile: bool = True
    device: torch.device | str = "cpu"
    min_round_s: float = 0.02


def parse_cases(entries: Sequence[str]) -> list[tuple[str, int]]:
    """``["lm:1024", "vision:512"]`` -> ``[("lm", 1024), ("vision", 512)]`` (ValueError naming a bad entry)."""
    cases = []
    for entry in entries:
        model, _, size = entry.partition(":")
        if model not in MODELS or not size.isdigit() or int(size) < 1:
            raise ValueError(f"--cases entries are MODEL:SIZE with MODEL one of {', '.join(MODELS)}, got {entry!r}")
        cases.append((model, int(size)))
    return cases


def _step_rows(kind: str, size: int, timings: dict[str, Any], softmax: str) -> list[dict[str, Any]]:
    """One ``step`` row per timed candidate; the speed-up is against the ``softmax`` candidate's timing."""
    return [
        {
            "kind": "step",
            "model": kind,
            "size": size,
            "candidate": name,
            "median_ms": 1e3 * timing.median_s,
            "min_ms": 1e3 * timing.min_s,
            "max_ms": 1e3 * timing.max_s,
            "speedup_vs_softmax": paired_ratio(timings[softmax], timing),
            "rounds": timing.rounds,
        }
        for name, timing in timings.items()
    ]


def _model_rows(
    kind: str,
    size: int,
    models: dict[str, nn.Module],
    loss: Callable[[nn.Module], torch.Tensor],
    settings: CeilingSettings,
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """Time the train steps of ``models`` (``softmax``, ``nala``, ``none``) interleaved; profile each once."""
    steps = {name: train_step(model, loss) for name, model in models.items()}
    if progress:
        progress(f"ceiling: {kind} {size}: timing {', '.join(steps)}")
    timings = time_interleaved(steps, rounds=settings.rounds, min_round_s=settings.min_round_s, device=settings.device)
    rows = _step_rows(kind, size, timings, "softmax")
    if settings.profile:
        for name, step in steps.items():
            if progress:
                progress(f"ceiling: {kind} {size}: profiling {name}")
            rows += _profile_rows(kind, size, name, profile_call(step, models[name], warmup=False))
    return rows


def _profile_rows(kind: str, size: int, candidate: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    total = result["total_ms"]
    rows = [
        {
            "kind": "part",
            "model": kind,
            "size": size,
            "candidate": candidate,
            "part": part,
            "ms": ms,
            "share": ms / total if total else math.nan,
            "aten_ms": result["aten"][part],
        }
        for part, ms in result["parts"].items()
    ]
    rows += [
        {
            "kind": "op",
            "model": kind,
            "size": size,
            "candidate": candidate,
            "part": part,
            "op": op,
            "ms": ms,
            "share": ms / total if total else math.nan,
        }
        for (part, op), ms in sorted(result["ops"].items(), key=lambda item: -item[1])
        if total and ms >= 1e-3 * total  # ops under 0.1% of the step are left out
    ]
    rows += [
        {"kind": "calls", "model": kind, "size": size, "candidate": candidate, "op": op, "calls": count}
        for op, count in sorted(result["calls"].items())
    ]
    return rows


def lm_models(preset: str, vocab_size: int, seq_len: int, device: torch.device | str) -> dict[str, nn.Module]:
    """The softmax and NaLa LMs of ``preset`` and the softmax one without attention (same seed, same weights)."""
    return {
        "softmax": build_preset_lm("softmax", preset, vocab_size, seq_len, device),
        "nala": build_preset_lm("nala", preset, vocab_size, seq_len, device),
        NO_ATTENTION: without_attention(build_preset_lm("softmax", preset, vocab_size, seq_len, device)),
    }


def vision_models(variant: str, device: torch.device | str) -> dict[str, nn.Module]:
    """``variant`` all-softmax, all-NaLa, and all-softmax without attention (seeded)."""
    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    if variant not in ENTRYPOINTS:
        raise ValueError(f"variant must be one of {sorted(ENTRYPOINTS)}, got {variant!r}")
    models = {}
    for name, layout in (("softmax", "softmax"), ("nala", "nala"), (NO_ATTENTION, "softmax")):
        torch.manual_seed(0)
        models[name] = ENTRYPOINTS[variant](mixers=layout).to(device)
    without_attention(models[NO_ATTENTION])
    return models


def run_ceiling(
    settings: CeilingSettings,
    progress: Callable[[str], None] | None = None,
    on_case: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows of four kinds (``kind``): ``step`` (``model, size, candidate, median_ms, speedup_vs_softmax``: the
    ``none`` row's speed-up is the ceiling), ``part`` (``candidate, part, ms, share`` of a profiled step), ``op``
    (``part`` and ``op``: one aten op's own time in that part) and ``calls`` (the attention-op events a profile
    saw). Models: ``lm`` (size = sequence length), ``vision`` (image side), ``operator`` (sequence length; its
    candidates ``sdpa``, ``nala_rope`` and ``nala``, forward+backward). ``on_case`` gets the rows so far after each
    case (to write them before a long case that may not finish)."""
    rows: list[dict[str, Any]] = []
    for model, size in settings.cases:
        if model == "lm":
            case = _lm_rows(size, settings, progress)
        elif model == "vision":
            case = _vision_rows(size, settings, progress)
        elif model == "operator":
            case = _operator_rows(size, settings, progress)
        else:
            raise ValueError(f"cases: model must be one of {', '.join(MODELS)}, got {model!r}")
        if progress:
            steps = [row for row in case if row["kind"] == "step"]
            progress(
                f"ceiling: {model} {size}: "
                + ", ".join(
                    f"{row['candidate']} {row['median_ms']:.0f} ms ({row['speedup_vs_softmax']:.2f}x)" for row in steps
                )
            )
        rows += case
        if on_case is not None:
            on_case(list(rows))
    return rows


def _lm_rows(seq_len: int, settings: CeilingSettings, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    tokens = lm_tokens(seq_len, settings.vocab_size, settings.device)

    def loss(model: nn.Module) -> torch.Tensor:
        return lm_loss(model, tokens)

    models = lm_models(settings.preset, settings.vocab_size, seq_len, settings.device)
    return _model_rows("lm", seq_len, models, loss, settings, progress)


def _vision_rows(size: int, settings: CeilingSettings, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(settings.device)
    labels = torch.zeros(1, dtype=torch.long, device=settings.device)

    def loss(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(images), labels)

    models = vision_models(settings.variant, settings.device)
    return _model_rows("vision", size, models, loss, settings, progress)


def _operator_rows(
    seq_len: int, settings: CeilingSettings, progress: Callable[[str], None] | None
) -> list[dict[str, Any]]:
    from nalaformer.bench.operators import build_method, make_inputs

    device = torch.device(settings.device)
    inputs = make_inputs(1, seq_len, settings.heads, settings.head_dim, device, torch.float32)
    calls = {}
    for method in ("sdpa", "nala_rope", "nala"):
        attention = build_method(method, False, settings.heads, settings.head_dim, device)

        def forward_backward(attention: Callable[..., torch.Tensor] = attention) -> None:
            for x in inputs:
                x.grad = None
            attention(*inputs).float().sum().backward()

        calls[method] = forward_backward
    if progress:
        progress(f"ceiling: operator {seq_len}: timing {', '.join(calls)}")
    timings = time_interleaved(calls, rounds=settings.rounds, min_round_s=settings.min_round_s, device=device)
    rows = _step_rows("operator", seq_len, timings, "sdpa")
    if settings.profile:
        for name in ("sdpa", "nala_rope"):
            if progress:
                progress(f"ceiling: operator {seq_len}: profiling {name}")
            rows += _profile_rows(
                "operator", seq_len, name, profile_call(_attention_labelled(calls[name]), warmup=False)
            )
    return rows


def _attention_labelled(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with its whole call (forward and, through the sequence numbers, backward) in the attention part."""

    def call() -> object:
        with torch.profiler.record_function(_LABEL + "attention"):
            return fn()

    return call


# ---------------------------------------------------------------------------------------------------------- report


def ceiling_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The step table (timed, with the ceiling) and the breakdown tables of a :func:`run_ceiling` result."""
    from nalaformer.reporting import markdown_table

    lines = []
    steps = [row for row in rows if row["kind"] == "step"]
    cases = list(dict.fromkeys((row["model"], row["size"]) for row in steps))
    table = []
    for model, size in cases:
        found = {row["candidate"]: row for row in steps if (row["model"], row["size"]) == (model, size)}
        reference = "sdpa" if model == "operator" else "softmax"
        fast = "nala_rope" if model == "operator" else "nala"
        ceiling = found.get(NO_ATTENTION, {}).get("speedup_vs_softmax", math.nan)
        ms = {name: row["median_ms"] for name, row in found.items()}
        nala_share = (ms[fast] - ms[NO_ATTENTION]) / ms[fast] if NO_ATTENTION in ms else math.nan
        reference_share = (ms[reference] - ms[NO_ATTENTION]) / ms[reference] if NO_ATTENTION in ms else math.nan
        table.append(
            [
                model,
                size,
                f"{ms[reference]:.1f}",
                f"{ms[fast]:.1f}",
                f"{ms[NO_ATTENTION]:.1f}" if NO_ATTENTION in ms else "–",
                f"{found[fast]['speedup_vs_softmax']:.2f}x",
                "–" if math.isnan(ceiling) else f"{ceiling:.2f}x",
                "–" if math.isnan(nala_share) else f"{100 * nala_share:.0f}%",
                "–" if math.isnan(reference_share) else f"{100 * reference_share:.0f}%",
            ]
        )
    columns = [
        "model",
        "size",
        "softmax / SDPA ms",
        "NaLa ms",
        "no-attention ms",
        "NaLa speed-up",
        "ceiling",
        "attention share, NaLa",
        "attention share, softmax",
    ]
    lines += [
        "Train steps (operator: forward+backward), median of interleaved rounds; the ceiling is softmax's step over "
        "the step without attention; an attention share is (step - no-attention step) / step.",
        "",
        markdown_table(columns, table),
    ]
    parts = [row for row in rows if row["kind"] == "part"]
    for model, size in cases:
        profiled = [row for row in parts if (row["model"], row["size"]) == (model, size)]
        if not profiled:
            continue
        candidates = list(dict.fromkeys(row["candidate"] for row in profiled))
        share = {(row["candidate"], row["part"]): row["share"] for row in profiled}
        body = [[part, *(f"{100 * share[(name, part)]:.1f}%" for name in candidates)] for part in PARTS]
        total = {name: sum(row["ms"] for row in profiled if row["candidate"] == name) for name in candidates}
        body.append(["profiled ms", *(f"{total[name]:.0f}" for name in candidates)])
        if all("aten_ms" in row for row in profiled):
            outside = {
                name: sum(row["ms"] - row["aten_ms"] for row in profiled if row["candidate"] == name)
                for name in candidates
            }
            body.append(
                [
                    "of it outside aten ops (Python, dispatch)",
                    *(f"{100 * outside[name] / total[name]:.1f}%" if total[name] else "–" for name in candidates),
                ]
            )
        lines += ["", f"Share of the profiled step, {model} {size}:", "", markdown_table(["part", *candidates], body)]
        ops = [row for row in rows if row["kind"] == "op" and (row["model"], row["size"]) == (model, size)]
        if ops:
            top = []
            for name in candidates:
                mine = [row for row in ops if row["candidate"] == name][:8]
                listed = ", ".join(
                    f"{row['op'].removeprefix('aten::')} ({row['part']}) {100 * row['share']:.1f}%" for row in mine
                )
                top.append(f"- {name}: {listed}")
            lines += ["", "Largest aten ops by own time (share of the profiled step):", "", *top]
    return "\n".join(lines)
