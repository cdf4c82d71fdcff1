"""Two ways of predicting with the same trained model, Dice against the reference.

``--compare inferer``: ``inferer="tiles"`` against ``"sliding_window"``; ``--compare precision``:
``precision="auto"`` (bfloat16 on CPUs with native bfloat16) against ``"float32"``. For each case
and seed a model is trained once (strokes on --k slices per axis, --budget s), then predicted both
ways (everything else the defaults: forest fusion, CRF, stroke-region filter). Reports both Dice,
the Dice between the two masks and both prediction times (same run, same machine).

    python benchmarks/inferer_probe.py --seeds 0 1 --out benchmarks/results/inferer_probe.json
    python benchmarks/inferer_probe.py --compare precision --seeds 0 1 --out benchmarks/results/precision_probe.json
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
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--compare", choices=("inferer", "precision"), default="inferer")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "inferer_probe.json"))
    args = ap.parse_args(argv)
    ways = ("tiles", "sliding_window") if args.compare == "inferer" else ("auto", "float32")
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
            for way in ways:
                pcfg = dataclasses.replace(PredictConfig(device="cpu", uncertainty=False), **{args.compare: way})
                t = time.perf_counter()
                masks[way] = predict_volume(model, image, pcfg, strokes, geom.spacing).labels
                row[way] = {"seconds": time.perf_counter() - t,
                            "dice": float(np.mean(list(dice_per_class(masks[way], ref, classes).values())))}
            row["agreement"] = float(np.mean(list(dice_per_class(masks[ways[0]], masks[ways[1]], classes).values())))
            print(f"{case} seed {seed}: " + "  ".join(f"{w} {row[w]['dice']:.3f} ({row[w]['seconds']:.1f} s)" for w in ways)
                  + f"  agreement {row['agreement']:.4f}", flush=True)
            rows.append(row)
    diff = [r[ways[0]]["dice"] - r[ways[1]]["dice"] for r in rows]
    print(f"{ways[0]} - {ways[1]}: mean {np.mean(diff):+.4f}, min {np.min(diff):+.4f}, max {np.max(diff):+.4f}; "
          f"agreement mean {np.mean([r['agreement'] for r in rows]):.4f}")
    Path(args.out).write_text(json.dumps({"k": args.k, "budget_s": args.budget, "compare": args.compare, "rows": rows,
                                          "mean_difference": float(np.mean(diff))}, indent=1))


if __name__ == "__main__":
    main()
