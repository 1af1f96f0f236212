"""``nalaformer train image-fashion``: the image recipe with the ``"fashion-mnist"`` preset as its defaults.

NaLaFormer nano on full Fashion-MNIST (54,000 train / 6,000 val / 10,000 test), 2,000 steps of 128. Runs are
ordinary image runs (``config.json`` names the ``image`` recipe), so ``nalaformer eval`` reads them back.
"""

from __future__ import annotations

from nalaformer.train.recipes.image import ImageRecipeConfig, config_from_run, evaluate_run, run
from nalaformer.train.recipes.image_presets import preset_config


def default_config() -> ImageRecipeConfig:
    """The defaults of ``nalaformer train image-fashion``."""
    return preset_config("fashion-mnist")


__all__ = ["config_from_run", "default_config", "evaluate_run", "run"]
