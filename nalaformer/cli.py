"""The ``nalaformer`` command.

Sub-commands live beside the code they run. To add one, write a module with ``add_arguments(parser)`` and
``run(args) -> int`` and add a row to :data:`COMMANDS`; the module is imported only when its command is used, so
``nalaformer --help`` stays fast and optional dependencies stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("nalaformer.train.train_command", "train a model: `train image` (classification) or `train lm`"),
    "eval": ("nalaformer.train.eval_command", "evaluate a trained run's checkpoint on its validation or test data"),
    "generate": ("nalaformer.train.generate_command", "continue a prompt with a trained language model"),
    "harness": ("nalaformer.train.harness", "score a trained language model on lm-evaluation-harness tasks"),
    "diagnose": ("nalaformer.diagnostics.cli", "attention entropy vs query norm, NaLa exponent, sign agreement"),
    "info": ("nalaformer.models.info", "parameters and MACs of the vision variants for each mixer layout"),
    "reproduce": ("nalaformer.reproduce.cli", "small-scale reproduction study of the paper's claims, with a report"),
    "bench": ("nalaformer.bench.cli", "operator, decoding, model and roofline benchmarks (CSV + PNG per device)"),
    "linearize": (
        "nalaformer.convert.command",
        "convert a pretrained softmax transformer into a linear-attention model",
    ),
}

# Errors that describe a problem with the input (bad option, missing data, NaN loss): printed as one line, no
# traceback, unless --debug is given.
USER_ERRORS = (ValueError, FileNotFoundError, ModuleNotFoundError, FloatingPointError)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(
        prog="nalaformer",
        description="Norm-Aware Linear Attention (NaLa): train, evaluate and study NaLaFormer models.",
        epilog="Run `nalaformer COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(subparser)
    return parser


def _command_name(argv: list[str]) -> str | None:
    for argument in argv:
        if not argument.startswith("-"):
            return argument if argument in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nalaformer`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as error:
        # Ctrl-C: one line saying where it stopped (the training engine names the checkpoint to resume from)
        print(f"nalaformer {args.command}: {error or 'interrupted'}", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"nalaformer {args.command}: error: {error}", file=sys.stderr)
        return 1
