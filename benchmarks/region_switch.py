"""Where the brain tumour's annotator-2 round (k = 2) switches: the mask's size before and after the region filter.

    .venv/bin/python benchmarks/region_switch.py

Trains that round for 320 steps (checks recorded, none stopping it) and, at some checks, predicts
the whole scan as a round does, without the stroke-region filter, and without the CRF; prints the
tumour's voxels and Dice of each against the 4,137 true voxels.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cases import load_case
from benchmarks.plateau import _mean_dice, _predict, _Recorder
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.monitor import Plateau
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

Plateau.reached = lambda self, c: False
image, geom, ref, names = load_case("mr_brain_tumour")
f = FeatureCache(); f.prepare(image, geom.spacing)
scr = simulate_scribbles(ref, 2, seed=2)
cfg = TrainConfig(max_steps=320, time_budget=None, seed=2, device="cpu")
tr = Trainer(image, scr, cfg, spacing=geom.spacing, class_names=names, features=f)
with _Recorder() as rec:
    res = run_to_end(tr.run())
for check, state in rec.states:
    if check.step % 40 and check.step not in (100, 220): continue
    kept = _predict(res.model, state, check.trust, image, geom, tr.y, f)
    allr = _predict(res.model, state, check.trust, image, geom, tr.y, f, stroke_regions_only=False)
    norf = _predict(res.model, state, check.trust, image, geom, tr.y, f, refine=False)
    print(f"step {check.step}: dice {_mean_dice(kept, ref, [1]):.3f} tumour voxels {int((kept==1).sum())}; "
          f"before the region filter {int((allr==1).sum())} (dice {_mean_dice(allr, ref, [1]):.3f}); "
          f"without CRF {int((norf==1).sum())} (dice {_mean_dice(norf, ref, [1]):.3f}); true {int((ref==1).sum())}", flush=True)
