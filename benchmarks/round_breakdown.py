"""Where a round's wall time goes: filters, forest, network steps, prediction, refinement, suggestions.

    .venv/bin/python benchmarks/round_breakdown.py [--cases ct_abdomen sample_ct_crop] [--budget 60] [--seed 0] [--no-plateau]
                                                   [--precision float32 auto]
                                                   [--out benchmarks/results/round_breakdown.json]

One round as the widget runs it (a session's round: strokes on 3 slices per axis, training bounded
by ``--budget`` seconds, then prediction with uncertainty, the forest, the CRF and the region
filter, then the suggestions), with each part timed apart in the same process and run:

* ``features``: the forest's filter features of the scan (a session computes them once, in the
  background from the moment the scan is picked; a cold round pays them inside its budget);
* ``first_mask``: from the trainer's start (Train) to the forest's mask, the preview the widget
  shows while the network trains (``Trainer(preview=True)``);
* ``train_startup``: from the trainer's start to its first network step (forest fit and its
  probabilities of the scan included, the fit's own share is ``forest_fit``), with the features
  already computed and the libraries imported (as the widget does while the user paints);
* ``train_steps``: the rest of the round (until the plateau rule or the budget), the steps it
  made and why it stopped;
* ``predict_network``: prediction by the network alone (no forest, no CRF, no region filter);
* ``predict_forest`` and ``predict_refine``: what fusing the forest and the CRF add to it;
* ``predict_round``: the prediction a round makes (all of the above, uncertainty on);
* ``suggest``: where to paint next.

The figures are seconds of wall time on this machine; compare them with each other, not with
another day's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cases import load_case  # noqa: E402
from napari_sparseseg.core.annotations.guide import suggest_slices  # noqa: E402
from napari_sparseseg.core.base.config import Precision, PredictConfig, TrainConfig, option_values  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.train import Trainer, preload  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def breakdown(case: str, budget: float, seed: int, plateau: bool = TrainConfig.plateau,
              precision: str = TrainConfig.precision) -> dict:
    image, geom, ref, names = load_case(case)
    scribbles = simulate_scribbles(ref, 3, seed=seed)
    features = FeatureCache()
    row = {"case": case, "voxels": int(image.size), "shape": list(image.shape), "budget": budget, "seed": seed,
           "precision": precision}
    row["features"] = _timed(lambda: features.prepare(image, geom.spacing))[1]

    preload()
    cfg = TrainConfig(time_budget=budget, max_steps=None, seed=seed, device="cpu", plateau=plateau, precision=precision)
    trainer = Trainer(image, scribbles, cfg, spacing=geom.spacing, class_names=names, features=features, preview=True)
    first, shown, t0 = None, None, time.perf_counter()
    gen = trainer.run()
    try:
        while True:
            p = next(gen)
            if shown is None and p.preview is not None:
                shown = time.perf_counter() - t0
            if first is None and p.stage == "train" and p.step >= 1:
                first = time.perf_counter() - t0
    except StopIteration as stop:
        result = stop.value
    total = time.perf_counter() - t0
    model = result.model
    row["first_mask"] = shown
    row["stopped_by"] = result.stopped_by
    row["train_startup"] = first
    row["forest_fit"] = getattr(model.forest, "fit_seconds", None)
    row["train_steps"] = total - (first or 0.0)
    row["steps"] = result.steps
    row["train_total"] = total

    base = PredictConfig(device="cpu", uncertainty=False, forest=False, refine=False, stroke_regions_only=False)
    y = trainer.y
    _, row["predict_network"] = _timed(lambda: predict_volume(model, image, base, y, geom.spacing, features=features))
    _, with_forest = _timed(lambda: predict_volume(model, image, dataclasses.replace(base, forest=True), y, geom.spacing,
                                                   features=features))
    _, with_refine = _timed(lambda: predict_volume(model, image, dataclasses.replace(base, refine=True), y, geom.spacing,
                                                   features=features))
    row["predict_forest"] = with_forest - row["predict_network"]
    row["predict_refine"] = with_refine - row["predict_network"]
    pred, row["predict_round"] = _timed(lambda: predict_volume(model, image, PredictConfig(device="cpu"), y, geom.spacing,
                                                               features=features))
    _, row["suggest"] = _timed(lambda: suggest_slices(pred.labels, pred.uncertainty, scribbles, geom.spacing))
    row["round_wall"] = row["train_total"] + row["predict_round"] + row["suggest"]
    row["after_training"] = row["predict_round"] + row["suggest"]
    row["mean_dice"] = float(sum(dice_per_class(pred.labels, ref, list(range(1, len(names)))).values()) / (len(names) - 1))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["ct_abdomen", "sample_ct_crop"])
    ap.add_argument("--budget", type=float, default=TrainConfig.time_budget)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plateau", action=argparse.BooleanOptionalAction, default=TrainConfig.plateau,
                    help="end the round on the plateau rule (default: TrainConfig's); --no-plateau: the whole budget")
    ap.add_argument("--precision", nargs="+", default=[TrainConfig.precision], choices=option_values(Precision),
                    help="the training arithmetic; several: each case is run with each, in this order, in the same run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "round_breakdown.json"))
    args = ap.parse_args(argv)
    rows = []
    parts = ("features", "first_mask", "train_startup", "forest_fit", "train_steps", "predict_network", "predict_forest",
             "predict_refine", "predict_round", "suggest", "round_wall", "after_training")
    for case, precision in itertools.product(args.cases, args.precision):
        row = breakdown(case, args.budget, args.seed, args.plateau, precision)
        rows.append(row)
        print(f"{case} [{precision}] ({row['voxels']:,} voxels, {row['steps']} steps, {row['stopped_by']}, "
              f"mean Dice {row['mean_dice']:.3f}): " + ", ".join(f"{k} {row[k]:.1f} s" for k in parts if row[k] is not None),
              flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
