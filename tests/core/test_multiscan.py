"""Training one model on the strokes of several scans (own grids and spacings), known answers."""

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import InputError, ScribbleError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.model.forest import StrokeForest
from napari_sparseseg.core.training.train import Trainer, TrainingScan
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from tests.conftest import make_phantom


def _two_scans():
    """Scan A has strokes of background and the ball only; scan B (another grid) of background and the box only."""
    a, ref_a = make_phantom(seed=0)
    b, ref_b = make_phantom(seed=1)
    b, ref_b = b[2:, 5:, :44], ref_b[2:, 5:, :44]
    sa, sb = simulate_scribbles(ref_a, k=2, seed=0), simulate_scribbles(ref_b, k=2, seed=1)
    sa[sa == 3] = 0  # no box strokes on A
    sb[sb == 2] = 0  # no ball strokes on B
    return (a, ref_a, sa), (b, ref_b, sb)


@pytest.mark.slow
def test_one_model_learns_each_class_from_the_scan_that_has_its_strokes():
    (a, _, sa), (b, _, sb) = _two_scans()
    cfg = TrainConfig(max_steps=150, time_budget=None, patch_size=(32, 32, 32), device="cpu", seed=0,
                      model_size="medium", forest=False)
    trainer = Trainer(a, sa, cfg, spacing=(1, 1, 1), more_scans=[TrainingScan(b, sb, spacing=(1.0, 1.1, 1.1), name="B")])
    assert trainer.num_classes == 3  # the union of the scans' classes
    model = run_to_end(trainer.run()).model
    c, ref_c = make_phantom(seed=2)  # a third scan, strokes on none
    pred = predict_volume(model, c, PredictConfig(device="cpu", refine=False))
    dice = dice_per_class(pred.labels, ref_c, [1, 2])
    assert min(dice.values()) >= 0.8, dice
    # Trained on A alone, the box (class 2) is unknown: the model cannot have 3 classes.
    with pytest.raises(ScribbleError, match="only one class|two classes"):
        Trainer(a, np.where(sa == 2, 0, sa), cfg)


def test_patches_are_drawn_evenly_over_classes_then_from_a_scan_holding_the_class():
    (a, _, sa), (b, _, sb) = _two_scans()
    trainer = Trainer(a, sa, TrainConfig(max_steps=1, time_budget=None, device="cpu", forest=False, augment=False,
                                         patch_size=(16, 16, 16)),
                      more_scans=[TrainingScan(b, sb, name="B")])
    from napari_sparseseg.core.training.train import Trainer as T

    model = trainer._build_model()
    x, y, src, table, indices, ratios = trainer._prepare_arrays(model)
    volumes = [(x, y, src, indices), trainer._volume(model, b, sb, np.where(sb > 0, 1, 0).astype(np.uint8))]
    rng = np.random.RandomState(0)
    drawn = T._centres(volumes, (1, 1, 1), 600, ratios, rng)  # a 1-voxel patch: no centre is moved inside
    values = []
    for vol, c in drawn:
        v = int(vol[1][tuple(int(i) for i in c)])
        values.append((vol is volumes[1], v))
    by_class = {v: [from_b for from_b, vv in values if vv == v] for v in (1, 2, 3)}
    assert all(len(by_class[v]) > 150 for v in (1, 2, 3))  # ~200 each: even over classes
    assert not any(by_class[2]) and all(by_class[3])  # the ball only from A, the box only from B
    assert 0.3 < np.mean(by_class[1]) < 0.7  # background from both


def test_every_scan_must_be_of_the_models_modality():
    ct = np.full((24, 32, 32), -1000.0, np.float32)
    ct[:, 8:24, 8:24] = 40
    s = np.zeros(ct.shape, np.uint8)
    s[12, 2:6, 2:6], s[12, 12:16, 12:16] = 1, 2
    mri = np.random.default_rng(0).normal(300, 50, ct.shape).astype(np.float32)
    with pytest.raises(InputError, match="looks like MRI.*one model per modality") as e:
        Trainer(ct, s, TrainConfig(device="cpu"), more_scans=[TrainingScan(mri, s, name="mri.nii.gz")])
    assert e.value.path == "mri.nii.gz"
    with pytest.raises(ScribbleError, match="no strokes"):
        Trainer(ct, s, TrainConfig(device="cpu"), more_scans=[TrainingScan(ct, np.zeros_like(s), name="empty")])


def test_forest_on_one_scan_is_the_forest_of_one_pair():
    a, ref = make_phantom(seed=0)
    s = simulate_scribbles(ref, k=2, seed=0)
    feats = np.random.default_rng(0).normal(size=(4, *a.shape)).astype(np.float16)
    one = StrokeForest.fit(feats, s, 3, max_samples=500, seed=3)
    many = StrokeForest.fit_many([(feats, s)], 3, 1, max_samples=500, seed=3)
    assert np.array_equal(one.samples, many.samples) and np.array_equal(one.classes, many.classes)
    two = StrokeForest.fit_many([(feats, s), (feats, s)], 3, 2, max_samples=500, seed=3)
    assert len(two.classes) <= 500 and set(np.unique(two.classes)) == {0, 1, 2}
