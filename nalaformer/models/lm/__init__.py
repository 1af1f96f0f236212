"""The NaLa causal language model with the Hugging Face API (needs the ``lm`` extra: transformers).

Importing this package registers ``"nala"`` with ``AutoConfig``, ``AutoModel`` and ``AutoModelForCausalLM``.
"""

from nalaformer.models.lm.compat import check_transformers_version

check_transformers_version()

from nalaformer.models.lm.cache import NaLaCache  # noqa: E402
from nalaformer.models.lm.configuration_nala import PRESETS, NaLaConfig  # noqa: E402
from nalaformer.models.lm.modeling_nala import (  # noqa: E402
    NaLaDecoderLayer,
    NaLaForCausalLM,
    NaLaMLP,
    NaLaModel,
    NaLaPreTrainedModel,
    NaLaRMSNorm,
)


def register_auto_classes() -> None:
    """Register ``NaLaConfig`` / ``NaLaModel`` / ``NaLaForCausalLM`` with the transformers Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(NaLaConfig.model_type, NaLaConfig, exist_ok=True)
    AutoModel.register(NaLaConfig, NaLaModel, exist_ok=True)
    AutoModelForCausalLM.register(NaLaConfig, NaLaForCausalLM, exist_ok=True)


register_auto_classes()

__all__ = [
    "PRESETS",
    "NaLaCache",
    "NaLaConfig",
    "NaLaDecoderLayer",
    "NaLaForCausalLM",
    "NaLaMLP",
    "NaLaModel",
    "NaLaPreTrainedModel",
    "NaLaRMSNorm",
    "register_auto_classes",
]
