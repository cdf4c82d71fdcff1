"""Cohort accuracy: one scan's strokes, then refined on strokes from 1 and 2 more scans, vs per-scan training.

The cohort is derived from ONE real scan of ``../shared/data`` (``--case``): scan 0 is the
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
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.model.intensity import detect_modality  # noqa: E402
from napari_sparseseg.core.training.train import Trainer, TrainingScan  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="ct_abdomen")
    ap.add_argument("--scans", type=int, default=6, help="cohort size (>= 4: scans 3.. are the test scans)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=3, help="stroke slices per axis")
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds of a new or refined model")
    ap.add_argument("--fine-tune", type=float, default=30.0, help="seconds of a per-scan fine-tune")
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cohort.json"))
    args = ap.parse_args(argv)
    if args.scans < 4:
        ap.error("--scans must be at least 4")
    log_path = Path(args.out).with_suffix(".log")
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)
        log_path.write_text("\n".join(lines) + "\n")

    result = run(args.case, args.scans, args.seeds, args.budget, args.fine_tune, args.cohort_seed, args.k, log)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
