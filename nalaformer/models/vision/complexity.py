"""Parameter and multiply-add counts of a vision model, measured from the model itself.

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs in matmuls,
einsums (through their matmuls), linears and convolutions, and nothing for element-wise work (norms, activations,
feature maps). Published vision GFLOPs are multiply-adds, so :func:`count_macs` returns FLOPs / 2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _fused_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # [B, H, Tq, D] @ [B, H, D, Tk] then [B, H, Tq, Tk] @ [B, H, Tk, Dv], 2 FLOPs per multiply-add.
    batch, heads, queries, head_dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (head_dim + value_dim)


# The counter knows the CUDA fused-attention kernels but not the CPU one, which would otherwise count as 0.
_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _fused_attention_flops


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all, or only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(
    model: nn.Module, input_size: int | tuple[int, int] = 224, batch_size: int = 1, in_chans: int | None = None
) -> int:
    """Multiply-adds of one forward pass of ``model`` in eval mode, counted with ``FlopCounterMode``.

    Args:
        model: an image model taking ``[B, C, H, W]``; it is put in eval mode for the count and restored after.
        input_size: ``H`` (square) or ``(H, W)``; default 224.
        batch_size: images per forward; default 1 (the published convention).
        in_chans: input channels; default ``model.in_chans`` or 3.

    Returns:
        Total multiply-adds (FLOPs / 2) as an int.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height <= 0 or width <= 0 or batch_size <= 0:
        raise ValueError(f"input_size and batch_size must be positive, got {input_size!r} and {batch_size!r}")
    channels = in_chans if in_chans is not None else getattr(model, "in_chans", 3)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, channels, height, width, generator=generator).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# Published parameters (millions) and GMACs at 224² of the released hybrid layout (paper Table 1, official README).
PUBLISHED = {
    "nalaformer_xt": (8.0, 1.0),
    "nalaformer_t": (15.0, 2.7),
    "nalaformer_s": (26.0, 5.1),
    "nalaformer_b": (52.0, 11.8),
    "nalaformer_l": (95.0, 17.7),
}


def complexity_rows(
    variants: list[str], layouts: list[str], input_size: int | tuple[int, int] = 224
) -> list[dict[str, object]]:
    """Parameters and MACs of every ``variant x layout``, counted on the meta device (no memory, no compute).

    Args:
        variants: entrypoint names (``"nalaformer_t"``, ...) or their suffixes (``"t"``).
        layouts: mixer layouts (``"released"``, ``"nala"``, ``"softmax"`` or any registry name).
        input_size: ``H`` or ``(H, W)``; default 224.

    Returns:
        One dict per pair: ``variant, layout, params, macs, published_params, published_macs`` (the published
        figures only for the released layout at 224², else None).
    """
    from nalaformer.models.vision.nalaformer import ENTRYPOINTS

    rows = []
    for variant in variants:
        name = variant if variant in ENTRYPOINTS else f"nalaformer_{variant}"
        if name not in ENTRYPOINTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(ENTRYPOINTS)}")
        for layout in layouts:
            with torch.device("meta"):
                model = ENTRYPOINTS[name](mixers=layout)
            published = PUBLISHED.get(name) if layout == "released" and input_size in (224, (224, 224)) else None
            rows.append(
                dict(
                    variant=name,
                    layout=layout,
                    params=count_parameters(model),
                    macs=count_macs(model, input_size),
                    published_params=None if published is None else int(published[0] * 1e6),
                    published_macs=None if published is None else int(published[1] * 1e9),
                )
            )
    return rows
