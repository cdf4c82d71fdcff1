"""Annotation effort: painting on the suggested slices against evenly spaced ones.

A simulated annotator starts from strokes on 1 slice per axis (``simulate_scribbles``), then
each round corrects ``--per-round`` slices: the largest wrong regions on each (at most 3, one
stroke each, the stroke length set by the region's size, as in ``correct_slices``). The two
annotators differ only in which slices they pick:

* ``suggested``: the top slices of :func:`napari_sparseseg.core.annotations.guide.suggest_slices` on the
  last prediction (uncertainty, strokes so far), as the widget lists them;
* ``even``: evenly spaced slices, cycling through the three orientations, spreading over the
  structures' extent round after round (a van der Corput sequence), never the same twice.

Both train the same network warm-started round to round, bounded by ``--steps`` steps (not by
time, so the result does not depend on the machine's load), predict with the defaults
(forest, CRF, stroke-region filter) and count the strokes drawn. Reports mean Dice after each
round and the strokes needed to first reach ``--target`` mean Dice, per case and seed.

    python benchmarks/effort.py --seeds 0 1 2 --rounds 5 --out benchmarks/results/effort.json
    python benchmarks/effort.py --start boxes --strategies even --out benchmarks/results/effort_boxes.json
    python benchmarks/effort.py --start boxes --strategies even --keep-cores  # boxes' cores never retire
    python benchmarks/effort.py --summarize benchmarks/results/effort.json   # strokes saved, from a results file
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.annotations.guide import suggest_slices  # noqa: E402
from napari_sparseseg.core.annotations.hints import hint_labels  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, SuggestConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import correct_slices, simulate_scribbles  # noqa: E402


def _van_der_corput(n: int) -> float:
    x, base = 0.0, 0.5
    while n:
        x += base * (n & 1)
        n >>= 1
        base /= 2
    return x


def even_slices(ref: np.ndarray, start: int, count: int) -> list[tuple[int, int]]:
    """``count`` slices from position ``start`` of the even sequence: axes in turn, spread over the structures."""
    out = []
    for n in range(start, start + count):
        axis, j = n % 3, n // 3 + 1
        fg = np.flatnonzero(np.any(ref > 0, axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = (fg[0], fg[-1]) if fg.size else (0, ref.shape[axis] - 1)
        out.append((axis, int(round(lo + (hi - lo) * _van_der_corput(j)))))
    return out


def start_hints(image, ref, spacing, start: str, seed: int):
    """``(scribbles, boxes, clicks, actions)`` of a start: strokes on 1 slice per axis, one 3-D box
    per structure (its bounding box), or 3 clicks per structure and 3 outside (deep inside each)."""
    from scipy import ndimage as ndi

    from napari_sparseseg.core.annotations.hints import Box, Click

    if start == "strokes":
        scribbles = simulate_scribbles(ref, 1, seed=seed)
        return scribbles, [], [], int(sum(1 for _ in _components(scribbles)))
    rng = np.random.default_rng(seed)
    scribbles = np.zeros(ref.shape, np.uint8)
    values = [int(v) for v in np.unique(ref) if v > 0]
    if start == "boxes":
        boxes = []
        for c in values:
            (sl,) = ndi.find_objects((ref == c).astype(np.uint8))
            boxes.append(Box(c, tuple(x.start for x in sl), tuple(x.stop - 1 for x in sl)))
        return scribbles, boxes, [], len(boxes)
    clicks = []
    for c in [0, *values]:
        inside = ndi.distance_transform_edt(ref == c, sampling=spacing)
        deep = np.argwhere(inside >= max(2.0, 0.5 * inside.max()))
        if c == 0:  # outside clicks near the structures, as a user would place them
            near = ndi.distance_transform_edt(ref == 0, sampling=spacing)
            deep = np.argwhere((near > 3) & (near < 15))
        for i in rng.choice(len(deep), size=min(3, len(deep)), replace=False):
            clicks.append(Click(c, tuple(int(v) for v in deep[i])))
    return scribbles, [], clicks, len(clicks)


def run(case: str, seed: int, strategy: str, rounds: int, per_round: int, steps: int, log, start: str = "strokes",
        keep_cores: bool = False) -> dict:
    image, geom, ref, names = load_case(case)
    features = FeatureCache()  # the forest's filters of this scan, once for every round (as a session keeps them)
    classes = list(range(1, len(names)))
    scribbles, boxes, clicks, strokes = start_hints(image, ref, geom.spacing, start, seed)
    corrections, model, rows, used = None, None, [], 0
    for r in range(rounds + 1):
        hints = None
        if boxes or clicks:  # read each round, as the widget does: painted boxes give up their cores
            painted = merge_annotations(scribbles, corrections)[0]
            hints = hint_labels(image, boxes, clicks, geom.spacing, painted=None if keep_cores else painted,
                                num_classes=len(names))
        cfg = TrainConfig(max_steps=steps, time_budget=None, seed=seed + r, device="cpu")
        model = run_to_end(Trainer(image, scribbles, cfg, corrections=corrections, init=model, spacing=geom.spacing,
                                   class_names=names, hints=hints, features=features).run()).model
        y, _ = merge_annotations(scribbles, corrections, hints)
        pred = predict_volume(model, image, PredictConfig(device="cpu"), y, geom.spacing, features=features)
        dice = float(np.mean(list(dice_per_class(pred.labels, ref, classes).values())))
        rows.append({"round": r, "strokes": strokes, "mean_dice": dice})
        log(f"{case} seed {seed} {start}+{strategy} round {r}: Dice {dice:.3f} after {strokes} strokes")
        if r == rounds:
            break
        if strategy == "suggested":
            painted = merge_annotations(scribbles, corrections)[0]  # the strokes, not the pseudo-labels
            picks = suggest_slices(pred.labels, pred.uncertainty, painted, geom.spacing, SuggestConfig(count=per_round))
            slices = [(s.axis, s.index) for s in picks]
        else:
            slices = even_slices(ref, used, per_round)
            used += per_round
        new, n = correct_slices(pred.labels, ref, slices, seed=seed + 17 * (r + 1))
        strokes += n
        corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    return {"case": case, "seed": seed, "strategy": strategy, "start": start, "keep_cores": keep_cores, "rounds": rows}


def _components(scribbles: np.ndarray):
    """The strokes of a simulated scribble volume: its connected pieces per class value."""
    from scipy import ndimage as ndi

    for v in np.unique(scribbles[scribbles > 0]):
        lab, n = ndi.label(scribbles == v)
        yield from range(n)


def strokes_to_reach(rows: list[dict], target: float) -> int | None:
    """Strokes drawn when mean Dice first reaches ``target`` (``None`` if never)."""
    return next((r["strokes"] for r in rows if r["mean_dice"] >= target), None)


def saving(runs: list[dict], target: float) -> dict:
    """Strokes to ``target`` with the suggestions against evenly spaced slices, paired by case and seed.

    ``both``: runs where both reached it; ``censored``: every pair, a run that never reached it
    counted as its last strokes plus one more round's (9).
    """
    even = {(r["case"], r["seed"]): r for r in runs if r["strategy"] == "even"}
    pairs = [(r, even[(r["case"], r["seed"])]) for r in runs
             if r["strategy"] == "suggested" and (r["case"], r["seed"]) in even]

    def censored(rows):
        v = strokes_to_reach(rows, target)
        return v if v is not None else rows[-1]["strokes"] + 9

    both = [(strokes_to_reach(a["rounds"], target), strokes_to_reach(b["rounds"], target)) for a, b in pairs]
    both = [(a, b) for a, b in both if a is not None and b is not None]
    cs = [(censored(a["rounds"]), censored(b["rounds"])) for a, b in pairs]
    out = {"pairs": len(pairs), "both_reached": len(both)}
    if both:
        a, b = np.mean([x[0] for x in both]), np.mean([x[1] for x in both])
        out.update(both_suggested=float(a), both_even=float(b), both_saving=float(1 - a / b))
    if cs:
        a, b = np.mean([x[0] for x in cs]), np.mean([x[1] for x in cs])
        out.update(censored_suggested=float(a), censored_even=float(b), censored_saving=float(1 - a / b))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=3, help="slices corrected per round")
    ap.add_argument("--steps", type=int, default=150, help="training steps per round")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--strategies", nargs="+", default=["suggested", "even"])
    ap.add_argument("--start", choices=("strokes", "boxes", "clicks"), default="strokes",
                    help="round 0 from strokes on 1 slice per axis, one 3-D box per structure, or 3 clicks per "
                         "structure (and 3 outside); the strokes column then counts boxes or clicks as one each")
    ap.add_argument("--keep-cores", action="store_true",
                    help="keep every box's core pseudo-labels after its class is painted (the behaviour before; "
                         "by default a painted box keeps only its background band)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "effort.json"))
    ap.add_argument("--summarize", metavar="JSON", help="only print the summary of a results file written before")
    args = ap.parse_args(argv)
    if args.summarize:
        doc = json.loads(Path(args.summarize).read_text())
        print(json.dumps(saving(doc["runs"], doc["args"].get("target", args.target)), indent=1))
        return
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    for case in args.cases:
        for seed in args.seeds:
            for strategy in args.strategies:
                runs.append(run(case, seed, strategy, args.rounds, args.per_round, args.steps, log, args.start,
                                args.keep_cores))
                out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    summary = {}
    for strategy in args.strategies:
        mine = [r for r in runs if r["strategy"] == strategy]
        curve = np.mean([[row["mean_dice"] for row in r["rounds"]] for r in mine], axis=0)
        strokes = np.mean([[row["strokes"] for row in r["rounds"]] for r in mine], axis=0)
        reach = [strokes_to_reach(r["rounds"], args.target) for r in mine]
        summary[strategy] = {"mean_dice_per_round": curve.tolist(), "mean_strokes_per_round": strokes.tolist(),
                             "strokes_to_target": reach}
        log(f"{strategy}: Dice per round " + " ".join(f"{v:.3f}" for v in curve) + "; strokes "
            + " ".join(f"{v:.0f}" for v in strokes) + f"; strokes to {args.target}: {reach}")
    if {"suggested", "even"} <= set(args.strategies):
        summary["saving"] = saving(runs, args.target)
        log(f"strokes to {args.target}, suggested against even: {summary['saving']}")
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
