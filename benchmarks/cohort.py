"""Cohort accuracy across patients: a real-patient mode, and a synthetic cohort derived from one scan.

**Real patients** (``--real CASE CASE ...``): leave-one-patient-out over real scans of one kind
(the brain-tumour pair ``mr_brain_tumour`` / ``mr_brain_tumour2`` of ``../shared/data``, two
patients scanned alike). For each held-out patient B and each other patient A, per seed: a
*source* model is trained on A's simulated strokes (3 slices per axis); then on B, per round
0..``--rounds`` (round 0 on B's strokes, later rounds adding simulated corrections of that arm's
own mask, warm-starting from its own previous round, as ``benchmarks/accuracy.py`` does):

* ``scratch``: B's strokes, a new model;
* ``warm``: B's strokes, warm-started from A's model (what ``segment --init-model``,
  ``batch --fine-tune-scribbles`` and the Cohort widget's Refine do);
* ``zero_shot``: A's model on B before any stroke of B (round 0 only).

Every training is bounded by steps (``--steps``, ``--correction-steps``; ``time_budget`` off), so
the arms get the same work on a loaded machine. ``--crop-mm`` crops each scan to its reference's
box plus that margin (all arms alike; the default, 0, keeps the whole scan).

    python benchmarks/cohort.py --real mr_brain_tumour mr_brain_tumour2 --seeds 0 1 2 --steps 150 \
        --correction-steps 80 --crop-mm 40 --out benchmarks/results/cohort_real_brain.json

**Synthetic** (``--case``, the default mode): the cohort is derived from ONE real scan of
``../shared/data``: scan 0 is the
scan itself; scans 1..N-1 are each a random elastic deformation plus affine (MONAI
``Rand3DElasticd``: rotation up to 0.15 rad about each axis, scale ±10 %, smooth displacement
of a few voxels) of scan and reference together (reference by nearest neighbour), then a
random crop to 80–95 % of each axis, an intensity change and Gaussian noise (CT: gain ±3 %,
offset ±20 HU, noise σ 10–20 HU; MRI: gain ±15 %, offset ±5 % of the range, noise σ 2–4 % of
the range). Ground truth is the deformed, cropped reference. Seeded: the cohort depends on
``--cohort-seed`` only, the strokes and training on ``--seeds``.

Per seed, Dice on the test scans 3..N-1 (the same scans for every arm):

* (a) ``one``: strokes on 3 slices per axis of scan 0, a new model trained ``--budget`` s;
* (b) ``refine1`` / ``refine2``: (a)'s model refined (warm start, multi-scan training,
  ``--budget`` s) on the strokes of scans 0+1 / 0+1+2;
* (c) ``per_scan``: strokes on each test scan, a new model trained ``--budget`` s on it alone
  (per-scan training with strokes on every scan: the target's reference);
  ``fine_tune``: (a)'s model fine-tuned ``--fine-tune`` s on each test scan's strokes (what
  ``sparseseg batch --fine-tune-scribbles`` does);
* the forest (ilastik-style filters, benchmarks/baseline_rf.py) on the same strokes:
  ``rf_one`` (scan 0's strokes), ``rf_refine2`` (scans 0–2), ``rf_per_scan``.

    python benchmarks/cohort.py --case ct_abdomen --seeds 0 1 2 --out benchmarks/results/cohort_ct.json
    python benchmarks/cohort.py --case mr_abdomen --scans 6 --budget 30 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline_rf import ilastik_features  # noqa: E402
from benchmarks.cases import load_case  # noqa: E402
from napari_sparseseg.core.annotations.labels import merge_annotations  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.model.intensity import detect_modality  # noqa: E402
from napari_sparseseg.core.training.train import Trainer, TrainingScan  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles  # noqa: E402

ARMS = ("one", "refine1", "refine2", "per_scan", "fine_tune", "rf_one", "rf_refine2", "rf_per_scan")


def derive(image: np.ndarray, ref: np.ndarray, spacing, seed: int, modality: str):
    """One derived scan: elastic + affine deformation, crop, intensity change, noise; returns ``(image, ref)``."""
    from monai.transforms import Rand3DElasticd

    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    # Displacement of a few mm, smooth over ~5 voxels; rotations in-plane only for thick slices.
    thick = sp.max() / sp.min() > 2.5
    rot = tuple(0.15 if (not thick or i == int(np.argmax(sp))) else 0.0 for i in range(3))
    t = Rand3DElasticd(keys=("image", "label"), sigma_range=(5, 7), magnitude_range=(40, 80), prob=1.0,
                       rotate_range=rot, scale_range=(0.1, 0.1, 0.1), mode=("bilinear", "nearest"),
                       padding_mode="border")
    t.set_random_state(seed=seed)
    out = t({"image": image[None].astype(np.float32), "label": ref[None].astype(np.float32)})
    img, lab = np.asarray(out["image"])[0], np.asarray(out["label"])[0].round().astype(ref.dtype)
    keep = [rng.uniform(0.8, 0.95) for _ in range(3)]
    sl = []
    for n, f in zip(img.shape, keep, strict=True):
        size = max(16, int(round(n * f)))
        start = int(rng.integers(0, n - size + 1))
        sl.append(slice(start, start + size))
    img, lab = img[tuple(sl)], lab[tuple(sl)]
    lo, hi = np.percentile(image, [1, 99])
    if modality == "ct":
        img = img * rng.uniform(0.97, 1.03) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(10, 20), img.shape)
    else:
        span = hi - lo
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05) * span + rng.normal(0, rng.uniform(0.02, 0.04) * span, img.shape)
    return img.astype(np.float32), np.ascontiguousarray(lab)


def _train(scans, budget, seed, init=None, names=None):
    first, more = scans[0], scans[1:]
    cfg = TrainConfig(time_budget=budget, max_steps=None, seed=seed, device="cpu")
    t = Trainer(first.image, first.scribbles, cfg, init=init, spacing=first.spacing, class_names=names,
                more_scans=more)
    return run_to_end(t.run()).model


def _dice(model, image, ref, spacing, classes, strokes=None):
    pred = predict_volume(model, image, PredictConfig(device="cpu", uncertainty=False), strokes, spacing).labels
    return float(np.mean(list(dice_per_class(pred, ref, classes).values())))


def _rf(train, test_feats, seed):
    """The forest on the strokes of ``train`` ((features, strokes) pairs), applied to ``test_feats``."""
    from sklearn.ensemble import RandomForestClassifier

    xs = [f[:, s > 0].T for f, s in train]
    ys = [s[s > 0].astype(np.int64) - 1 for _, s in train]
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed).fit(np.concatenate(xs), np.concatenate(ys))
    flat = test_feats.reshape(test_feats.shape[0], -1)
    out = np.empty(flat.shape[1], np.uint8)
    for s in range(0, flat.shape[1], 1 << 19):
        out[s : s + (1 << 19)] = rf.classes_[rf.predict_proba(flat[:, s : s + (1 << 19)].T).argmax(1)]
    return out.reshape(test_feats.shape[1:])


def run(case: str, n_scans: int, seeds, budget: float, fine_tune: float, cohort_seed: int, k: int, log) -> dict:
    image, geom, ref, names = load_case(case)
    classes = list(range(1, len(names)))
    modality = detect_modality(image)
    scans = [(image.astype(np.float32), ref)]
    for i in range(1, n_scans):
        scans.append(derive(image, ref, geom.spacing, cohort_seed * 1000 + i, modality))
    sp = geom.spacing
    feats = [ilastik_features(s[0]) for s in scans]
    log(f"{case}: {n_scans} scans ({', '.join('x'.join(map(str, s[0].shape)) for s in scans)}), {modality}")
    test = list(range(3, n_scans))
    rows = []
    for seed in seeds:
        strokes = [simulate_scribbles(r, k, seed=seed * 100 + i) for i, (_, r) in enumerate(scans)]
        ts = [TrainingScan(img, st, None, sp, f"scan{i}") for i, ((img, _), st) in enumerate(zip(scans, strokes, strict=True))]
        row = {"seed": seed, "test_scans": test}

        def score(model, arm, row=row):
            d = [_dice(model, scans[i][0], scans[i][1], sp, classes) for i in test]
            row[arm] = {"per_scan": d, "mean": float(np.mean(d))}

        t = time.perf_counter()
        one = _train([ts[0]], budget, seed, names=names)
        score(one, "one")
        score(_train(ts[:2], budget, seed + 1, init=one), "refine1")
        score(_train(ts[:3], budget, seed + 1, init=one), "refine2")
        per, fine = [], []
        for i in test:
            per.append(_dice(_train([ts[i]], budget, seed, names=names), scans[i][0], scans[i][1], sp, classes, strokes[i]))
            fine.append(_dice(_train([ts[i]], fine_tune, seed + 2, init=one), scans[i][0], scans[i][1], sp, classes,
                              strokes[i]))
        row["per_scan"] = {"per_scan": per, "mean": float(np.mean(per))}
        row["fine_tune"] = {"per_scan": fine, "mean": float(np.mean(fine))}
        for arm, train_ids in (("rf_one", [0]), ("rf_refine2", [0, 1, 2])):
            d = [float(np.mean(list(dice_per_class(_rf([(feats[j], strokes[j]) for j in train_ids], feats[i], seed),
                                                   scans[i][1], classes).values()))) for i in test]
            row[arm] = {"per_scan": d, "mean": float(np.mean(d))}
        d = [float(np.mean(list(dice_per_class(_rf([(feats[i], strokes[i])], feats[i], seed), scans[i][1],
                                               classes).values()))) for i in test]
        row["rf_per_scan"] = {"per_scan": d, "mean": float(np.mean(d))}
        row["seconds"] = time.perf_counter() - t
        log(f"  seed {seed}: " + "  ".join(f"{a} {row[a]['mean']:.3f}" for a in ARMS) + f"  ({row['seconds']:.0f} s)")
        rows.append(row)
    summary = {a: {"mean": float(np.mean([r[a]["mean"] for r in rows])), "sd": float(np.std([r[a]["mean"] for r in rows]))}
               for a in ARMS}
    log("  mean ± sd over seeds: " + "  ".join(f"{a} {v['mean']:.3f}±{v['sd']:.3f}" for a, v in summary.items()))
    gap = summary["per_scan"]["mean"] - summary["refine2"]["mean"]
    log(f"  target: refine2 within 0.05 of per_scan -> gap {gap:+.3f} ({'met' if gap <= 0.05 else 'missed'})")
    return {"case": case, "scans": n_scans, "k": k, "budget_s": budget, "fine_tune_s": fine_tune,
            "cohort_seed": cohort_seed, "classes": names, "rows": rows, "summary": summary, "gap_refine2_vs_per_scan": gap}


# ------------------------------------------------------------------------------------------ real patients
REAL_ARMS = ("scratch", "warm", "zero_shot")


def crop_to_reference(image: np.ndarray, ref: np.ndarray, spacing, margin_mm: float):
    """``(image, ref)`` cropped to the reference's box plus ``margin_mm`` along every axis (0: unchanged)."""
    if not margin_mm or not ref.any():
        return image, ref
    where = np.argwhere(ref > 0)
    sl = []
    for ax, (n, sp) in enumerate(zip(ref.shape, spacing, strict=True)):
        m = int(np.ceil(margin_mm / float(sp)))
        sl.append(slice(max(0, int(where[:, ax].min()) - m), min(n, int(where[:, ax].max()) + 1 + m)))
    sl = tuple(sl)
    return np.ascontiguousarray(image[sl]), np.ascontiguousarray(ref[sl])


def _round_cfg(steps: int, seed: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, time_budget=None, seed=seed, device="cpu")


def _scored(model, image, ref, spacing, classes, annotations, features) -> dict:
    pred = predict_volume(model, image, PredictConfig(device="cpu", uncertainty=False), annotations, spacing,
                          features=features).labels
    dice = dice_per_class(pred, ref, classes)
    return {"dice": {str(c): d for c, d in dice.items()}, "mean": float(np.mean(list(dice.values()))),
            "predicted_voxels": {str(c): int((pred == c).sum()) for c in classes}, "pred": pred}


def run_real(cases, seeds, steps: int, correction_steps: int, rounds: int, k: int, crop_mm: float, log) -> dict:
    """Leave-one-patient-out over real scans of one kind: scratch vs warm start vs zero-shot, per round."""
    loaded = {}
    for case in cases:
        image, geom, ref, names = load_case(case)
        image, ref = crop_to_reference(image, ref, geom.spacing, crop_mm)
        loaded[case] = (image, geom.spacing, ref, names)
        log(f"{case}: shape {image.shape}, spacing {tuple(round(float(v), 2) for v in geom.spacing)}, "
            f"reference voxels {[int((ref == c).sum()) for c in range(1, len(names))]}")
    names = loaded[cases[0]][3]
    classes = list(range(1, len(names)))
    rows = []
    for seed in seeds:
        sources = {}
        for a in cases:  # each patient's own model from its strokes: the source of the others' warm start
            image, sp, ref, _ = loaded[a]
            strokes = simulate_scribbles(ref, k, seed=seed)
            res = run_to_end(Trainer(image, strokes, _round_cfg(steps, seed), spacing=sp, class_names=names).run())
            sources[a] = res.model
            log(f"seed {seed}: source model of {a}: {res.steps} steps ({res.stopped_by})")
        for b in cases:
            image, sp, ref, _ = loaded[b]
            features = FeatureCache()
            strokes = simulate_scribbles(ref, k, seed=seed)
            for a in (c for c in cases if c != b):
                zs = _scored(sources[a], image, ref, sp, classes, None, features)
                zs.pop("pred")
                rows.append({"seed": seed, "source": a, "target": b, "arm": "zero_shot", "round": 0, **zs})
                log(f"  {a} -> {b} seed {seed} zero_shot: Dice {zs['mean']:.3f} "
                    f"(predicted {zs['predicted_voxels']})")
                for arm in ("scratch", "warm"):
                    if arm == "scratch" and any(r["arm"] == "scratch" and r["target"] == b and r["seed"] == seed
                                                for r in rows):
                        continue  # scratch does not depend on the source: once per target
                    model, corr = (sources[a] if arm == "warm" else None), None
                    for r in range(rounds + 1):
                        t = time.perf_counter()
                        n = steps if r == 0 else correction_steps
                        trainer = Trainer(image, strokes, _round_cfg(n, seed + r), corrections=corr, init=model,
                                          spacing=sp, class_names=None if model is not None else names,
                                          features=features)
                        res = run_to_end(trainer.run())
                        model = res.model
                        y, _ = merge_annotations(strokes, corr)
                        sc = _scored(model, image, ref, sp, classes, y, features)
                        pred = sc.pop("pred")
                        row = {"seed": seed, "source": a if arm == "warm" else None, "target": b, "arm": arm,
                               "round": r, **sc, "steps": res.steps, "stopped_by": res.stopped_by,
                               "train_s": round(res.elapsed, 1)}
                        rows.append(row)
                        log(f"  {a if arm == 'warm' else '-'} -> {b} seed {seed} {arm} round {r}: Dice {sc['mean']:.3f} "
                            f"({res.steps} steps, {res.stopped_by}, {time.perf_counter() - t:.0f} s; predicted "
                            f"{sc['predicted_voxels']})")
                        if r < rounds:
                            new = simulate_corrections(pred, ref, k, seed=seed + 17 * (r + 1))
                            corr = new if corr is None else merge_annotations(corr, new)[0]
    table = {}
    for b in cases:
        for arm in REAL_ARMS:
            for r in range(rounds + 1):
                got = [x["mean"] for x in rows if x["target"] == b and x["arm"] == arm and x["round"] == r]
                if got:
                    table[f"{b}|{arm}|{r}"] = {"mean": float(np.mean(got)), "sd": float(np.std(got)), "n": len(got)}
    log(f"\nmean Dice over seeds {list(seeds)} (sd), {steps} steps in round 0, {correction_steps} per correction round:")
    log(f"{'target':<20}{'arm':<11}" + "".join(f"{'round ' + str(r):>16}" for r in range(rounds + 1)))
    for b in cases:
        for arm in REAL_ARMS:
            cells = "".join(f"{table[key]['mean']:>9.3f}±{table[key]['sd']:.3f}" if (key := f"{b}|{arm}|{r}") in table
                            else f"{'':>16}" for r in range(rounds + 1))
            log(f"{b:<20}{arm:<11}{cells}")
    return {"mode": "real", "cases": list(cases), "classes": names, "k": k, "steps": steps,
            "correction_steps": correction_steps, "rounds": rounds, "crop_mm": crop_mm, "seeds": list(seeds),
            "rows": rows, "summary": table}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", nargs="+", metavar="CASE", default=None,
                    help="real-patient mode: leave-one-patient-out over these cases (e.g. mr_brain_tumour "
                         "mr_brain_tumour2); otherwise the synthetic cohort of --case")
    ap.add_argument("--steps", type=int, default=150, help="real mode: training steps of a first round")
    ap.add_argument("--correction-steps", type=int, default=80, help="real mode: training steps of a correction round")
    ap.add_argument("--rounds", type=int, default=2, help="real mode: correction rounds after the first")
    ap.add_argument("--crop-mm", type=float, default=0.0,
                    help="real mode: crop each scan to its reference's box plus this margin in mm (0: whole scan)")
    ap.add_argument("--case", default="ct_abdomen", help="synthetic mode: the one scan the cohort is derived from")
    ap.add_argument("--scans", type=int, default=6, help="cohort size (>= 4: scans 3.. are the test scans)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=3, help="stroke slices per axis")
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds of a new or refined model")
    ap.add_argument("--fine-tune", type=float, default=30.0, help="seconds of a per-scan fine-tune")
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cohort.json"))
    args = ap.parse_args(argv)
    if args.real is None and args.scans < 4:
        ap.error("--scans must be at least 4")
    if args.real is not None and len(args.real) < 2:
        ap.error("--real needs two patients or more")
    log_path = Path(args.out).with_suffix(".log")
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)
        log_path.write_text("\n".join(lines) + "\n")

    if args.real:
        result = run_real(args.real, args.seeds, args.steps, args.correction_steps, args.rounds, args.k, args.crop_mm, log)
        result["command"] = "python benchmarks/cohort.py " + " ".join(argv if argv is not None else sys.argv[1:])
    else:
        result = run(args.case, args.scans, args.seeds, args.budget, args.fine_tune, args.cohort_seed, args.k, log)
        result["mode"] = "synthetic"
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
