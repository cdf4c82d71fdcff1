"""Hard negatives: background pseudo-labels where a first network paints a structure and the forest's argmax is background.

    python benchmarks/hard_negatives.py mr_brain_tumour2:1:1 sample_ct_crop:1:0   # case:k:annotator ...

An experiment for issue 22, not a default. Per case, k (stroke slices per axis) and simulated
annotator: one default first round (no time cap); the network alone predicts the scan; among the
unlabelled voxels where it marks a structure and the round's forest gives background the
highest probability, as many as the background strokes are drawn at random; then the round is
trained again, from scratch, with these as extra background pseudo-labels (and patch centres).
Prints, per round, the forest's, the default's and the retrained round's mean Dice, and how many
of the drawn voxels are not background in the reference. One JSON line per round.
"""

from __future__ import annotations

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
from napari_sparseseg.core.training.train import Trainer, with_background_hints  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402


class HardNegatives(Trainer):
    """The default trainer with ``extra`` flat voxel indices as further background pseudo-labels and patch centres."""

    extra = np.zeros(0, np.int64)

    def _with_forest_labels(self, probs, volume):
        volume, n = super()._with_forest_labels(probs, volume)
        if not len(self.extra):
            return volume, n
        return with_background_hints(volume, np.unravel_index(self.extra, self.work.y.shape)), n + len(self.extra)


def _mean(d) -> float:
    return round(float(np.mean(list(d.values()))), 4)


def one(case: str, k: int, seed: int) -> dict:
    image, geom, ref, names = load_case(case)
    classes = list(range(1, len(names)))
    features = FeatureCache()
    strokes = simulate_scribbles(ref, k, seed=seed)
    cfg = TrainConfig(seed=seed, device="cpu", time_budget=None)
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    first = run_to_end(Trainer(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features).run())
    default = predict_volume(first.model, image, pcfg, strokes, geom.spacing, features=features).labels
    alone = predict_volume(first.model, image, dataclasses.replace(pcfg, forest=False, refine=False, stroke_regions_only=False),
                           strokes, geom.spacing, features=features).labels
    if alone.shape != strokes.shape:
        raise SystemExit(f"{case} is learned on a coarser grid; this experiment draws on the scan's own voxels only")
    probs = features.forest_probabilities(first.model.forest, image, first.model.normalization.ranges(image), geom.spacing)
    forest = probs.argmax(0).astype(np.uint8)
    candidates = np.flatnonzero(((alone > 0) & (forest == 0) & (strokes == 0)).reshape(-1))
    keep_stroke_regions(forest, strokes)
    n = min(len(candidates), int((strokes == 1).sum()))
    drawn = np.random.RandomState(seed + 3).choice(candidates, n, replace=False) if n else candidates[:0]
    trainer = HardNegatives(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features)
    trainer.extra = drawn
    second = run_to_end(trainer.run())
    retrained = predict_volume(second.model, image, pcfg, strokes, geom.spacing, features=features).labels
    return {"case": case, "k": k, "seed": seed, "steps": [first.steps, second.steps],
            "forest": _mean(dice_per_class(forest, ref, classes)), "default": _mean(dice_per_class(default, ref, classes)),
            "hard_negatives": _mean(dice_per_class(retrained, ref, classes)), "candidates": int(len(candidates)),
            "drawn": int(len(drawn)), "drawn_not_background": int((ref.reshape(-1)[drawn] != 0).sum())}


def main(argv=None):
    for spec in sys.argv[1:] if argv is None else argv:
        case, k, seed = spec.split(":")
        print(json.dumps(one(case, int(k), int(seed))), flush=True)


if __name__ == "__main__":
    main()
