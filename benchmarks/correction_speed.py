"""What a correction round's step costs against a first round's, in the same run.

    python benchmarks/correction_speed.py [--cases sample_ct_crop mr_brain_tumour] [--seeds 0 1] [--steps 150] [--k 3]
                                          [--checks] [--out benchmarks/results/correction_speed.json]

Per case and seed: a first round of ``--steps`` steps (defaults otherwise, no plateau rule, no
time cap) on the simulated annotator's strokes, its prediction, the annotator's corrections of
it, then a correction round of ``--steps`` steps warm-started from the first. Timed from the
trainer's progress: ``startup`` is the time to the first network step (forest, and in a
correction round what the keep term needs), ``steps_per_s`` the rate of the network steps after
it. The ratio of the two rounds' rates is the figure to compare across versions: a correction
round's keep term (``TrainConfig.keep_previous``) should not make its steps dearer than a first
round's. With ``--checks`` the plateau rule's checks run (recording, never stopping the round),
so their cost is in the rate, as in a default round. The Dice of both rounds' predictions is
printed too (one run each: a hint, not a comparison). Run from a worktree of another commit
(the script copied in), it compares versions on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from benchmarks.plateau import _mean_dice  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.train import Trainer, preload  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402


def timed_round(trainer: Trainer) -> tuple[object, dict]:
    """Run a trainer to its end; ``(result, timing)`` from its progress events."""
    gen, times = trainer.run(), []
    try:
        while True:
            p = next(gen)
            if p.step > 0:
                times.append(p.elapsed)
    except StopIteration as stop:
        result = stop.value
    n = len(times)
    rate = (n - 1) / (times[-1] - times[0]) if n > 1 else float("nan")
    return result, {"steps": n, "startup_s": round(times[0], 2) if times else None, "steps_per_s": round(rate, 2),
                    "seconds": round(result.elapsed, 2)}


def run(case: str, seed: int, steps: int, k: int, checks: bool = False) -> dict:
    image, geom, ref, names = load_case(case)
    classes = list(range(1, len(names)))
    features = FeatureCache()
    features.prepare(image, geom.spacing)
    scribbles = simulate_scribbles(ref, k, seed=seed)
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    rule = dict(plateau=checks, plateau_tolerance=1e-9, plateau_stall=10**6)  # checks recorded, never stopping
    if "plateau_correction_tolerance" in TrainConfig.__dataclass_fields__:  # not in versions before it
        rule["plateau_correction_tolerance"] = 1e-9
    cfg = TrainConfig(time_budget=None, max_steps=steps, seed=seed, device="cpu", **rule)
    first, t0 = timed_round(Trainer(image, scribbles, cfg, spacing=geom.spacing, class_names=names, features=features))
    y, _ = merge_annotations(scribbles, None)
    pred = predict_volume(first.model, image, pcfg, y, geom.spacing, features=features).labels
    d0 = _mean_dice(pred, ref, classes)
    corrections = simulate_corrections(pred, ref, k, seed=seed + 17)
    y, _ = merge_annotations(scribbles, corrections)
    cfg = TrainConfig(time_budget=None, max_steps=steps, seed=seed + 1, device="cpu", **rule)
    second, t1 = timed_round(Trainer(image, scribbles, cfg, corrections=corrections, init=first.model,
                                     spacing=geom.spacing, class_names=names, features=features))
    pred = predict_volume(second.model, image, pcfg, y, geom.spacing, features=features).labels
    d1 = _mean_dice(pred, ref, classes)
    return {"case": case, "seed": seed, "voxels": int(image.size), "first": t0, "correction": t1,
            "rate_ratio": round(t1["steps_per_s"] / t0["steps_per_s"], 3), "dice": [round(d0, 4), round(d1, 4)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["sample_ct_crop", "mr_brain_tumour"], choices=list(CASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--checks", action="store_true", help="run the plateau rule's checks (never stopping)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    preload()
    rows = []
    for case in args.cases:
        for seed in args.seeds:
            rows.append(run(case, seed, args.steps, args.k, args.checks))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
