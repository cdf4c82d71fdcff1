"""Hard negatives: background pseudo-labels where a first network paints a structure and the forest's argmax is background.

    python benchmarks/hard_negatives.py mr_brain_tumour2:1:1 sample_ct_crop:1:0   # case:k:annotator ...
    python benchmarks/hard_negatives.py --rule extent --grow 0.5 mr_brain_tumour2:1:1 ...
    python benchmarks/hard_negatives.py --extent-stats mr_brain_tumour2:1:1 ...

An experiment for issue 22, not a default. Per case, k (stroke slices per axis) and simulated
annotator: one default first round (no time cap); the network alone predicts the scan; among the
unlabelled voxels where it marks a structure and the round's forest gives background the
highest probability, as many as the background strokes are drawn at random; then the round is
trained again, from scratch, with these as extra background pseudo-labels (and patch centres).
Prints, per round, the forest's, the default's and the retrained round's mean Dice, and how many
of the drawn voxels are not background in the reference. One JSON line per round.
``--rule extent`` draws only outside the class's strokes' bounding box grown by ``--grow`` times
its size per side (``extent_only``: whatever the forest says); ``--extent-stats`` only reports,
per class, how many of the network's voxels lie outside such boxes and what they are.
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


def outside_extent(alone: np.ndarray, strokes: np.ndarray, grow: float) -> np.ndarray:
    """Voxels the network marks as a class outside that class's strokes' bounding box grown by ``grow`` × its size per side.

    Only along axes where the class's strokes span more than one slice (strokes on one axial
    slice say nothing of the structure's extent across slices).
    """
    out = np.zeros(alone.shape, bool)
    for c in range(1, int(alone.max(initial=0)) + 1):
        at = np.nonzero(strokes == c + 1)
        marked = alone == c
        if not len(at[0]) or not marked.any():
            continue
        inside = np.ones(alone.shape, bool)
        for axis, idx in enumerate(at):
            lo, hi = int(idx.min()), int(idx.max())
            if hi == lo:
                continue
            pad = int(np.ceil(grow * (hi - lo + 1)))
            keep = np.zeros(alone.shape[axis], bool)
            keep[max(0, lo - pad): hi + pad + 1] = True
            inside &= keep.reshape([-1 if a == axis else 1 for a in range(3)])
        out |= marked & ~inside
    return out


RULES = ("forest", "extent", "extent_only")


def extent_stats(case: str, k: int, seed: int, grows=(0.5, 1.0)) -> list[dict]:
    """Per class, after one default first round: the network's voxels outside the class's grown stroke box, and what they are."""
    image, geom, ref, names = load_case(case)
    features = FeatureCache()
    strokes = simulate_scribbles(ref, k, seed=seed)
    cfg = TrainConfig(seed=seed, device="cpu", time_budget=None)
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    first = run_to_end(Trainer(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features).run())
    alone = predict_volume(first.model, image, dataclasses.replace(pcfg, forest=False, refine=False, stroke_regions_only=False),
                           strokes, geom.spacing, features=features).labels
    fused = predict_volume(first.model, image, pcfg, strokes, geom.spacing, features=features).labels
    rows = []
    for grow in grows:
        out = outside_extent(alone, strokes, grow)
        for c in range(1, len(names)):
            net, true = alone == c, ref == c
            o = out & net
            rows.append({"case": case, "k": k, "seed": seed, "grow": grow, "class": names[c], "reference": int(true.sum()),
                         "network": int(net.sum()), "outside": int(o.sum()), "outside_this_class": int(true[o].sum()),
                         "outside_other_class": int(((ref[o] != c) & (ref[o] != 0)).sum()),
                         "fused": int((fused == c).sum()), "fused_outside": int((out & (fused == c)).sum()),
                         "dice_network": round(dice_per_class(alone, ref, [c])[c], 3),
                         "dice_fused": round(dice_per_class(fused, ref, [c])[c], 3)})
    return rows


def one(case: str, k: int, seed: int, rule: str = "forest", grow: float = 0.5) -> dict:
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
    if rule == "forest":
        hard = (alone > 0) & (forest == 0)
    elif rule == "extent":
        hard = outside_extent(alone, strokes, grow) & (forest == 0)
    else:
        hard = outside_extent(alone, strokes, grow)
    candidates = np.flatnonzero((hard & (strokes == 0)).reshape(-1))
    keep_stroke_regions(forest, strokes)
    n = min(len(candidates), int((strokes == 1).sum()))
    drawn = np.random.RandomState(seed + 3).choice(candidates, n, replace=False) if n else candidates[:0]
    trainer = HardNegatives(image, strokes, cfg, spacing=geom.spacing, class_names=names, features=features)
    trainer.extra = drawn
    second = run_to_end(trainer.run())
    retrained = predict_volume(second.model, image, pcfg, strokes, geom.spacing, features=features).labels
    return {"case": case, "k": k, "seed": seed, "rule": rule, "grow": grow, "steps": [first.steps, second.steps],
            "forest": _mean(dice_per_class(forest, ref, classes)), "default": _mean(dice_per_class(default, ref, classes)),
            "hard_negatives": _mean(dice_per_class(retrained, ref, classes)), "candidates": int(len(candidates)),
            "drawn": int(len(drawn)), "drawn_not_background": int((ref.reshape(-1)[drawn] != 0).sum())}


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="case:k:annotator")
    ap.add_argument("--rule", choices=RULES, default="forest",
                    help="forest: where the forest's argmax is background; extent: that, and outside the class's "
                         "strokes' grown bounding box; extent_only: outside that box, whatever the forest says")
    ap.add_argument("--grow", type=float, default=0.5, help="the box grows by this times its size on each side")
    ap.add_argument("--extent-stats", action="store_true",
                    help="no retraining: per class, the network's voxels outside the box grown by 0.5 and 1, and what "
                         "the reference says they are")
    args = ap.parse_args(argv)
    for spec in args.specs:
        case, k, seed = spec.split(":")
        if args.extent_stats:
            for row in extent_stats(case, int(k), int(seed)):
                print(json.dumps(row), flush=True)
        else:
            print(json.dumps(one(case, int(k), int(seed), args.rule, args.grow)), flush=True)


if __name__ == "__main__":
    main()
