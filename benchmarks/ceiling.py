"""The dense ceiling: the same network trained on the full reference mask, same time budget.

For each case the shipped training (`Trainer`, the default `TrainConfig` with --budget seconds)
gets every voxel of the reference as a label (background included), then predicts without
any strokes (no stroke-region filter, no hard constraints: those would read the answer). The
mean Dice it reaches is what one round of this network can give on this scan; the
`benchmarks/accuracy.py` figures can be read as a percentage of it. The same model is scored
with and without its forest and the boundary refinement.

    python benchmarks/ceiling.py                       # every case, seeds 0 1 2, 60 s
    python benchmarks/ceiling.py --cases mr_abdomen --seeds 0 --budget 30

Writes benchmarks/results/ceiling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402

VARIANTS = {"default": {}, "without forest": {"forest": False}, "without refinement": {"refine": False},
            "network alone": {"forest": False, "refine": False}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=TrainConfig.time_budget)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ceiling.json"))
    args = ap.parse_args(argv)
    rows = []
    for name in args.cases:
        image, geom, ref, names = load_case(name)
        classes = list(range(1, len(names)))
        for seed in args.seeds:
            cfg = TrainConfig(time_budget=args.budget, max_steps=None, seed=seed, device=args.device)
            res = run_to_end(Trainer(image, ref + 1, cfg, spacing=geom.spacing, class_names=names).run())
            row = {"case": name, "seed": seed, "steps": res.steps}
            base = PredictConfig(device=args.device, uncertainty=False)
            for label, change in VARIANTS.items():
                pred = predict_volume(res.model, image, dataclasses.replace(base, **change), None, geom.spacing).labels
                dice = dice_per_class(pred, ref, classes)
                row[label] = {"dice": dice, "mean_dice": float(np.mean(list(dice.values())))}
            rows.append(row)
            print(f"{name} seed {seed}: {res.steps} steps; " + "; ".join(f"{k} {row[k]['mean_dice']:.3f}" for k in VARIANTS),
                  flush=True)
    print("\nmean Dice over seeds (± sd): " + " | ".join(VARIANTS))
    for name in args.cases:
        of = [r for r in rows if r["case"] == name]
        print(f"{name:<18}" + "".join(f"{np.mean([r[k]['mean_dice'] for r in of]):>9.3f} ±{np.std([r[k]['mean_dice'] for r in of]):.3f}"
                                      for k in VARIANTS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
