"""Save a converted model and load it back offline.

The folder holds ``config.json`` (the pretrained model's own config), ``model.safetensors`` (every weight, pretrained
names unchanged plus the conversion's new parameters; shared tensors stored once), ``conversion.json`` (the model
class and the :class:`ConversionSpec`) and, when given, the tokenizer files. Loading builds the class from the config,
converts it with the same spec and loads the weights strictly: no download, no pretrained weights needed.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from nalaformer.convert.stages import finish_recovery
from nalaformer.convert.swap import ConversionError, ConversionSpec, linearize

FORMAT_VERSION = 1
CONVERSION_FILE = "conversion.json"
WEIGHTS_FILE = "model.safetensors"
_TRUSTED_PREFIXES = ("transformers.", "nalaformer.")


def save_pretrained(model: Any, path: str | Path, *, tokenizer: Any = None) -> Path:
    """Write the converted ``model`` (LoRA merged first) to the folder ``path``; returns it."""
    model = finish_recovery(model)
    spec = getattr(model, "nalaformer_conversion", None)
    if spec is None:
        raise ConversionError(f"{type(model).__name__} is not a converted model (call linearize() first)")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise ConversionError(f"{type(model).__name__} has no transformers config to save")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    save_model(model, str(path / WEIGHTS_FILE))
    cls = type(model)
    record = {"format_version": FORMAT_VERSION, "class": f"{cls.__module__}.{cls.__qualname__}", "spec": spec}
    (path / CONVERSION_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _model_class(name: str) -> type[nn.Module]:
    module_name, _, qualname = name.rpartition(".")
    if not name.startswith(_TRUSTED_PREFIXES) or not module_name:
        raise ConversionError(f"conversion.json names class {name!r}; only transformers.* and nalaformer.* load")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as error:
        raise ConversionError(f"conversion.json names class {name!r}, which cannot be imported: {error}") from None
    return cls


def from_pretrained(path: str | Path) -> nn.Module:
    """Load a folder written by :func:`save_pretrained` (offline; ``eval()`` mode, the converted attention on)."""
    path = Path(path)
    record_file = path / CONVERSION_FILE
    if not record_file.is_file():
        raise FileNotFoundError(f"{str(record_file)!r} is missing: not a converted-model folder")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if record.get("format_version") != FORMAT_VERSION:
        raise ConversionError(f"{str(record_file)!r}: format_version {record.get('format_version')!r}, "
                              f"expected {FORMAT_VERSION}")  # fmt: skip
    cls = _model_class(record["class"])
    config = cls.config_class.from_pretrained(path)
    model = cls(config)
    linearize(model, ConversionSpec.from_dict(record["spec"]))
    load_model(model, str(path / WEIGHTS_FILE), strict=True)
    return model.eval()
