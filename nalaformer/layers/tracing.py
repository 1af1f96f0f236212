"""Graph capture: which checks must not run while torch.fx, torch.compile or torch.export traces a model, and which
modules torch.fx should keep whole.

Input checks that read a tensor's *values* (``int(x.min())``, ``bool(mask.all())``) cannot run on a symbolic
tensor: torch.fx raises on ``bool(Proxy)``, torch.export refuses data-dependent control flow and torch.compile
breaks the graph there. Shape checks are fine under compile / export (they become guards) but not under torch.fx,
whose shapes are Proxies too. So eager calls are checked in full and traced calls skip what cannot be traced;
the traced graph then computes the same thing as an eager call with valid inputs.

A token mixer is a leaf for torch.fx (:data:`FX_LEAF_MODULES`): its forward branches on Python values (masks,
states, layouts) that are fixed for a vision backbone but not traceable symbolically. :class:`LeafTracer` applies
that list; :func:`register_timm_leaf_modules` gives it to timm's FX helpers (done when the vision models are
imported and timm is installed).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from nalaformer.layers.base import TokenMixer

__all__ = ["FX_LEAF_MODULES", "LeafTracer", "is_fx_tracing", "is_graph_capture", "register_timm_leaf_modules"]

# Every registered mixer subclasses TokenMixer, and the leaf test is isinstance-based.
FX_LEAF_MODULES: tuple[type[nn.Module], ...] = (TokenMixer,)


def is_fx_tracing() -> bool:
    """True while ``torch.fx.symbolic_trace`` (or timm's / torchvision's FX helpers) trace the caller."""
    trace = torch.fx._symbolic_trace
    # newer torch warns that is_fx_tracing() is also true under torch.export; the symbolic-only test is the one meant
    return trace.is_fx_symbolic_tracing() if hasattr(trace, "is_fx_symbolic_tracing") else trace.is_fx_tracing()


def is_graph_capture() -> bool:
    """True under torch.fx tracing, torch.compile / torch.export (dynamo or non-strict) or TorchScript scripting:
    the places where a check that reads tensor values must be skipped."""
    compiler = getattr(torch, "compiler", None)
    compiling = compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling()
    exporting = compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting()
    return is_fx_tracing() or compiling or exporting or torch.jit.is_scripting()


class LeafTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that keeps every :data:`FX_LEAF_MODULES` instance as one ``call_module`` node.

    Example: ``torch.fx.GraphModule(model, LeafTracer().trace(model))``.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, FX_LEAF_MODULES) or super().is_leaf_module(m, module_qualified_name)


def register_timm_leaf_modules() -> bool:
    """Register :data:`FX_LEAF_MODULES` with timm's FX helpers; False (nothing done) if timm cannot be imported."""
    try:
        from timm.layers import register_notrace_module
    except (ImportError, RuntimeError):  # timm imports torchvision, which fails beside CPU-only torch builds
        return False
    for module in FX_LEAF_MODULES:
        register_notrace_module(module)
    return True
