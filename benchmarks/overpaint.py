"""Where a first round's network paints what is not there: its mask alone, fused with the forest, and the forest's.

    python benchmarks/overpaint.py --cases mr_brain_tumour2 mr_brain_tumour --seeds 0 1 2 [--pseudo-labels R]

Per case and simulated annotator (``--k`` stroke slices per axis, 3): one default first round (plateau rule, 60 s cap),
then the round's prediction with the forest (the default), without it, and the forest's own
mask (stroke regions only, as the sweep scores it). For each: mean Dice, and per structure the
false-positive and false-negative voxels; for the fused mask, where its false positives lie
(25/50/90th percentile of their distance to the true structure, mm) and how sure the forest was
of background there (10/50/90th percentile of its probability). ``--pseudo-labels`` sets
``TrainConfig.forest_pseudo_labels`` (0: the network trains on the strokes alone). One JSON line
per round; a single round per annotator is a hint, not a comparison. ``--stroke-centres-only``
centres background patches on its strokes alone (as before they were centred on its
pseudo-labels too); ``--no-time-cap`` ends rounds by the plateau rule alone, as
``accuracy.py --no-time-cap`` does, so a round there is reproduced here.

    python benchmarks/overpaint.py --cases sample_ct_crop mr_brain_tumour mr_brain_tumour2 --labels-only

only fits each first round's forest (one network step) and counts its pseudo-labels that are
not background in the reference, beside the unlabelled voxels it is sure of and the structure
voxels among them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import load_case  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402


def errors(mask, ref, classes) -> dict:
    """Mean Dice and, per structure, false-positive and false-negative voxels."""
    dice = dice_per_class(mask, ref, classes)
    return {"dice": round(float(np.mean(list(dice.values()))), 3),
            "fp": [int(((mask == c) & (ref != c)).sum()) for c in classes],
            "fn": [int(((mask != c) & (ref == c)).sum()) for c in classes]}


class StrokeCentres(Trainer):
    """The trainer as before background patches were centred on pseudo-labels too: centres on the strokes only."""

    def _with_forest_labels(self, probs, volume):
        (x, y, src, _), n = super()._with_forest_labels(probs, volume)
        return (x, y, src, volume[3]), n


def first_round(case: str, seed: int, pseudo: float, features: FeatureCache, loaded, k: int = 3,
                time_cap: bool = True, trainer=Trainer) -> dict:
    from scipy import ndimage as ndi

    image, geom, ref, names = loaded
    classes = list(range(1, len(names)))
    strokes = simulate_scribbles(ref, k, seed=seed)
    cfg = TrainConfig(seed=seed, device="cpu", forest_pseudo_labels=pseudo,
                      **({} if time_cap else {"time_budget": None}))
    res = run_to_end(trainer(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features).run())
    model = res.model
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    fused = predict_volume(model, image, pcfg, strokes, geom.spacing, features=features).labels
    alone = predict_volume(model, image, dataclasses.replace(pcfg, forest=False), strokes, geom.spacing,
                           features=features).labels
    probs = features.forest_probabilities(model.forest, image, model.normalization.ranges(image), geom.spacing)
    forest = probs.argmax(0).astype(np.uint8)
    keep_stroke_regions(forest, strokes)
    row = {"case": case, "k": k, "seed": seed, "pseudo_labels": pseudo, "stroke_centres_only": trainer is StrokeCentres,
           "steps": res.steps,
           "trained_on_pseudo_labels": model.history[-1].get("forest_pseudo_labels"),
           "trust": [round(float(t), 3) for t in model.forest.trust],
           "fused": errors(fused, ref, classes), "alone": errors(alone, ref, classes), "forest": errors(forest, ref, classes)}
    for c in classes:
        wrong = (fused == c) & (ref != c)
        if wrong.any():
            dist = ndi.distance_transform_edt(ref != c, sampling=geom.spacing)[wrong]
            row[f"fp_distance_mm_{c}"] = np.percentile(dist, [25, 50, 90]).round(1).tolist()
            row[f"forest_background_at_fp_{c}"] = np.percentile(probs[0][wrong].astype(np.float32), [10, 50, 90]).round(2).tolist()
    return row


def pseudo_label_errors(case: str, seed: int, features: FeatureCache, loaded, k: int = 3) -> dict:
    """A first round's forest pseudo-labels against the reference (one network step; nothing predicted)."""
    from napari_sparseseg.core.annotations.labels import SOURCE_HINT

    image, geom, ref, names = loaded
    strokes = simulate_scribbles(ref, k, seed=seed)
    seen = {}

    class Spy(Trainer):
        def _with_forest_labels(self, probs, volume):
            out = super()._with_forest_labels(probs, volume)
            seen["source"], seen["work"], seen["probs"] = out[0][2], self.work, probs
            return out

    cfg = TrainConfig(max_steps=1, time_budget=None, seed=seed, device="cpu")
    run_to_end(Spy(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features).run())
    if seen["work"].y.shape != ref.shape:
        raise SystemExit(f"{case} is learned on a coarser grid; --labels-only compares on the scan's own voxels only")
    added = (seen["source"] == SOURCE_HINT)[tuple(slice(0, n) for n in ref.shape)]
    sure = (seen["probs"][0] >= cfg.forest_pseudo_confidence) & (strokes == 0)
    return {"case": case, "seed": seed, "pseudo_labels": int(added.sum()), "not_background": int((ref[added] != 0).sum()),
            "sure_background": int(sure.sum()), "structure_among_sure": int((ref[sure] != 0).sum()),
            "structure_voxels": int((ref != 0).sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["mr_brain_tumour2", "mr_brain_tumour"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pseudo-labels", type=float, default=TrainConfig.forest_pseudo_labels)
    ap.add_argument("--k", type=int, default=3, help="stroke slices per axis")
    ap.add_argument("--no-time-cap", action="store_true",
                    help="rounds end by the plateau rule or max_steps only (as accuracy.py --no-time-cap)")
    ap.add_argument("--stroke-centres-only", action="store_true",
                    help="background patches centred on its strokes only, as before they were on its pseudo-labels too")
    ap.add_argument("--labels-only", action="store_true", help="count the default pseudo-labels' errors, train nothing")
    args = ap.parse_args(argv)
    for case in args.cases:
        loaded, features = load_case(case), FeatureCache()
        for seed in args.seeds:
            row = (pseudo_label_errors(case, seed, features, loaded, args.k) if args.labels_only
                   else first_round(case, seed, args.pseudo_labels, features, loaded, args.k, not args.no_time_cap,
                                    StrokeCentres if args.stroke_centres_only else Trainer))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
