"""Does the plateau rule stop where the Dice stops rising? The full-volume Dice at every probe check.

    .venv/bin/python benchmarks/plateau.py [--cases ct_abdomen mr_abdomen] [--seeds 0 1] [--rounds 2]
                                           [--budget 60 | --steps 600] [--keep-previous 1]
                                           [--out benchmarks/results/plateau.json]
    .venv/bin/python benchmarks/plateau.py --score benchmarks/results/plateau.json   # replay other rules

Each round trains to ``--budget`` seconds with the plateau rule *recording* but not stopping
(``plateau_tolerance`` tiny), and keeps the averaged weights at every check. After the round,
each kept state predicts the whole scan as a round would (its own agreement as the fusion's
trust, forest, CRF, region filter), so one run shows, per check: the steps and seconds, the
agreement with the strokes, the probe mask's change, the Dice against the reference — and
where the default rule (``TrainConfig``'s tolerance and patience) would have stopped, with the
Dice there and at the end. Correction rounds follow the simulated annotator on the round's
final mask (3 slices per axis, like ``benchmarks/accuracy.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.annotations.holdout import holdout_dice  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.monitor import Check, Plateau, Probe  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402


class _Recorder:
    """Wraps :meth:`Probe.check` to keep the averaged weights of every check."""

    def __init__(self):
        self.states, self._check = [], Probe.check

    def __enter__(self):
        recorder = self

        def check(probe, network, step, seconds, batch=4):
            result = recorder._check(probe, network, step, seconds, batch)
            recorder.states.append((result, copy.deepcopy(network.state_dict())))
            return result

        Probe.check = check
        return self

    def __exit__(self, *exc):
        Probe.check = self._check


def _prediction(model, state, trust, image, geom, y, features, **cfg):
    """The round's prediction of the whole scan by ``model`` with the weights ``state`` (None: its own) and ``trust``."""
    net = copy.copy(model)
    net.network = copy.deepcopy(model.network)
    if state is not None:
        net.network.load_state_dict(state)
    if model.forest is not None:
        net.forest = copy.copy(model.forest)
        net.forest.trust = trust
    return predict_volume(net, image, PredictConfig(device="cpu", uncertainty=False, **cfg), y, geom.spacing,
                          features=features)


def _predict(model, state, trust, image, geom, y, features, **cfg) -> np.ndarray:
    return _prediction(model, state, trust, image, geom, y, features, **cfg).labels


def _mean_dice(pred, ref, classes) -> float:
    return float(np.mean(list(dice_per_class(pred, ref, classes).values())))


def _held(pred, trainer, k) -> list:
    """Per class 0..k-1 the Dice on the held-out stroke voxels (None where the class has none held out)."""
    est = holdout_dice(pred, trainer.y_all, trainer.heldout, k)
    return [None if c not in est else round(est[c].dice, 4) for c in range(k)]


def run(case: str, seed: int, rounds: int, budget: float, log, steps: int | None = None,
        keep_previous: float = TrainConfig.keep_previous, k: int = 3, holdout: int | None = None) -> list[dict]:
    image, geom, ref, names = load_case(case)
    features = FeatureCache()
    features.prepare(image, geom.spacing)
    classes = list(range(1, len(names)))
    scribbles, corrections, model, out = simulate_scribbles(ref, k, seed=seed), None, None, []
    default = TrainConfig()
    for r in range(rounds + 1):
        cfg = TrainConfig(time_budget=None if steps else budget, max_steps=steps, seed=seed + r, device="cpu", plateau=True,
                          plateau_tolerance=1e-9, plateau_stall=10**6,  # checks recorded, never stopping
                          keep_previous=keep_previous, holdout_every=holdout, holdout_round=r)
        trainer = Trainer(image, scribbles, cfg, corrections=corrections, init=model, spacing=geom.spacing,
                          class_names=names, features=features)
        with _Recorder() as rec:
            result = run_to_end(trainer.run())
        model, rule, stop_at = result.model, Plateau(default.plateau_tolerance, default.plateau_patience,
                                                              default.plateau_stall), None
        rows, nk = [], len(names)
        forest_only = None
        if holdout and trainer.heldout is not None and model.forest is not None:
            pred = _predict(model, None, np.zeros(nk), image, geom, trainer.y, features)
            forest_only = {"dice": round(_mean_dice(pred, ref, classes), 4), "held": _held(pred, trainer, nk)}
            log(f"  forest alone: Dice {forest_only['dice']:.3f}, held-out {forest_only['held']}")
        for check, state in rec.states:
            pred = _predict(model, state, check.trust, image, geom, trainer.y, features)
            row = {**check.to_dict(), "dice": round(_mean_dice(pred, ref, classes), 4)}
            if forest_only is not None:
                row["held_fused"] = _held(pred, trainer, nk)
                net_only = _predict(model, state, None, image, geom, trainer.y, features, forest=False, refine=False,
                                    stroke_regions_only=False)
                row["held_net"] = _held(net_only, trainer, nk)
                row["net_voxels"] = [int(np.count_nonzero(net_only == c)) for c in range(nk)]
                trust = np.array([1.0 if a is None else a for a in row["held_net"]])
                row["dice_held_trust"] = round(_mean_dice(_predict(model, state, trust, image, geom, trainer.y, features),
                                                          ref, classes), 4)
                log(f"    step {check.step}: dice {row['dice']:.3f} in-sample {row['agreement']} held-out net "
                    f"{row['held_net']} fused {row['held_fused']} -> dice with held-out trust {row['dice_held_trust']:.3f}")
            if stop_at is None and rule.reached(check):
                stop_at = check.step
            row["rule_stops_here"] = stop_at == check.step
            rows.append(row)
        at = next((x for x in rows if x["rule_stops_here"]), rows[-1])
        log(f"{case} seed {seed} round {r}: rule stops at step {at['step']} ({at['seconds']:.0f} s) with Dice "
            f"{at['dice']:.3f}; the end ({rows[-1]['step']} steps, {rows[-1]['seconds']:.0f} s): {rows[-1]['dice']:.3f}; "
            f"best check {max(x['dice'] for x in rows):.3f}")
        out.append({"case": case, "seed": seed, "round": r, "checks": rows, "stop_step": stop_at, "forest_only": forest_only})
        if r < rounds:
            pred = predict_volume(model, image, PredictConfig(device="cpu", uncertainty=False), trainer.y, geom.spacing,
                                  features=features).labels
            new = simulate_corrections(pred, ref, k, seed=seed + 17 * (r + 1))
            corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    return out


def score(rows: list[dict], rules, log) -> None:
    """Replay recorded checks under other (tolerance, patience[, stall[, correction tolerance]]) rules.

    Where each would stop, and its Dice there; the correction tolerance applies to rounds after
    the first (the correction rounds), the tolerance to the first.

    Steps, not seconds, are compared (a busy machine's seconds say nothing about a rule). The
    Dice of a stop is set against the round's last check (``--steps``: the bound), and the
    checkpoint-to-checkpoint spread of the Dice after step 300 is printed as the noise floor.
    """
    for tol, patience, *more in rules:
        stall = more[0] if more else TrainConfig().plateau_stall
        corr_tol = more[1] if len(more) > 1 else tol
        stops = []
        for r in rows:
            rule = Plateau(corr_tol if r["round"] > 0 else tol, patience, stall)
            at = next((c for c in r["checks"] if rule.reached(Check(c["step"], c["seconds"], c["agreement"], c["change"],
                                                                     c["corrections"]))), r["checks"][-1])
            stops.append((r, at, at["dice"] - r["checks"][-1]["dice"]))
        gaps = [g for _, _, g in stops]
        log(f"tolerance {tol} (corrections {corr_tol}) patience {patience} stall {stall}: median {np.median([a['step'] for _, a, _ in stops]):.0f} steps, "
            f"Dice vs the end mean {np.mean(gaps):+.4f}, worst {min(gaps):+.3f}")
        for r, at, gap in stops:
            log(f"    {r['case']:<16} seed {r['seed']} round {r['round']}: step {at['step']:4d}  Dice {at['dice']:.3f} ({gap:+.3f})")
    for r in rows:
        late = [c["dice"] for c in r["checks"] if c["step"] >= 300]
        if late:
            log(f"  noise floor {r['case']:<16} seed {r['seed']} round {r['round']}: Dice sd {np.std(late):.3f} "
                f"over {len(late)} checks after step 300 (range {min(late):.3f}-{max(late):.3f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=[c for c in CASES if c != "sample_ct_crop"], choices=list(CASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--k", type=int, default=3, help="slices per axis the simulated annotator strokes (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="correction rounds after the first (default 1)")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--steps", type=int, default=None,
                    help="train every round this many steps instead of --budget seconds (a bound that does not "
                         "depend on the machine's load; compare rules by steps)")
    ap.add_argument("--keep-previous", type=float, default=TrainConfig.keep_previous,
                    help="TrainConfig.keep_previous of the correction rounds (0: off, as before it existed)")
    ap.add_argument("--holdout", type=int, default=None, metavar="N",
                    help="hold one in N stroke pieces of each class out of the round and record, per check, the "
                         "network's and the fused mask's Dice on them (and the Dice with them as the trust)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "plateau.json"))
    ap.add_argument("--score", metavar="JSON", default=None,
                    help="no training: replay the checks recorded in JSON under other tolerances and patiences")
    args = ap.parse_args(argv)
    if args.score:
        score(json.loads(Path(args.score).read_text()), [(0.01, 2), (0.01, 1), (0.02, 2), (0.03, 2), (0.05, 1), (0.01, 2, 5),
                                                         (0.01, 2, 3), (0.01, 2, 10, 0.02)],
              lambda m: print(m, flush=True))
        return
    rows = []
    for case in args.cases:
        for seed in args.seeds:
            rows += run(case, seed, args.rounds, args.budget, lambda m: print(m, flush=True), args.steps, args.keep_previous, args.k,
                        args.holdout)
            Path(args.out).write_text(json.dumps(rows, indent=1))  # after each case and seed: a long run can be read early


if __name__ == "__main__":
    main()
