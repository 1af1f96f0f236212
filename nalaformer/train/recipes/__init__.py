"""Training recipes: one module per task, each with ``default_config()``, ``run(config)`` and ``evaluate_run(...)``.

``RECIPES`` maps the ``nalaformer train <name>`` sub-command to its module (imported when used).
"""

from __future__ import annotations

import importlib
from types import ModuleType

RECIPES: dict[str, tuple[str, str]] = {
    "image": ("nalaformer.train.recipes.image", "image classification (default: NaLaFormer nano on MNIST-5k)"),
    "image-fashion": ("nalaformer.train.recipes.image_fashion", "image classification, full Fashion-MNIST preset"),
    "lm": ("nalaformer.train.recipes.lm", "causal language model (default: NaLa LM on Shakespeare, characters)"),
}


def load_recipe(name: str) -> ModuleType:
    """The recipe module of ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name][0])


__all__ = ["RECIPES", "load_recipe"]
