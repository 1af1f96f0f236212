"""Convert pretrained softmax transformers into linear-attention (NaLa by default) models.

``linearize(model, mixer="nala")`` swaps every softmax self-attention for a registered feature-map mixer that reuses
the pretrained projections and head layout; :mod:`nalaformer.convert.stages` trains the conversion (attention
transfer, then recovery with LoRA or full fine-tuning and distillation); :mod:`nalaformer.convert.saving` saves and
reloads the converted model offline; ``nalaformer linearize`` runs the whole conversion in a resumable run folder.
"""

from nalaformer.convert.attention import LinearizedAttention, QueryKeyAdapter, explicit_attention
from nalaformer.convert.swap import (
    ConversionError,
    ConversionSpec,
    calibrate,
    converted_modules,
    find_attention,
    linearize,
    new_parameters,
    set_mode,
)

__all__ = [
    "ConversionError",
    "ConversionSpec",
    "LinearizedAttention",
    "QueryKeyAdapter",
    "calibrate",
    "converted_modules",
    "explicit_attention",
    "find_attention",
    "linearize",
    "new_parameters",
    "set_mode",
]
