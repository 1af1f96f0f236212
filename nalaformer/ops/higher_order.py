"""Double backward for the hand-written backward functions: differentiate the reference formula instead.

The fused autograd functions (:mod:`nalaformer.ops.fused_features`,
:mod:`nalaformer.ops.linear_attn.parallel`) compute their first derivatives by hand from a few saved tensors. When
a caller asks for a differentiable gradient (``create_graph=True``, e.g. a gradient penalty or ``gradgradcheck``),
their backward calls :func:`reference_vjp`, which recomputes the plain formula under autograd, so every order of
derivative stays exact at the cost of speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def reference_vjp(
    reference: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    inputs: Sequence[torch.Tensor | None],
    grad_outputs: torch.Tensor | Sequence[torch.Tensor],
) -> tuple[torch.Tensor | None, ...]:
    """The vector-Jacobian product of ``grad_outputs`` through ``reference(*inputs)``, itself differentiable.

    Args:
        reference: the plain formula; takes ``inputs`` (tensors or ``None``) and returns a tensor or a tuple of them.
        inputs: the saved inputs of the fused function (already part of the caller's graph when they require grad).
        grad_outputs: the incoming gradients, one per output of ``reference``, with its shapes.

    Returns:
        One gradient per input (``None`` for inputs that are ``None`` or do not require grad).
    """
    with torch.enable_grad():
        outputs = reference(*inputs)
        wanted = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        grads = iter(torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True))
    return tuple(next(grads) if isinstance(x, torch.Tensor) and x.requires_grad else None for x in inputs)
