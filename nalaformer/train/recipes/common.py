"""What the recipes share: building a model from a name, the run folder and reading a finished run back."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

RUN_FACT_KEYS = ("recipe", "run", "dataset")


def resolve_callable(name: str, default_module: str) -> Callable[..., Any]:
    """``"entrypoint"`` → ``default_module.entrypoint``; ``"package.module:callable"`` → that callable.

    Args:
        name: the entrypoint name, or ``module:callable`` for users' own models.
        default_module: module that holds the named entrypoints (imported lazily).
    """
    module_name, _, attribute = name.rpartition(":") if ":" in name else (default_module, ":", name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"cannot import {module_name!r} for the model {name!r}: {error}") from error
    builder = getattr(module, attribute, None)
    if builder is None or not callable(builder):
        known = sorted(n for n in getattr(module, "__all__", dir(module)) if not n.startswith("_"))
        raise ValueError(f"model name {name!r}: {module_name} has no callable {attribute!r}; known names: {known}")
    return builder


def parse_options(text: str, field_name: str) -> dict[str, Any]:
    """The JSON object of a ``--model.options '{"key": value}'`` style field (``ValueError`` naming the field)."""
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{field_name} must be a JSON object, got {text!r} ({error})") from error
    if not isinstance(options, dict):
        raise ValueError(f"{field_name} must be a JSON object, got {text!r}")
    return options


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_run_dir(recipe: str, root: str | Path = "runs") -> str:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>``."""
    return str(Path(root) / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}")


def read_run_config(run_dir: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(recipe name, configuration sections, run facts)`` from a run folder's ``config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: {str(run_dir)!r} is not a nalaformer run folder")
    payload = json.loads(path.read_text(encoding="utf-8"))
    facts = {key: payload.pop(key) for key in RUN_FACT_KEYS if key in payload}
    recipe = facts.get("recipe")
    if recipe is None:
        raise ValueError(f"{str(path)!r} names no recipe; it was not written by `nalaformer train`")
    return recipe, payload, facts
