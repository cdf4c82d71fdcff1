"""The held-out-stroke estimate against the true Dice.

For each case and seed: strokes on --k slices per axis, then --rounds correction rounds (the
simulated annotator corrects the k slices per axis with most errors), the network warm-started
and bounded by --steps steps a round (not time, so the machine's load does not matter). Each
round holds one in five stroke pieces of each class out (rotating, as the widget's "Estimate
quality"), predicts with the defaults (forest, CRF, stroke-region filter; without the held-out
strokes) and compares, per class, the Dice on the held-out strokes with the Dice against the
full reference. Reports the correlation, the mean absolute error and the mean bias.

    python benchmarks/estimate.py --seeds 0 1 2 --out benchmarks/results/estimate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.annotations.holdout import holdout_dice  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "estimate.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        image, geom, ref, names = load_case(case)
        features = FeatureCache()  # the forest's filters of this scan, once for every round (as a session keeps them)
        for seed in args.seeds:
            scribbles, corrections, model = simulate_scribbles(ref, args.k, seed=seed), None, None
            for r in range(args.rounds + 1):
                cfg = TrainConfig(max_steps=args.steps, time_budget=None, seed=seed + r, device="cpu", holdout_every=5,
                                  holdout_round=r)
                trainer = Trainer(image, scribbles, cfg, corrections=corrections, init=model, spacing=geom.spacing,
                                  class_names=names, features=features)
                model = run_to_end(trainer.run()).model
                pred = predict_volume(model, image, PredictConfig(device="cpu"), trainer.y, geom.spacing, features=features).labels
                est = {} if trainer.heldout is None else holdout_dice(pred, trainer.y_all, trainer.heldout, len(names))
                true = dice_per_class(pred, ref, list(range(1, len(names))))
                for c, e in est.items():
                    rows.append({"case": case, "seed": seed, "round": r, "class": names[c], "estimate": e.dice,
                                 "spread": e.spread, "pieces": e.pieces, "true": float(true[c])})
                print(f"[{time.perf_counter() - t0:6.0f}s] {case} seed {seed} round {r}: " + "  ".join(
                    f"{names[c]} {e.dice:.2f}±{e.spread:.2f} (true {true[c]:.2f})" for c, e in est.items()), flush=True)
                out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
                if r < args.rounds:
                    new = simulate_corrections(pred, ref, args.k, seed=seed + 17 * (r + 1))
                    corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    est, true = np.array([r["estimate"] for r in rows]), np.array([r["true"] for r in rows])
    summary = {"pairs": len(rows), "pearson_r": float(np.corrcoef(est, true)[0, 1]), "mae": float(np.mean(np.abs(est - true))),
               "mean_bias": float(np.mean(est - true))}
    for case in args.cases:
        m = [i for i, r in enumerate(rows) if r["case"] == case]
        if len(m) > 2:
            summary[case] = {"pearson_r": float(np.corrcoef(est[m], true[m])[0, 1]), "mae": float(np.mean(np.abs(est[m] - true[m]))),
                             "mean_bias": float(np.mean(est[m] - true[m]))}
    print(json.dumps(summary, indent=1))
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
