"""Boundary-refinement settings sweep: the same trained network, its mask refined several ways.

The network trains a fixed number of steps (not seconds), so the figures do not depend on the
machine's speed; the benchmark protocol otherwise (simulated strokes on k slices per axis,
corrections on the refined default mask, region filter on). For each round the unrefined mask
and each variant of ``PredictConfig`` (pairwise weight, iterations, neighbourhood radius) are
scored against the reference.

    python benchmarks/refine_sweep.py [--cases ...] [--k 3 1] [--seeds 0 1] [--steps 300]

Writes benchmarks/results/refine_sweep.{json,log}-style lines on stdout and the JSON file.
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
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402

VARIANTS = {
    "w9_i5": dict(refine_weight=9.0, refine_iterations=5),
    "w9_i10": dict(refine_weight=9.0, refine_iterations=10),
    "w4_i10": dict(refine_weight=4.0, refine_iterations=10),
    "w15_i10 (default)": {},
    "w15_i5": dict(refine_iterations=5),
    "w15_i10_r1mm": dict(refine_radius_mm=1.0),
}


def _score(model, image, geom, ref, classes, y, pcfg):
    """Mask, mean Dice and seconds of one prediction setting."""
    t = time.perf_counter()
    mask = predict_volume(model, image, pcfg, y, geom.spacing).labels
    d = dice_per_class(mask, ref, classes)
    return mask, float(np.mean(list(d.values()))), time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--k", nargs="+", type=int, default=[3, 1])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="training steps per round (default 300)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "refine_sweep.json"))
    args = ap.parse_args(argv)
    rows = []
    for case in args.cases:
        image, geom, ref, names = load_case(case)
        features = FeatureCache()  # the forest's filters of this scan, once for every round (as a session keeps them)
        classes = list(range(1, len(names)))
        for k in args.k:
            for seed in args.seeds:
                scribbles = simulate_scribbles(ref, k, seed=seed)
                corrections, model = None, None
                for r in range(args.rounds + 1):
                    y, _ = merge_annotations(scribbles, corrections)
                    cfg = TrainConfig(max_steps=args.steps, time_budget=None, seed=seed + r)
                    model = run_to_end(Trainer(image, scribbles, cfg, corrections=corrections, init=model,
                                               spacing=geom.spacing, class_names=names, features=features).run()).model
                    base = PredictConfig(device="cpu", uncertainty=False)
                    row = {"case": case, "k": k, "seed": seed, "round": r}

                    _, row["unrefined"], _ = _score(model, image, geom, ref, classes, y, dataclasses.replace(base, refine=False))
                    default_mask = None
                    for name, change in VARIANTS.items():
                        mask, row[name], row["s " + name] = _score(model, image, geom, ref, classes, y,
                                                                   dataclasses.replace(base, **change))
                        if not change:
                            default_mask = mask
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    if r < args.rounds:
                        new = simulate_corrections(default_mask, ref, k, seed=seed + 17 * (r + 1))
                        corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    print("\ngain in mean Dice over the unrefined mask of the same network: min / median / mean / max (runs below 0)")
    for name in VARIANTS:
        d = np.array([x[name] - x["unrefined"] for x in rows])
        print(f"{name:<20} {d.min():+.3f} / {np.median(d):+.3f} / {d.mean():+.3f} / {d.max():+.3f} ({int((d < 0).sum())} of {d.size})")
    for case in args.cases:
        d = np.array([x["w15_i10 (default)"] - x["unrefined"] for x in rows if x["case"] == case])
        print(f"  default on {case:<18} min {d.min():+.3f} median {np.median(d):+.3f} max {d.max():+.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
