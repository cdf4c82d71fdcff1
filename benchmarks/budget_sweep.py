"""Dice against wall seconds per round over several ``benchmarks/accuracy.py`` runs (one per budget).

    .venv/bin/python benchmarks/budget_sweep.py 5=benchmarks/results/sweep_k3_cap5.json \
        15=benchmarks/results/sweep_k3_cap15.json 30=... 60=... [--reference 60]

Each run is labelled by its budget (or any name). Printed per run: the median wall seconds of a
round (training + prediction), per case the mean U-Net Dice of rounds 0/1/2 over the seeds and
the same of the round's own forest, the case-rounds below their own forest, the largest fall at
a correction round; and per case the difference of each run's mean (over rounds and seeds)
from the ``--reference`` run's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.compare_accuracy import below_forest, largest_fall, rows  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=JSON")
    ap.add_argument("--reference", default=None, help="the label the others are compared with (default: the last)")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        runs[label] = rows(path)
    ref = args.reference or list(runs)[-1]
    cases = list(dict.fromkeys(key[0] for run in runs.values() for key in run))
    for label, run in runs.items():
        wall = np.median([r["unet"]["wall_s"] for r in run.values()])
        print(f"\n{label}: {len(run)} case-rounds, median wall {wall:.1f} s per round")
        for case in cases:
            keys = [x for x in run if x[0] == case]
            rounds = sorted({x[3] for x in keys})
            unet = "/".join(f"{np.mean([run[x]['unet']['mean_dice'] for x in keys if x[3] == r]):.3f}" for r in rounds)
            forest = "/".join(f"{np.mean([run[x]['forest']['mean_dice'] for x in keys if x[3] == r]):.3f}" for r in rounds)
            print(f"  {case:<18} U-Net {unet}   its forest {forest}")
        below = [f"{x[0]} seed {x[2]} round {x[3]} ({run[x]['unet']['mean_dice']:.3f} < {run[x]['forest']['mean_dice']:.3f})"
                 for x in below_forest(run)]
        print(f"  below their own forest: {len(below)}" + (": " + "; ".join(below) if below else ""))
        fall = largest_fall(run)
        if fall:
            worst, x = fall
            print(f"  largest change at a correction round: {worst:+.3f} ({x[0]} seed {x[2]} round {x[3]})")
    print(f"\nmean Dice over rounds and seeds, minus the {ref} run's:")
    print(f"  {'case':<18}" + "".join(f"{label:>9}" for label in runs))
    for case in cases:
        base = np.mean([r["unet"]["mean_dice"] for x, r in runs[ref].items() if x[0] == case])
        print(f"  {case:<18}" + "".join(
            f"{np.mean([r['unet']['mean_dice'] for x, r in run.items() if x[0] == case]) - base:>+9.3f}" for run in runs.values()))


if __name__ == "__main__":
    main()
