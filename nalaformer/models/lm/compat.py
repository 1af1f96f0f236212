"""The transformers versions the language model is tested with, and the one name that changed inside that range.

Checked once at import: an older transformers raises an ImportError that says which version is needed, a newer
major version gives a warning, so a breaking change is reported instead of surfacing as a wrong generation.
"""

from __future__ import annotations

import warnings

try:
    import transformers
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        "nalaformer's language model needs the package 'transformers', which is not installed; "
        "install it with `pip install 'nalaformer[lm]'`"
    ) from error
from packaging.version import Version
from transformers.modeling_outputs import CausalLMOutputWithPast

# Keep in step with the `lm` extra in pyproject.toml. Tests pass with transformers 5.0.0, 5.12.1 and 5.24.0.
MIN_TRANSFORMERS = "5.0.0"
NEXT_UNTESTED_MAJOR = "6.0.0"


def check_transformers_version(version: str | None = None) -> None:
    """Raise ImportError below :data:`MIN_TRANSFORMERS`; warn at or above :data:`NEXT_UNTESTED_MAJOR`.

    Args:
        version (str, optional): the version to check. Default: None (the installed ``transformers.__version__``).
    """
    version = transformers.__version__ if version is None else version
    if Version(version) < Version(MIN_TRANSFORMERS):
        raise ImportError(
            f"nalaformer's language model needs transformers>={MIN_TRANSFORMERS},<{NEXT_UNTESTED_MAJOR} (its "
            f"cache and config APIs), found {version}; run `pip install 'nalaformer[lm]'`"
        )
    if Version(version) >= Version(NEXT_UNTESTED_MAJOR):
        warnings.warn(
            f"nalaformer's language model is tested with transformers>={MIN_TRANSFORMERS},<{NEXT_UNTESTED_MAJOR}; "
            f"found {version}, whose cache/generation API may differ",
            stacklevel=2,
        )


# transformers renamed the cache field of model outputs (and generate's keyword) from `past_key_values` to `cache`
# during 5.x; the model accepts both keywords and fills whichever field the installed version defines.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
