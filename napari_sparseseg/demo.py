"""``sparseseg demo``: the whole scribble -> train -> predict -> correct loop on the sample data.

Headless. Each round trains (warm-started after the first) within a time budget, predicts
the whole volume, prints Dice per class against the bundled reference, then a simulated
annotator paints corrections where the prediction is wrong, as a person would, for the next
round. Writes the final mask, the corrections and the model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_sparseseg.core.errors import InputError

SAMPLE_NAME = "ct_abdomen_crop"


def find_sample_data(data_dir=None) -> Path:
    """The sample folder: ``data_dir`` if given, else ``sample_data/ct_abdomen_crop`` of the checkout."""
    if data_dir is not None:
        p = Path(data_dir)
    else:
        p = Path(__file__).resolve().parents[1] / "sample_data" / SAMPLE_NAME
    need = ["image.nii.gz", "scribbles.nii.gz", "reference.nii.gz", "classes.json"]
    missing = [n for n in need if not (p / n).is_file()]
    if missing:
        raise InputError(
            f"sample data incomplete ({', '.join(missing)} missing); install from a clone of the repository "
            "(pip install -e .) or pass --data DIR.",
            path=p,
        )
    return p


def load_sample(data_dir=None) -> dict:
    """Image, geometry, scribbles, reference mask and class names of the bundled sample."""
    from napari_sparseseg.io import read_image, read_labels

    p = find_sample_data(data_dir)
    image, geom = read_image(p / "image.nii.gz")
    scribbles, _ = read_labels(p / "scribbles.nii.gz", like=geom, what="scribbles")
    reference, _ = read_labels(p / "reference.nii.gz", like=geom, what="reference")
    names = json.loads((p / "classes.json").read_text())
    return {"path": p, "image": image, "geometry": geom, "scribbles": scribbles, "reference": reference, "class_names": names}


def run_demo(data_dir=None, out_dir="sparseseg_demo_out", time_budget: float = 60.0, rounds: int = 2,
             device: str = "auto", seed: int = 0, quiet: bool = False, out=sys.stdout) -> list[dict]:
    """Run the loop; print a Dice table on ``out``; return one dict per round."""
    from napari_sparseseg.cli import _StderrProgress
    from napari_sparseseg.core.annotator import simulate_corrections
    from napari_sparseseg.core.checkpoint import save_model
    from napari_sparseseg.core.labels import merge_annotations
    from napari_sparseseg.core.metrics import dice_per_class
    from napari_sparseseg.core.predict import PredictConfig, predict
    from napari_sparseseg.core.train import TrainConfig, Trainer, run_to_end
    from napari_sparseseg.io import check_writable, write_labels

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    sample = load_sample(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir / "mask.nii.gz", "demo output")
    image, geom, ref, names = sample["image"], sample["geometry"], sample["reference"], sample["class_names"]
    classes = list(range(1, len(names)))
    show = _StderrProgress(quiet=quiet)
    print(f"napari-sparseseg demo: {sample['path']}  shape {image.shape}  spacing {tuple(round(s, 2) for s in geom.spacing)} mm", file=out)
    print(f"scribbled voxels: {int((sample['scribbles'] > 0).sum())} of {image.size}; {rounds} round(s), {time_budget:g} s training each", file=out)
    header = f"{'round':>5} {'steps':>5} {'train s':>8} {'pred s':>7} " + " ".join(f"{n[:12]:>12}" for n in names[1:]) + f" {'mean':>6}"
    print(header, file=out, flush=True)

    model, corrections, rows, t_start = None, None, [], time.perf_counter()
    for r in range(1, rounds + 1):
        cfg = TrainConfig(time_budget=time_budget, max_steps=100000, seed=seed + r, device=device)
        trainer = Trainer(image, sample["scribbles"], cfg, corrections=corrections, init=model, spacing=geom.spacing, class_names=names)
        result = run_to_end(trainer.run(), show)
        model = result.model
        t0 = time.perf_counter()
        pred = run_to_end(predict(model, image, PredictConfig(device=device, uncertainty=False), trainer.y), show)
        t_pred = time.perf_counter() - t0
        dice = dice_per_class(pred.labels, ref, classes)
        mean = float(np.mean(list(dice.values())))
        rows.append({"round": r, "steps": result.steps, "train_s": result.elapsed, "predict_s": t_pred, "dice": dice, "mean_dice": mean})
        print(f"{r:>5} {result.steps:>5} {result.elapsed:>8.1f} {t_pred:>7.1f} " + " ".join(f"{dice[c]:>12.3f}" for c in classes) + f" {mean:>6.3f}", file=out, flush=True)
        if r < rounds:
            new = simulate_corrections(pred.labels, ref, k=2, seed=seed + 100 * r)
            corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    write_labels(out_dir / "mask.nii.gz", pred.labels, geom)
    if corrections is not None:
        write_labels(out_dir / "corrections.nii.gz", corrections, geom)
    save_model(model, out_dir / "model")
    print(f"total {time.perf_counter() - t_start:.1f} s; wrote {out_dir / 'mask.nii.gz'} and {out_dir / 'model'}", file=out)
    return rows
