"""``nalaformer info``: parameters and multiply-adds of the vision variants for each mixer layout.

Counts come from the models themselves (``FlopCounterMode`` on the meta device); MACs = FLOPs / 2, the unit of the
published "GFLOPs". Deviations from the published figures are shown for the released (hybrid) layout.
"""

from __future__ import annotations

import argparse
import json

from nalaformer.models.vision.complexity import complexity_rows

DEFAULT_VARIANTS = ["xt", "t", "s", "b", "l"]
DEFAULT_LAYOUTS = ["released", "nala", "softmax"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer info``."""
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="xt t s b l nano (default: xt-l)")
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=DEFAULT_LAYOUTS,
        help="released (NaLa stages 1-2, softmax 3-4), nala, softmax or any mixer name (default: %(default)s)",
    )
    parser.add_argument("--size", type=int, nargs="+", default=[224], help="input H [W] (default: 224)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _delta(value: int, published: int | None) -> str:
    return "" if published is None else f"{100 * (value / published - 1):+.1f}%"


def format_table(rows: list[dict[str, object]]) -> str:
    """Fixed-width table: variant, layout, params (M), Δ vs published, GMACs, Δ vs published."""
    header = f"{'variant':<16} {'layout':<10} {'params (M)':>10} {'vs paper':>9} {'GMACs':>8} {'vs paper':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['variant']:<16} {row['layout']:<10} {row['params'] / 1e6:>10.2f} "
            f"{_delta(row['params'], row['published_params']):>9} {row['macs'] / 1e9:>8.3f} "
            f"{_delta(row['macs'], row['published_macs']):>9}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON lines); returns the exit status."""
    if len(args.size) not in (1, 2) or min(args.size) <= 0:
        raise ValueError(f"--size takes H or H W (positive), got {args.size}")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    rows = complexity_rows(args.variants, args.layouts, size)
    if args.json:
        print("\n".join(json.dumps(row) for row in rows))
    else:
        print(f"input {size}; MACs = FLOPs / 2 counted by torch.utils.flop_counter; 'vs paper' for the released layout")
        print(format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nalaformer info", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
