"""Tables of the norm-temperature sweep: mean ± std over seeds per task and mixer, and the verdicts.

    PYTHONPATH=. python benchmarks/norm_temperature/summarise.py FILE.jsonl [FILE.jsonl ...]

Reads the lines written by ``sweep.py`` / ``measure.py`` (one per trained model) and prints markdown: per task the
metric, the saturated share, the spread of p and the entropy-norm correlation r of each mixer, then each NaLa
variant against ``nala``. A difference is called by the study's one rule (``nalaformer.reproduce.seeds``): only when
it exceeds twice its standard error, with at least two seeds on each side; the "noise" printed is that threshold.
For r against softmax's, the difference is of the two distances to softmax's mean r, and its standard error also
counts softmax's own seed spread where the two r lie on opposite sides of it (on the same side softmax's mean
cancels from the difference).
"""

import json
import math
import statistics
import sys
from collections import defaultdict

from nalaformer.reproduce.seeds import STANDARD_ERRORS, seed_call

HIGHER = {"image": True, "mqar": True, "lm": False}
MIXERS = ("softmax", "sign_split_power", "nala", "nala_learned_t", "nala_running_t")
VARIANTS = ("nala_learned_t", "nala_running_t", "sign_split_power")


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def cell(s, digits=3):
    if s is None:
        return "–"
    mean, std, n = s
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f} (1 seed)"


def call(a, b, higher=True):
    """'better' / 'worse' / 'within noise' for a against b, with the gain (positive is better) and the noise."""
    if a is None or b is None or min(a[2], b[2]) < 2:
        return "no noise estimate"
    side = ({"mean": s[0], "std": s[1], "n": s[2]} for s in (a, b))
    judged = seed_call(*side, higher_is_better=higher)
    word = "within noise" if judged["call"] == "within seed noise" else judged["call"]
    return f"{word} ({judged['gain']:+.3f}, noise {judged['noise']:.3f})"


def toward(a, b, softmax):
    """Whether r of a is closer to softmax's mean r than r of b, by more than twice the standard error of that gain,
    ``|r_b - r_s| - |r_a - r_s|``: the spreads of a and b, and softmax's where r_a and r_b lie on opposite sides of
    r_s (there its mean counts twice; on the same side it cancels). No call with fewer than two seeds of a or b, or
    of softmax where its spread counts."""
    if a is None or b is None or softmax is None or min(a[2], b[2]) < 2:
        return "no noise estimate"
    target, target_std, target_n = softmax["norm_pearson_entropy_q_norm"]
    gain = abs(b[0] - target) - abs(a[0] - target)
    weight = math.copysign(1.0, a[0] - target) - math.copysign(1.0, b[0] - target)
    if weight and target_n < 2:
        return "no noise estimate"
    variance = a[1] ** 2 / a[2] + b[1] ** 2 / b[2] + (weight**2 * target_std**2 / target_n if weight else 0.0)
    noise = STANDARD_ERRORS * math.sqrt(variance)
    if abs(gain) <= noise:
        return f"within noise (closer by {gain:+.3f}, noise {noise:.3f})"
    return f"{'toward' if gain > 0 else 'away from'} softmax (closer by {gain:+.3f}, noise {noise:.3f})"


def main(paths):
    runs = defaultdict(dict)
    for path in paths:
        with open(path) as lines:
            for line in lines:
                r = json.loads(line)
                if "error" not in r:
                    runs[(r["task"], r["mixer"])][r["seed"]] = r  # a later file's run of the same seed wins
    tasks = sorted({t for t, _ in runs}, key=["image", "mqar", "lm"].index)
    print("| task | mixer | seeds | metric | saturated | mean p | std p | r(H, ‖q‖) |")
    print("|---|---|---|---|---|---|---|---|")
    table = {}
    for task in tasks:
        for mixer in MIXERS:
            rs = runs.get((task, mixer), {})
            if not rs:
                continue
            row = {
                k: stats([r.get(k) for r in rs.values()])
                for k in (
                    "metric",
                    "norm_saturated_fraction",
                    "norm_exponent_mean",
                    "norm_exponent_std",
                    "norm_pearson_entropy_q_norm",
                )
            }
            table[task, mixer] = row
            print(
                f"| {task} | {mixer} | {','.join(map(str, sorted(rs)))} | "
                + " | ".join(cell(row[k]) for k in row)
                + " |"
            )
    print()
    print("| task | variant vs nala | metric | r(H, ‖q‖) against softmax's | r of softmax |")
    print("|---|---|---|---|---|")
    for task in tasks:
        nala = table.get((task, "nala"))
        soft = table.get((task, "softmax"))
        for mixer in VARIANTS:
            row = table.get((task, mixer))
            if row is None or nala is None:
                continue
            r_call = toward(row["norm_pearson_entropy_q_norm"], nala["norm_pearson_entropy_q_norm"], soft)
            soft_r = cell(soft["norm_pearson_entropy_q_norm"]) if soft else "–"
            metric_call = call(row["metric"], nala["metric"], HIGHER[task])
            print(f"| {task} | {mixer} | {metric_call} | {r_call} | {soft_r} |")


if __name__ == "__main__":
    main(sys.argv[1:])
