"""Is a correction round's fall the round or the moment it stopped? Every check of one correction round.

    python benchmarks/correction_replay.py --case mr_brain_tumour --seed 0 --k 1 --round 2 --steps 800

Rounds before ``--round`` run as ``benchmarks/accuracy.py --no-time-cap`` runs them (defaults,
plateau rule, corrections from the simulated annotator on each round's mask), so the round
replayed starts from the same model and strokes. That round then trains ``--steps`` steps
with the plateau rule recording but not stopping; each check's averaged weights predict the
whole scan as a round would. Printed per check: steps, agreement, Dice; and where the default
rule stops, beside the previous round's Dice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from benchmarks.plateau import _mean_dice, _predict, _Recorder  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.monitor import Plateau  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="mr_brain_tumour", choices=list(CASES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--round", type=int, default=2)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    image, geom, ref, names = load_case(args.case)
    classes = list(range(1, len(names)))
    features = FeatureCache()
    features.prepare(image, geom.spacing)
    scribbles, corrections, model = simulate_scribbles(ref, args.k, seed=args.seed), None, None
    pcfg = PredictConfig(device="cpu", uncertainty=False)
    dice = []
    for r in range(args.round):
        y, _ = merge_annotations(scribbles, corrections)
        res = run_to_end(Trainer(image, scribbles, TrainConfig(time_budget=None, seed=args.seed + r, device="cpu"),
                                 corrections=corrections, init=model, spacing=geom.spacing, class_names=names,
                                 features=features).run())
        model = res.model
        pred = predict_volume(model, image, pcfg, y, geom.spacing, features=features).labels
        dice.append(round(_mean_dice(pred, ref, classes), 4))
        print(f"round {r}: {res.steps} steps ({res.stopped_by}), Dice {dice[-1]:.4f}", flush=True)
        new = simulate_corrections(pred, ref, args.k, seed=args.seed + 17 * (r + 1))
        corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    r = args.round
    default = TrainConfig()
    cfg = TrainConfig(time_budget=None, max_steps=args.steps, seed=args.seed + r, device="cpu",
                      plateau_tolerance=1e-9, plateau_stall=10**6)  # checks recorded, never stopping
    trainer = Trainer(image, scribbles, cfg, corrections=corrections, init=model, spacing=geom.spacing,
                      class_names=names, features=features)
    with _Recorder() as rec:
        result = run_to_end(trainer.run())
    rule, stop_at, rows = Plateau(default.plateau_tolerance, default.plateau_patience, default.plateau_stall), None, []
    for check, state in rec.states:
        pred = _predict(result.model, state, check.trust, image, geom, trainer.y, features)
        row = {**check.to_dict(), "dice": round(_mean_dice(pred, ref, classes), 4)}
        if stop_at is None and rule.reached(check):
            stop_at = check.step
        row["rule_stops_here"] = stop_at == check.step
        rows.append(row)
        print(json.dumps(row), flush=True)
    d = np.array([x["dice"] for x in rows])
    print(f"round {r - 1}: {dice[-1]:.4f}; round {r}: rule stops at {stop_at}, checks {d.min():.4f}-{d.max():.4f} "
          f"(mean {d.mean():.4f}, sd {d.std():.4f}); checks below round {r - 1} by > 0.01: "
          f"{int((d < dice[-1] - 0.01).sum())} of {len(d)}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "previous": dice, "checks": rows}, indent=1))


if __name__ == "__main__":
    main()
