"""Probe behind the forest fusion rule (models/README.md): network, forest, average, product, 0.7/0.3.

Round 0 only, k = 1 and 3, seeds 0 and 1, 60 s; the network without refinement or forest, the
forest on the ilastik-style bank of benchmarks/baseline_rf.py, every mask through the
stroke-region filter. One JSON line per run (benchmarks/results/fusion_probe.jsonl; its
sample_ct_crop lines were taken while the test suite ran beside it and are not usable).

    python benchmarks/fusion_probe.py mr_brain_tumour,mr_abdomen,ct_abdomen
"""
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import numpy as np
from sklearn.ensemble import RandomForestClassifier

from benchmarks.baseline_rf import ilastik_features
from benchmarks.cases import load_case
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles


def score(p, y, ref, classes):
    lab = p.argmax(0).astype(np.uint8)
    keep_stroke_regions(lab, y)
    d = dice_per_class(lab, ref, classes)
    return float(np.mean(list(d.values()))), d

cases = sys.argv[1].split(',')
for name in cases:
    image, geom, ref, names = load_case(name)
    classes = list(range(1, len(names)))
    feats = ilastik_features(image)
    for seed in (0, 1):
        for k in (1, 3):
            y = simulate_scribbles(ref, k, seed=seed)
            res = run_to_end(Trainer(image, y, TrainConfig(time_budget=60, max_steps=None, seed=seed, device='cpu', forest=False), spacing=geom.spacing, class_names=names).run())
            pn = predict_volume(res.model, image, PredictConfig(device='cpu', uncertainty=False, refine=False, stroke_regions_only=False, probabilities=True,
                                                   forest=False), y, geom.spacing).probabilities.astype(np.float32) / 255
            lab = y > 0
            rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed).fit(feats[:, lab].T, y[lab].astype(int) - 1)
            flat = feats.reshape(feats.shape[0], -1)
            pf = np.zeros_like(pn)
            pfr = rf.predict_proba(flat.T).T.reshape((len(rf.classes_),) + image.shape)
            for i, c in enumerate(rf.classes_):
                pf[c] = pfr[i]
            out = {'case': name, 'seed': seed, 'k': k}
            for m, p in (('net', pn), ('rf', pf), ('mean', (pn + pf) / 2), ('geo', np.sqrt(pn * pf + 1e-8)), ('net.7', 0.7 * pn + 0.3 * pf)):
                out[m], d = score(p, y, ref, classes)
                out[m + '_cls'] = {names[c]: round(v, 3) for c, v in d.items()}
            print(json.dumps(out), flush=True)
