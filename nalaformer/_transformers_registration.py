"""Register the ``"nala"`` model type with transformers' Auto classes, without paying for transformers up front.

``import nalaformer`` calls :func:`install`. If transformers is already imported, the language model is registered at
once; otherwise a one-shot import hook registers it right after transformers is first imported (by the user, by
``AutoModelForCausalLM``, or by a tokenizer). Either way, ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``
know ``"nala"`` whenever they are reachable, while ``import nalaformer`` itself imports neither torch nor
transformers (the registration costs what importing ``nalaformer.models.lm`` costs: about 3 s on the project's
2-core machines, mostly transformers' modeling code).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_LM_MODULE = "nalaformer.models.lm"


def register_now() -> None:
    """Import the language model, whose import registers it; warn (never raise) if that fails."""
    if _LM_MODULE in sys.modules:
        # imported (or being imported) already: the module registers itself when it finishes
        return
    try:
        importlib.import_module(_LM_MODULE)
    except Exception as error:  # a broken optional integration must not break `import transformers`
        warnings.warn(
            f"nalaformer could not register its 'nala' language model with transformers' Auto classes: {error}",
            stacklevel=2,
        )


class _RegisterAfterTransformersImport(importlib.abc.MetaPathFinder):
    """A one-shot finder: lets the normal finders locate transformers, then runs :func:`register_now` after the
    package's ``__init__`` has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            try:
                original_exec(module)
            finally:
                # the loader instance belongs to this import only; give it its class's method back
                del loader.exec_module
            register_now()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now if transformers is imported, else once it is; nothing if transformers is not installed."""
    if "transformers" in sys.modules:
        # None marks a module blocked from import (treated as not installed)
        if sys.modules["transformers"] is not None:
            register_now()
    elif importlib.util.find_spec("transformers") is not None and not any(
        isinstance(finder, _RegisterAfterTransformersImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _RegisterAfterTransformersImport())
