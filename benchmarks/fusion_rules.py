"""Fusion rules side by side on the same trained rounds: which keeps every round at least at its forest?

    python benchmarks/fusion_rules.py --k 1 --seeds 0 1 2 --rounds 1 --out benchmarks/results/fusion_rules_k1.jsonl

Each round is trained once (the defaults, no time cap: the Dice does not depend on the load),
then predicted with the default pipeline (fusion, CRF, region filter) under each rule, beside its
own forest alone (same strokes). Rules:

* ``default``: the network weighted by its agreement with the strokes (``forest.trust``);
* ``volume``: that trust also scaled, per structure, by ``min(1, V_forest / V_net)``, the voxels
  the forest alone paints over those the network alone paints (a network painting more of a
  structure than the forest sees support for is trusted for it only in that ratio);
* ``marginal``: the network's probabilities re-weighted per class by the forest's mean
  probability over its own (the class marginals of the network calibrated to the forest's).

* ``capped<d>``: the network's probabilities kept within ``[d, 1]`` before the pool (its
  overconfident votes, log-odds up to 14 at the pool's floor, outweigh the forest's softer ones);
  ``both<d>``: the forest's too (``--caps``, default 0.01 0.05).

``default_plain`` and ``volume_plain``: the same without the CRF. ``forest_crf``: the network's
vote removed (trust 0), so the forest with the CRF and the region filter; ``crf_by_trust``: the
default with the CRF's weight scaled by the least structure trust to the fourth power.
``--max-steps N`` caps every round at N steps (the same short round on any machine; about 50 is
a 5 s round on a 2-core CPU in float32). Corrections for the next round
come from the default rule's mask. An experiment, not a default (docs/benchmarks.md, issue 22).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case, trained_rounds  # noqa: E402
from benchmarks.plateau import _predict  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig  # noqa: E402
from napari_sparseseg.core.inference import predict as predict_module  # noqa: E402
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache, fuse  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402


def _mean(d) -> float:
    return round(float(np.mean(list(d.values()))), 4)


def _capped_fuse(delta: float, both: bool):
    """``fuse`` with the network's probabilities (and with ``both``, the forest's) kept within ``[delta, 1]``."""

    def capped(p_net, p_forest, weight, trust=None, eps=1e-6):
        q = p_net.clamp_min(delta)
        f = p_forest.clamp_min(delta) if both else p_forest
        return fuse(q / q.sum(0, keepdim=True), f / f.sum(0, keepdim=True), weight, trust, eps)

    return capped


def _under(rule, model, image, pcfg, y, geom, features, ref, classes) -> float:
    """Mean Dice of the default pipeline's mask with ``rule`` in place of ``fuse``."""
    saved = predict_module.fuse
    predict_module.fuse = rule
    try:
        return _mean(dice_per_class(predict_volume(model, image, pcfg, y, geom.spacing, features=features).labels, ref,
                                    classes))
    finally:
        predict_module.fuse = saved


def run(case, ks, seeds, rounds, out, log, caps=(0.01, 0.05), max_steps=None):
    image, geom, ref, names = load_case(case)
    classes = list(range(1, len(names)))
    features = FeatureCache()
    features.prepare(image, geom.spacing)
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    for step in trained_rounds(image, geom, ref, names, features, ks, seeds, rounds, max_steps):
        res, y = step.result, step.y
        model = res.model
        row = {"case": case, "k": step.k, "seed": step.seed, "round": step.round, "steps": res.steps,
               "trust": [round(float(t), 4) for t in model.forest.trust]}
        pred = predict_volume(model, image, pcfg, y, geom.spacing, features=features).labels
        row["default"] = _mean(dice_per_class(pred, ref, classes))
        pf = features.forest_probabilities(model.forest, image, model.normalization.ranges(image), geom.spacing)
        fmask = pf.argmax(0).astype(np.uint8)
        keep_stroke_regions(fmask, y)
        row["forest"] = _mean(dice_per_class(fmask, ref, classes))
        alone = predict_volume(model, image, PredictConfig(device="cpu", uncertainty=False, forest=False, refine=False,
                                                           stroke_regions_only=False, probabilities=True),
                               y, geom.spacing, features=features)
        pn = alone.probabilities.astype(np.float32) / 255.0
        v_net = np.bincount(alone.labels.ravel(), minlength=len(names)).astype(float)
        v_for = np.bincount(pf.argmax(0).ravel(), minlength=len(names)).astype(float)
        row["v_net"], row["v_forest"] = v_net.astype(int).tolist(), v_for.astype(int).tolist()
        row["v_true"] = np.bincount(ref.ravel(), minlength=len(names)).tolist()
        # volume rule
        scale = np.ones(len(names))
        scale[1:] = np.minimum(1.0, v_for[1:] / np.maximum(v_net[1:], 1))
        trust = np.asarray(model.forest.trust) * scale  # the round's model under another trust (plateau.py's helper)
        row["volume"] = _mean(dice_per_class(_predict(model, None, trust, image, geom, y, features), ref, classes))
        # without the CRF
        row["default_plain"] = _mean(dice_per_class(_predict(model, None, model.forest.trust, image, geom, y, features,
                                                             refine=False), ref, classes))
        row["volume_plain"] = _mean(dice_per_class(_predict(model, None, trust, image, geom, y, features, refine=False),
                                                   ref, classes))
        # the CRF on the forest alone, and the CRF weighed by the network's trust
        zero = np.zeros(len(names))
        row["forest_crf"] = _mean(dice_per_class(_predict(model, None, zero, image, geom, y, features), ref, classes))
        least = float(np.min(model.forest.trust[1:]))
        row["crf_by_trust"] = _mean(dice_per_class(_predict(model, None, model.forest.trust, image, geom, y, features,
                                                            refine_weight=max(PredictConfig.refine_weight * least**4, 1e-3)),
                                                   ref, classes))
        # marginal rule: p_net * (mean p_forest / mean p_net) per class
        ratio = pf.reshape(len(names), -1).mean(1) / np.maximum(pn.reshape(len(names), -1).mean(1), 1e-6)
        row["marginal_ratio"] = np.round(ratio, 3).tolist()
        r_t = torch.as_tensor(ratio, dtype=torch.float32)

        def marginal_fuse(p_net, p_forest, weight, trust=None, eps=1e-6, r_t=r_t):
            q = p_net * r_t.reshape((-1,) + (1,) * (p_net.dim() - 1)).to(p_net.dtype)
            return fuse(q / q.sum(0, keepdim=True), p_forest, weight, trust, eps)

        row["marginal"] = _under(marginal_fuse, model, image, pcfg, y, geom, features, ref, classes)
        for delta in caps:
            row[f"capped{delta:g}"] = _under(_capped_fuse(delta, False), model, image, pcfg, y, geom, features, ref,
                                             classes)
            row[f"both{delta:g}"] = _under(_capped_fuse(delta, True), model, image, pcfg, y, geom, features, ref,
                                           classes)
        log(json.dumps(row))
        out.write(json.dumps(row) + "\n")
        out.flush()
        step.mask = pred  # corrections for the next round come from the default rule's mask


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--k", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--caps", nargs="+", type=float, default=[0.01, 0.05])
    ap.add_argument("--max-steps", type=int, default=None, help="cap every round at this many steps")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.out, "a") as out:
        for case in args.cases:
            run(case, args.k, args.seeds, args.rounds, out, lambda m: print(m, flush=True), tuple(args.caps),
                args.max_steps)


if __name__ == "__main__":
    main()
