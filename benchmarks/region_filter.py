"""The stroke-region filter's connectivity: which regions a round's mask keeps, on the same trained rounds.

    python benchmarks/region_filter.py --cases mr_brain_tumour sample_ct_crop --k 2 --seeds 0 1 2 [--rounds 1]

Each round is trained once (the defaults, no time cap: the Dice does not depend on the load) and
predicted once without the filter (fusion and CRF as a round does them); then each rule keeps
the regions of each class that touch one of its strokes, on the network's mask and on the
round's forest alone (the mask a round must never fall below):

* ``c3``: 26-connected regions (faces, edges and corners; the default);
* ``c2``: 18-connected (faces and edges);
* ``c1``: 6-connected (faces only).

On a scan of thick slices (the brain-tumour scans: 6.5 mm between slices, 0.78 mm within) a
corner or an edge between two slices joins voxels 6.6 mm apart: a region of look-alike tissue
touching the tumour's region across a slice boundary only at a corner is kept with it. One JSON
line per round; corrections for the next round come from the default (``c3``) mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case, trained_rounds  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig  # noqa: E402
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402

RULES = {"c3": 3, "c2": 2, "c1": 1}


def _scores(mask: np.ndarray, y: np.ndarray, ref: np.ndarray, classes) -> dict:
    out = {}
    for name, connectivity in RULES.items():
        kept = mask.copy()
        keep_stroke_regions(kept, y, connectivity=connectivity)
        out[name] = round(float(np.mean(list(dice_per_class(kept, ref, classes).values()))), 4)
    return out


def run(case, ks, seeds, rounds, out, log):
    image, geom, ref, names = load_case(case)
    classes = list(range(1, len(names)))
    features = FeatureCache()
    features.prepare(image, geom.spacing)
    pcfg = PredictConfig(device="cpu", uncertainty=False, stroke_regions_only=False)
    for step in trained_rounds(image, geom, ref, names, features, ks, seeds, rounds):
        model, y = step.result.model, step.y
        whole = predict_volume(model, image, pcfg, y, geom.spacing, features=features).labels
        pf = features.forest_probabilities(model.forest, image, model.normalization.ranges(image), geom.spacing)
        row = {"case": case, "k": step.k, "seed": step.seed, "round": step.round, "spacing": [float(s) for s in geom.spacing],
               "unet": _scores(whole, y, ref, classes), "forest": _scores(pf.argmax(0).astype(np.uint8), y, ref, classes)}
        log(json.dumps(row))
        out.write(json.dumps(row) + "\n")
        out.flush()
        step.mask = whole.copy()  # the default (c3) mask is what the annotator corrects
        keep_stroke_regions(step.mask, y)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--k", nargs="+", type=int, default=[2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=0, help="correction rounds after the first (default 0)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.out, "a") as out:
        for case in args.cases:
            run(case, args.k, args.seeds, args.rounds, out, lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
