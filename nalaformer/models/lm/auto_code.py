"""Make a ``save_pretrained`` folder loadable by transformers' Auto classes in a process that never imported
nalaformer, the way transformers loads any model that is not part of it: ``auto_map`` in ``config.json`` names a
module inside the folder, and ``trust_remote_code=True`` lets transformers import it.

The module written here holds no model code: it imports the classes from the installed package, so a folder never
carries a stale copy of the model, and ``isinstance`` checks against ``nalaformer``'s classes keep working. Without
``trust_remote_code=True`` transformers refuses with its own message asking for it; without nalaformer installed it
names the missing package. In a process that has imported ``nalaformer.models.lm`` the Auto classes know ``"nala"``
and need neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["AUTO_CODE_FILE", "AUTO_MAP", "write_auto_code"]

AUTO_CODE_FILE = "modeling_nala.py"
AUTO_MAP = {
    "AutoConfig": "modeling_nala.NaLaConfig",
    "AutoModel": "modeling_nala.NaLaModel",
    "AutoModelForCausalLM": "modeling_nala.NaLaForCausalLM",
}

_AUTO_CODE = """\
# Written by nalaformer's save_pretrained so that transformers' Auto classes can load this folder with
# trust_remote_code=True. The model code is not copied: it comes from the installed package
# (pip install 'nalaformer[lm]'), and importing it registers "nala" with the Auto classes.
from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM, NaLaModel

__all__ = ["NaLaConfig", "NaLaForCausalLM", "NaLaModel"]
"""


def write_auto_code(folder: str | os.PathLike) -> None:
    """Write :data:`AUTO_CODE_FILE` into ``folder`` and add :data:`AUTO_MAP` to its ``config.json``.

    Runs after transformers' ``save_pretrained``; it overwrites a copy of the package's own source that transformers
    writes under the same name once the model was loaded through ``trust_remote_code``.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: call save_pretrained on the model first")
    (folder / AUTO_CODE_FILE).write_text(_AUTO_CODE, encoding="utf-8")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = dict(AUTO_MAP)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
