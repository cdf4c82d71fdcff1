"""Accuracy from simulated strokes: 3-D U-Net (this package) vs an ilastik-style random forest.

For each case and each k, the simulated annotator draws strokes on k slices per axis; each
method trains on them, predicts, and gets correction strokes on its own errors (k slices per
axis with most errors) for the next round. The U-Net is warm-started between rounds and
trains until the plateau rule ends the round (``core/training/monitor.py``), --budget seconds at
most (``--no-plateau``: for the whole budget), on the CPU; the forest is retrained on all strokes.
Each round is also scored by its own forest alone (same strokes, same run: the mask the fusion
must never fall below), and its wall time (training + prediction) is recorded.

    python benchmarks/accuracy.py                      # all cases, k = 1 2 3, 2 correction rounds, 60 s
    python benchmarks/accuracy.py --cases ct_abdomen --k 3 --budget 30
    python benchmarks/accuracy.py --cases mr_abdomen --k 3 --seeds 0 1 2   # spread over annotators
    python benchmarks/accuracy.py --k 1 3 --seeds 0 1 2 --pretrain 120      # first rounds start from pretraining
    python benchmarks/accuracy.py --k 3 --seeds 0 1 2 --correction-budget 15  # short correction rounds
    python benchmarks/accuracy.py --k 3 --no-plateau --budget 15 --no-ablations  # fixed 15 s rounds, faster run

With ``--pretrain SECONDS`` each seed's network is first pretrained on the scan itself (the
self-supervised task of ``core/training/pretrain.py``; in the widget this runs while the user paints),
and round 0 fine-tunes from it: the rounds still get ``--budget`` seconds each, so the
comparison with a run without it is at equal time after pressing Train.

Prints Dice per class per round for both methods and writes benchmarks/results/accuracy.json.
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

from benchmarks.baseline_rf import ilastik_features, rf_segment  # noqa: E402
from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import (
    Precision,  # noqa: E402
    PredictConfig,  # noqa: E402
    PretrainConfig,  # noqa: E402
    TrainConfig,  # noqa: E402
    option_values,  # noqa: E402
)
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.pretrain import Pretrainer  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402


def run_case(name, ks, rounds, budget, seeds, device, log, regions_only=True, refine=True, pretrain=None, forest=True,
             correction_budget=None, plateau=TrainConfig.plateau, ablations=True, time_cap=True, precision: str = TrainConfig.precision,
             pseudo_labels: float = TrainConfig.forest_pseudo_labels):
    """All rounds for each seed and k on one case; the image and the forest's features are computed once."""
    image, geom, ref, names = load_case(name)
    features = FeatureCache()  # the forest's filters of this scan, once for every round (as a session keeps them)
    classes = list(range(1, len(names)))
    t = time.perf_counter()
    feats = ilastik_features(image)
    log(f"{name}: shape {image.shape} spacing {tuple(round(s, 2) for s in geom.spacing)}; RF features {time.perf_counter() - t:.1f}s")
    results = []
    for seed in seeds:
        if len(seeds) > 1:
            log(f"{name}: seed {seed}")
        pre = None
        if pretrain:
            pcfg = PretrainConfig(seconds=pretrain, seed=seed, device=device)
            pre = run_to_end(Pretrainer(image, pcfg, spacing=geom.spacing).run())
            log(f"{name}: pretrained {pre.steps} steps in {pre.seconds:.0f}s ({pre.task})")
        for k in ks:
            scribbles = simulate_scribbles(ref, k, seed=seed)
            corr = {"unet": None, "rf": None}
            model = None
            for r in range(rounds + 1):
                row = {"case": name, "k": k, "round": r, "seed": seed}
                # U-Net
                y, _ = merge_annotations(scribbles, corr["unet"])
                seconds = budget if r == 0 or correction_budget is None else correction_budget
                cfg = TrainConfig(time_budget=seconds if time_cap else None,
                                  max_steps=None if time_cap else TrainConfig.max_steps, seed=seed + r, device=device, forest=forest,
                                  plateau=plateau, precision=precision, forest_pseudo_labels=pseudo_labels)
                res = run_to_end(Trainer(image, scribbles, cfg, corrections=corr["unet"], init=model, spacing=geom.spacing,
                                         class_names=names, pretrained=pre, features=features).run())
                model = res.model
                t0 = time.perf_counter()
                pcfg = PredictConfig(device=device, uncertainty=False, stroke_regions_only=regions_only, refine=refine,
                                     forest=forest)
                pred = predict_volume(model, image, pcfg, y, geom.spacing, features=features).labels
                predict_s = time.perf_counter() - t0
                row["unet"] = {"dice": dice_per_class(pred, ref, classes), "steps": res.steps, "train_s": res.elapsed,
                               "predict_s": predict_s, "wall_s": res.elapsed + predict_s, "stopped_by": res.stopped_by,
                               "labelled_voxels": int((y > 0).sum())}
                if model.forest is not None:  # the round's own forest alone: same strokes, same run
                    fp = features.forest_probabilities(model.forest, image, model.normalization.ranges(image), geom.spacing)
                    forest_mask = fp.argmax(0).astype(np.uint8)
                    keep_stroke_regions(forest_mask, y)
                    row["forest"] = {"dice": dice_per_class(forest_mask, ref, classes)}
                if ablations:
                    # The same network without boundary refinement (ablation in the same run; the
                    # corrections follow the default path above).
                    plain = predict_volume(model, image, dataclasses.replace(pcfg, refine=not refine), y, geom.spacing, features=features).labels
                    row["unet_other_refine"] = {"dice": dice_per_class(plain, ref, classes), "refine": not refine}
                    # The same network without its forest (when it has one): what the fusion adds.
                    if model.forest is not None:
                        alone = predict_volume(model, image, dataclasses.replace(pcfg, forest=False), y, geom.spacing, features=features).labels
                        row["unet_without_forest"] = {"dice": dice_per_class(alone, ref, classes),
                                                      "forest_fit_s": model.forest.fit_seconds}
                        bare = predict_volume(model, image, dataclasses.replace(pcfg, forest=False, refine=False), y,
                                              geom.spacing, features=features).labels
                        row["unet_without_either"] = {"dice": dice_per_class(bare, ref, classes)}
                # Random forest on the same kind of strokes (its own corrections)
                y_rf, _ = merge_annotations(scribbles, corr["rf"])
                t0 = time.perf_counter()
                pred_rf = rf_segment(image, y_rf, seed=seed, features=feats)
                row["rf"] = {"dice": dice_per_class(pred_rf, ref, classes), "seconds": time.perf_counter() - t0, "labelled_voxels": int((y_rf > 0).sum())}
                # The same stroke-region post-processing applied to the forest's mask (not fed back
                # into its corrections): how much of the gap is the network and how much the filter.
                pred_rf_cc = pred_rf.copy()
                keep_stroke_regions(pred_rf_cc, y_rf)
                row["rf_regions"] = {"dice": dice_per_class(pred_rf_cc, ref, classes)}
                for m in ("unet", "forest", "unet_other_refine", "unet_without_forest", "unet_without_either", "rf", "rf_regions"):
                    if m in row:
                        row[m]["mean_dice"] = float(np.mean(list(row[m]["dice"].values())))
                alone = f"; without forest {row['unet_without_forest']['mean_dice']:.3f}" if "unet_without_forest" in row else ""
                other = (f"; {'without' if refine else 'with'} refinement {row['unet_other_refine']['mean_dice']:.3f}"
                         if "unet_other_refine" in row else "")
                own = f"  its forest {row['forest']['mean_dice']:.3f}" if "forest" in row else ""
                log(f"  k={k} round {r}: U-Net {row['unet']['mean_dice']:.3f} ({res.steps} steps, {res.stopped_by}, "
                    f"{row['unet']['wall_s']:.1f} s{other}{alone}){own}  RF {row['rf']['mean_dice']:.3f}"
                    f" (RF + region filter {row['rf_regions']['mean_dice']:.3f})  "
                    + "  ".join(f"{names[c]} {row['unet']['dice'][c]:.2f}/{row['rf']['dice'][c]:.2f}" for c in classes))
                results.append(row)
                if r < rounds:
                    for m, p in (("unet", pred), ("rf", pred_rf)):
                        new = simulate_corrections(p, ref, k, seed=seed + 17 * (r + 1))
                        corr[m] = new if corr[m] is None else merge_annotations(corr[m], new)[0]
    return results, names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--k", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--rounds", type=int, default=2, help="correction rounds after the first (default 2)")
    ap.add_argument("--budget", type=float, default=TrainConfig.time_budget,
                    help=f"U-Net training seconds per round (default {TrainConfig.time_budget:g}, TrainConfig's)")
    ap.add_argument("--correction-budget", type=float, default=None, metavar="SECONDS",
                    help="training seconds of the correction rounds (warm start; default: --budget)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="annotator/training seeds; with several, the summary also gives the mean over seeds (default 0)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep-all-regions", action="store_true", help="U-Net without the stroke-region filter (ablation)")
    ap.add_argument("--no-refine", action="store_true",
                    help="U-Net masks without boundary refinement (the refined mask of the same net is then the ablation)")
    ap.add_argument("--no-forest", action="store_true",
                    help="the U-Net without the random forest fused into its predictions (otherwise the same net without "
                         "it is the ablation)")
    ap.add_argument("--plateau", action=argparse.BooleanOptionalAction, default=TrainConfig.plateau,
                    help="end rounds on the plateau rule, --budget being a cap (default: TrainConfig's); "
                         "--no-plateau trains every round for the whole budget")
    ap.add_argument("--no-time-cap", action="store_true",
                    help="no time cap: rounds end by the plateau rule or TrainConfig.max_steps only, so the Dice does not "
                         "depend on the machine's load (the seconds then say nothing about the default's wall time)")
    ap.add_argument("--no-ablations", action="store_true",
                    help="skip the same net's other refinement and without-forest predictions (a faster run)")
    ap.add_argument("--precision", default=TrainConfig.precision, choices=option_values(Precision),
                    help="the network's arithmetic while training (default: TrainConfig's)")
    ap.add_argument("--pretrain", type=float, default=None, metavar="SECONDS",
                    help="pretrain each seed's network on the scan for this long before round 0 (default off)")
    ap.add_argument("--forest-pseudo-labels", type=float, default=TrainConfig.forest_pseudo_labels, metavar="R",
                    help="background pseudo-labels where the forest is sure, per background stroke voxel "
                         "(default: TrainConfig's; 0: the network trains on the strokes alone)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "accuracy.json"))
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    import torch

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, budget {args.budget:g}s/round"
        + (f" ({args.correction_budget:g}s for correction rounds)" if args.correction_budget else "")
        + (f", pretraining {args.pretrain:g}s before round 0" if args.pretrain else ""))
    all_rows = {}
    for name in args.cases:
        rows, names = run_case(name, args.k, args.rounds, args.budget, args.seeds, args.device, log, not args.keep_all_regions,
                               not args.no_refine, args.pretrain, not args.no_forest, args.correction_budget,
                               args.plateau, not args.no_ablations, not args.no_time_cap, args.precision,
                               args.forest_pseudo_labels)
        all_rows[name] = {"class_names": names, "rows": rows}
    log("\nsummary: mean Dice (± sd over seeds) of the U-Net round [median wall seconds per round] vs the round's own "
        "forest alone (same strokes) and the RF baseline (its own corrections)")
    log(f"{'case':<18}{'k':>3}{'seed':>6}" + "".join(f"{'round ' + str(r):>44}" for r in range(args.rounds + 1)))
    for name, block in all_rows.items():
        for k in args.k:
            for seed in args.seeds + (["mean"] if len(args.seeds) > 1 else []):
                of_seed = [x for x in block["rows"] if x["k"] == k and (seed == "mean" or x["seed"] == seed)]
                cells = ""
                for r in range(args.rounds + 1):
                    rows = [x for x in of_seed if x["round"] == r]
                    u = float(np.mean([x["unet"]["mean_dice"] for x in rows]))
                    sd = f"±{np.std([x['unet']['mean_dice'] for x in rows]):.3f}" if len(rows) > 1 else " " * 6
                    wall = float(np.median([x["unet"]["wall_s"] for x in rows]))
                    own = [x["forest"]["mean_dice"] for x in rows if "forest" in x]
                    fo = f"{np.mean(own):.3f}" if len(own) == len(rows) else "  -  "
                    rf = float(np.mean([x["rf"]["mean_dice"] for x in rows]))
                    cells += f"{u:>8.3f}{sd} [{wall:>4.0f}s] forest {fo} RF {rf:.3f}"
                log(f"{name:<18}{k:>3}{seed:>6}{cells}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cases": all_rows}, indent=1, default=str))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
