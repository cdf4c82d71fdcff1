"""Tiles vs MONAI's sliding window: the same trained model, both inferers, Dice against the reference.

For each case and seed a model is trained once (strokes on --k slices per axis, --budget s),
then predicted with ``inferer="tiles"`` and ``inferer="sliding_window"`` (everything else the
defaults: forest fusion, CRF, stroke-region filter). Reports both Dice, the Dice between the
two masks and both prediction times (same run, same machine).

    python benchmarks/inferer_probe.py --seeds 0 1 --out benchmarks/results/inferer_probe.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.core.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.simulated_annotator import simulate_scribbles  # noqa: E402
from napari_sparseseg.core.train import Trainer  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "inferer_probe.json"))
    args = ap.parse_args(argv)
    rows = []
    for case in args.cases:
        image, geom, ref, names = load_case(case)
        classes = list(range(1, len(names)))
        for seed in args.seeds:
            strokes = simulate_scribbles(ref, args.k, seed=seed)
            cfg = TrainConfig(time_budget=args.budget, max_steps=None, seed=seed, device="cpu")
            model = run_to_end(Trainer(image, strokes, cfg, spacing=geom.spacing, class_names=names).run()).model
            row = {"case": case, "seed": seed}
            masks = {}
            for inferer in ("tiles", "sliding_window"):
                pcfg = dataclasses.replace(PredictConfig(device="cpu", uncertainty=False), inferer=inferer)
                t = time.perf_counter()
                masks[inferer] = predict_volume(model, image, pcfg, strokes, geom.spacing).labels
                row[inferer] = {"seconds": time.perf_counter() - t,
                                "dice": float(np.mean(list(dice_per_class(masks[inferer], ref, classes).values())))}
            row["agreement"] = float(np.mean(list(dice_per_class(masks["tiles"], masks["sliding_window"], classes).values())))
            print(f"{case} seed {seed}: tiles {row['tiles']['dice']:.3f} ({row['tiles']['seconds']:.1f} s)  sliding window "
                  f"{row['sliding_window']['dice']:.3f} ({row['sliding_window']['seconds']:.1f} s)  agreement "
                  f"{row['agreement']:.3f}", flush=True)
            rows.append(row)
    diff = [r["tiles"]["dice"] - r["sliding_window"]["dice"] for r in rows]
    print(f"tiles - sliding window: mean {np.mean(diff):+.4f}, min {np.min(diff):+.4f}, max {np.max(diff):+.4f}")
    Path(args.out).write_text(json.dumps({"k": args.k, "budget_s": args.budget, "rows": rows,
                                          "mean_difference": float(np.mean(diff))}, indent=1))


if __name__ == "__main__":
    main()
