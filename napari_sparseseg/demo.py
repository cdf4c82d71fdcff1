"""``sparseseg demo``: the whole scribble -> train -> predict -> correct loop on the sample data.

Headless. Each round trains (warm-started after the first) within a time budget, predicts
the whole volume, prints Dice per class against the bundled reference, then a simulated
annotator paints corrections where the prediction is wrong, as a person would, for the next
round. Writes the final mask, the corrections and the model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from napari_sparseseg.core.annotations.labels import merge_annotations
from napari_sparseseg.core.base.config import DemoConfig, PredictConfig, TrainConfig
from napari_sparseseg.core.base.progress import ProgressPrinter, run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections
from napari_sparseseg.io import OutputLog, check_demo_folder, check_outputs, write_labels
from napari_sparseseg.io.atomic import replace_folder
from napari_sparseseg.io.models import save_model
from napari_sparseseg.io.outputs import DEMO_FILES
from napari_sparseseg.io.sample import find_sample_data, load_sample

__all__ = ["run_demo"]


def run_demo(data_dir=None, out_dir="sparseseg_demo_out", cfg: DemoConfig | None = None, quiet: bool = False,
             out=None, log=None) -> list[dict]:
    """Run the loop; print a Dice table on ``out``; return one dict per round.

    ``out_dir`` is checked before any work (new, empty, or an earlier demo output; not the
    sample folder) and written at the end in one rename (mask, corrections and model together).

    Args:
        data_dir: the sample folder (default: the one bundled with the package, ``napari_sparseseg/data/ct_abdomen_crop``).
        out_dir: where the mask, the corrections and the model are written.
        cfg: rounds, seconds per round, device and seed.
        quiet: no progress on stderr.
        out: where the table goes (default: ``sys.stdout`` at the time of the call).
        log: an :class:`~napari_sparseseg.io.OutputLog` recording the write (the CLI's).

    Raises:
        OutputError: ``out_dir`` may not be written (says why); nothing is written then.
    """
    cfg = cfg or DemoConfig()
    out = out if out is not None else sys.stdout
    out_dir = Path(out_dir)
    log = log if log is not None else OutputLog()
    check_outputs({"demo output": out_dir}, {"sample data folder": find_sample_data(data_dir)})
    log.plan({"demo output": out_dir})
    sample = load_sample(data_dir)
    image, geom, ref, names = sample["image"], sample["geometry"], sample["reference"], sample["class_names"]
    classes = list(range(1, len(names)))
    print(f"napari-sparseseg demo: {sample['path']}  shape {image.shape}  spacing {tuple(round(s, 2) for s in geom.spacing)} mm", file=out)
    print(f"scribbled voxels: {int((sample['scribbles'] > 0).sum())} of {image.size}; {cfg.rounds} round(s), "
          f"{cfg.time_budget:g} s training each", file=out)
    header = f"{'round':>5} {'steps':>5} {'train s':>8} {'pred s':>7} " + " ".join(f"{n[:12]:>12}" for n in names[1:]) + f" {'mean':>6}"
    print(header, file=out, flush=True)

    model, corrections, rows, t_start = None, None, [], time.perf_counter()
    features = FeatureCache()  # the forest's filters of the scan: computed once for every round
    for r in range(1, cfg.rounds + 1):
        tcfg = TrainConfig(time_budget=cfg.time_budget, max_steps=None, seed=cfg.seed + r, device=cfg.device)
        trainer = Trainer(image, sample["scribbles"], tcfg, corrections=corrections, init=model, spacing=geom.spacing,
                          class_names=names, features=features)
        with ProgressPrinter(quiet=quiet) as show:
            result = run_to_end(trainer.run(), show)
            model = result.model
            t0 = time.perf_counter()
            pred = run_to_end(predict(model, image, PredictConfig(device=cfg.device, uncertainty=False), trainer.y,
                                      geom.spacing, features=features), show)
        t_pred = time.perf_counter() - t0
        dice = dice_per_class(pred.labels, ref, classes)
        mean = float(np.mean(list(dice.values())))
        rows.append({"round": r, "steps": result.steps, "train_s": result.elapsed, "predict_s": t_pred, "dice": dice, "mean_dice": mean})
        print(f"{r:>5} {result.steps:>5} {result.elapsed:>8.1f} {t_pred:>7.1f} " + " ".join(f"{dice[c]:>12.3f}" for c in classes)
              + f" {mean:>6.3f}", file=out, flush=True)
        if r < cfg.rounds:
            new = simulate_corrections(pred.labels, ref, k=2, seed=cfg.seed + 100 * r)
            corrections = new if corrections is None else merge_annotations(corrections, new)[0]
    mask_name, corr_name, model_name = DEMO_FILES

    def build(tmp: Path) -> None:
        write_labels(tmp / mask_name, pred.labels, geom)
        if corrections is not None:
            write_labels(tmp / corr_name, corrections, geom)
        save_model(model, tmp / model_name)

    log.write("demo output", lambda: replace_folder(out_dir, build, check=check_demo_folder))
    print(f"total {time.perf_counter() - t_start:.1f} s; wrote {out_dir / 'mask.nii.gz'} and {out_dir / 'model'}", file=out)
    return rows
