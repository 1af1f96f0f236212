"""Load a trained language model and its tokenizer from a run folder, a checkpoint or a ``save_pretrained`` folder.

Shared by ``nalaformer generate`` and the lm-evaluation-harness adapter (``nalaformer.train.harness``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_model_and_tokenizer(
    checkpoint: str | Path, *, ema: bool = False, tokenizer: str | None = None
) -> tuple[Any, Any]:
    """``(NaLaForCausalLM in eval mode, tokenizer)`` from a run, checkpoint or ``save_pretrained`` folder.

    Args:
        checkpoint (str | Path): a run folder of ``nalaformer train lm`` (its newest valid checkpoint), one of its
            ``checkpoints/step_*`` folders, or a ``NaLaForCausalLM.save_pretrained`` folder (tokenizer in
            ``tokenizer/`` or given by ``tokenizer``).
        ema (bool): run folders: load the EMA weights. Default: False.
        tokenizer (str, optional): ``"byte"`` or ``"gpt2"`` for a ``save_pretrained`` folder without a
            ``tokenizer/`` subfolder. Default: None.
    """
    from nalaformer.data.tokenizers import build_tokenizer, load_tokenizer
    from nalaformer.models.lm import NaLaForCausalLM

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist")
    if _is_pretrained_folder(path):
        model = NaLaForCausalLM.from_pretrained(path)
        if (path / "tokenizer").is_dir():
            text_tokenizer = load_tokenizer(path / "tokenizer")
        elif tokenizer is not None:
            text_tokenizer = build_tokenizer(tokenizer)
        else:
            raise ValueError(
                f"{str(path)!r} has no tokenizer/ folder; pass --tokenizer byte or --tokenizer gpt2 (a character "
                "vocabulary can only come from the run that built it)"
            )
        return model.eval(), text_tokenizer
    if tokenizer is not None:
        raise ValueError("--tokenizer is only for save_pretrained folders; a run folder brings its own tokenizer")
    return _load_from_run(path, ema=ema)


def _is_pretrained_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "nala"


def _load_from_run(path: Path, *, ema: bool) -> tuple[Any, Any]:
    from nalaformer.models.lm import NaLaForCausalLM
    from nalaformer.train.runs import load_run

    run = load_run(path, ema=ema, recipe="lm", with_data=False)
    if run.tokenizer is None:
        raise ValueError(f"{str(run.run_dir)!r} was trained on MQAR, which has no text tokenizer to generate with")
    if not isinstance(run.model, NaLaForCausalLM):
        raise ValueError(f"the run's model {run.config.model.name!r} is not a NaLaForCausalLM; it has no generate()")
    return run.model, run.tokenizer
