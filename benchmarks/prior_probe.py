"""Does the class-balanced training prior explain a network that paints look-alike tissue? (EM prior adjustment)

    .venv/bin/python benchmarks/prior_probe.py CASE SEED K STEPS

The trainer draws patches evenly over the classes and balances their weights, so the network
learns as if every class were equally common. Saerens, Latinne & Decaestecker (2002) re-estimate
a scan's class priors by EM on the classifier's own outputs and re-weight its posteriors by
new prior / training prior. This trains one round of CASE (simulated annotator SEED, K slices
per axis) for STEPS steps without stopping, and at every 60th check prints the network's own
whole-scan Dice (no forest, CRF or region filter), its class fractions, and the Dice and priors
after the EM adjustment (training prior taken as uniform). An experiment, not a default.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np

from benchmarks.cases import load_case
from benchmarks.plateau import _prediction, _Recorder
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.training.monitor import Plateau
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

case, seed, k, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
image, geom, ref, names = load_case(case)
K = len(names); classes = list(range(1, K))
features = FeatureCache(); features.prepare(image, geom.spacing)
scr = simulate_scribbles(ref, k, seed=seed)
Plateau.reached = lambda self, c: False  # checks recorded (the weights at each), the round never stopped by them
cfg = TrainConfig(max_steps=steps, time_budget=None, seed=seed, device="cpu", plateau=True)
tr = Trainer(image, scr, cfg, spacing=geom.spacing, class_names=names, features=features)
with _Recorder() as rec:
    res = run_to_end(tr.run())
model = res.model
print("steps", res.steps, res.stopped_by, [c.step for c, _ in rec.states], flush=True)
true_frac = np.bincount(ref.ravel(), minlength=K) / ref.size
print("true fractions", np.round(true_frac, 4), flush=True)

def em(p, prior_t, iters=50):
    prior = prior_t.copy()
    for _ in range(iters):
        q = p * (prior / prior_t)[:, None]
        q /= q.sum(0, keepdims=True)
        new = q.mean(1)
        if np.abs(new - prior).max() < 1e-6: break
        prior = new
    return q, prior

for check, state in rec.states:
    if check.step % 60 and check.step != steps: continue
    out = _prediction(model, state, None, image, geom, tr.y, features, probabilities=True, forest=False, refine=False,
                      stroke_regions_only=False)
    p = out.probabilities.reshape(K, -1).astype(np.float32) / 255.0 + 1e-4
    p /= p.sum(0, keepdims=True)
    raw = p.argmax(0).reshape(ref.shape)
    row = {"step": check.step, "raw": dice_per_class(raw, ref, classes), "raw_frac": np.round(np.bincount(raw.ravel(), minlength=K)/raw.size, 4).tolist()}
    for name, pt in (("uniform", np.full(K, 1.0 / K)),):
        q, prior = em(p, pt)
        adj = q.argmax(0).reshape(ref.shape)
        row[name] = dice_per_class(adj, ref, classes); row[name + "_prior"] = np.round(prior, 4).tolist()
    print(json.dumps({k2: (np.round(list(v.values()), 3).tolist() if isinstance(v, dict) else v) for k2, v in row.items()}), flush=True)
