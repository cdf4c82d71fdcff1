"""Two ``benchmarks/accuracy.py`` results side by side: per case and round, the mean Dice of each, paired.

    .venv/bin/python benchmarks/compare_accuracy.py BASELINE.json OTHER.json
    .venv/bin/python benchmarks/compare_accuracy.py A.json,B.json C.json,D.json   # runs split over processes

Each side may be several files joined by commas (a sweep run as several processes). Prints, per
case and round, the mean U-Net Dice over the seeds both files hold, the difference (other - baseline), the median steps of each and the round's own forest (of the other run); then
the paired differences over every case, seed and round, the case-rounds below their own forest
in each run, the smallest change at a correction round in each, and the median steps of first
and of correction rounds in each (what a round's wall time scales with, whatever the machine).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def rows(paths: str) -> dict:
    """``(case, k, seed, round) -> row`` of accuracy.py JSONs (several joined by commas)."""
    out = {}
    for path in paths.split(","):
        with open(path) as f:
            for case, block in json.load(f)["cases"].items():
                for r in block["rows"]:
                    out[(case, r["k"], r["seed"], r["round"])] = r
    return out


def below_forest(run: dict, keys=None) -> list:
    """Keys of the case-rounds whose U-Net Dice is below their own forest's (same strokes, same run)."""
    return [x for x in (sorted(run) if keys is None else keys)
            if "forest" in run[x] and run[x]["unet"]["mean_dice"] < run[x]["forest"]["mean_dice"]]


def largest_fall(run: dict, keys=None) -> tuple | None:
    """``(change, key)`` of the correction round whose Dice changed least from the round before (None: no such round)."""
    falls = [(run[x]["unet"]["mean_dice"] - run[x[:3] + (x[3] - 1,)]["unet"]["mean_dice"], x)
             for x in (run if keys is None else keys) if x[3] > 0 and x[:3] + (x[3] - 1,) in run]
    return min(falls) if falls else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline")
    ap.add_argument("other")
    args = ap.parse_args(argv)
    base, other = rows(args.baseline), rows(args.other)
    keys = sorted(set(base) & set(other))
    dice = {name: {k: run[k]["unet"]["mean_dice"] for k in keys} for name, run in (("base", base), ("other", other))}
    print(f"{'case':<18}{'k':>3}{'round':>7}{'baseline':>10}{'other':>8}{'diff':>8}   steps (baseline/other)   its forest")
    for case, k in dict.fromkeys((key[0], key[1]) for key in keys):
        for rnd in sorted({key[3] for key in keys if key[:2] == (case, k)}):
            ks = [key for key in keys if key[:2] == (case, k) and key[3] == rnd]
            b, o = np.mean([dice["base"][x] for x in ks]), np.mean([dice["other"][x] for x in ks])
            steps = f"{np.median([base[x]['unet']['steps'] for x in ks]):.0f}/{np.median([other[x]['unet']['steps'] for x in ks]):.0f}"
            forest = np.mean([other[x]["forest"]["mean_dice"] for x in ks if "forest" in other[x]] or [np.nan])
            print(f"{case:<18}{k:>3}{rnd:>7}{b:>10.3f}{o:>8.3f}{o - b:>+8.3f}   {steps:>21}   {forest:10.3f}")
    diffs = [dice["other"][x] - dice["base"][x] for x in keys]
    print(f"paired difference over {len(diffs)} case-rounds: mean {np.mean(diffs):+.4f}, sd {np.std(diffs):.4f}, "
          f"range {min(diffs):+.3f} .. {max(diffs):+.3f}")
    for name, run in (("baseline", base), ("other", other)):
        below = [f"{x[0]} k{x[1]} seed {x[2]} round {x[3]}: {run[x]['unet']['mean_dice']:.3f} < {run[x]['forest']['mean_dice']:.3f}"
                 for x in below_forest(run, keys)]
        worst = largest_fall(run, keys)
        steps = [np.median([run[x]["unet"]["steps"] for x in keys if (x[3] > 0) == later] or [np.nan]) for later in (False, True)]
        print(f"{name}: median steps, first / correction rounds: {steps[0]:.0f} / {steps[1]:.0f}")
        print(f"{name}: below its own forest: {'; '.join(below) or 'none'}")
        if worst:
            print(f"{name}: smallest change at a correction round {worst[0]:+.3f} ({worst[1][0]} k{worst[1][1]} seed "
                  f"{worst[1][2]} round {worst[1][3]})")


if __name__ == "__main__":
    main()
