"""The random forest fused with the network (core/model/forest.py): features, fitting, fusion, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import CheckpointError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.model.checkpoint import FOREST_NAME
from napari_sparseseg.core.model.forest import (
    N_FEATURES,
    FeatureCache,
    FeatureSource,
    StrokeForest,
    _eigvals_sym3,
    confident_labels,
    filter_features,
    forest_input,
    fuse,
    scan_features,
)
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.io.models import load_model, save_model


def test_closed_form_eigenvalues_match_numpy():
    rng = np.random.RandomState(0)
    a = rng.randn(6, 500).astype(np.float32)
    a[:, :50] = 0.0  # degenerate: all eigenvalues equal
    m = np.zeros((500, 3, 3))
    for k, (i, j) in enumerate(((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))):
        m[:, i, j] = m[:, j, i] = a[k]
    expected = np.linalg.eigvalsh(m)[:, ::-1].T
    assert np.abs(np.stack(_eigvals_sym3(*a)) - expected).max() < 1e-4


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (6.5, 0.8, 0.8)])
def test_slab_features_equal_whole_volume_features(spacing):
    """Computing in axis-0 slabs with the halo gives the whole volume's features (anisotropic too)."""
    rng = np.random.RandomState(1)
    image = rng.normal(100, 30, (37, 24, 28)).astype(np.float32)
    ranges = [(0.0, 200.0)]
    whole = filter_features(forest_input(image, ranges), spacing)
    assert whole.shape == (N_FEATURES,) + image.shape
    per_slab = FeatureSource(image, ranges, spacing, max_bytes=0)  # too big to keep: per slab
    assert per_slab.cached is None
    for lo, hi in ((0, 9), (9, 30), (30, 37)):
        np.testing.assert_allclose(per_slab.block(lo, hi), whole[:, lo:hi], atol=1e-4)
    cache = FeatureCache()
    cached = cache.get(image, ranges, spacing)  # float16, computed in slabs of 16
    np.testing.assert_allclose(cached.astype(np.float32), whole, rtol=2e-3, atol=2e-3)
    assert cache.get(image, ranges, spacing) is cached  # paid once per scan
    assert FeatureSource(image, ranges, spacing, max_bytes=1 << 40, cache=cache).cached is cached


def test_forest_separates_intensity_classes_from_one_slice_of_strokes():
    """Two tissues told apart by intensity alone: strokes on one slice label the whole volume."""
    rng = np.random.RandomState(2)
    truth = np.zeros((24, 32, 32), np.uint8)
    zz, yy, xx = np.mgrid[:24, :32, :32]
    truth[(zz - 12) ** 2 + (yy - 20) ** 2 + (xx - 14) ** 2 < 7**2] = 1
    truth[(zz - 10) ** 2 / 4 + (yy - 8) ** 2 + (xx - 22) ** 2 < 5**2] = 1  # a second blob, not stroked
    image = np.where(truth == 1, 60.0, 20.0) + rng.normal(0, 6, truth.shape)
    strokes = np.zeros_like(truth)
    first = (zz[12] - 12) ** 2 + (yy[12] - 20) ** 2 + (xx[12] - 14) ** 2 < 7**2
    strokes[12][first] = 2  # the first blob's cross-section on one slice
    strokes[12][truth[12] == 0] = 1  # and the background around it
    feats = scan_features(image.astype(np.float32), [(0.0, 80.0)], (1.0, 1.0, 1.0))
    forest = StrokeForest.fit(feats, strokes, 2, seed=0)
    p = forest.probabilities(feats)
    assert p.shape == (2,) + truth.shape and np.allclose(p.sum(0), 1.0, atol=1e-5)
    dice = dice_per_class(p.argmax(0).astype(np.uint8), truth, [1])[1]
    assert dice > 0.9  # the unstroked blob too


def test_fit_balances_classes_and_respects_the_sample_cap():
    feats = np.random.RandomState(3).randn(N_FEATURES, 10, 20, 20).astype(np.float16)
    strokes = np.zeros((10, 20, 20), np.uint8)
    strokes[:, :, :15] = 1  # 3000 background voxels
    strokes[5, 5, 16:18] = 2  # 2 voxels of the structure
    forest = StrokeForest.fit(feats, strokes, 2, max_samples=200, seed=1)
    assert (forest.classes == 1).sum() == 2 and (forest.classes == 0).sum() == 100


def test_fusion_is_log_linear_pooling():
    import torch

    a = torch.tensor([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]])
    b = torch.tensor([[0.1, 0.2], [0.6, 0.2], [0.3, 0.6]])
    assert torch.allclose(fuse(a, b, 0.0), a, atol=1e-5) and torch.allclose(fuse(a, b, 1.0), b, atol=1e-5)
    half = fuse(a, b, 0.5)
    expected = (a * b).sqrt() / (a * b).sqrt().sum(0)
    assert torch.allclose(half, expected, atol=1e-5)
    # A class ruled out by one model stays out, though the plain average would pick it.
    assert half[:, 0].argmax() == 1 and ((a + b) / 2)[:, 0].argmax() == 0


def test_model_with_forest_saves_loads_and_predicts_the_same(phantom, tmp_path):
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, ref = phantom
    strokes = simulate_scribbles(ref, k=1, seed=0)
    cfg = TrainConfig(max_steps=2, time_budget=None, device="cpu")
    model = run_to_end(Trainer(image, strokes, cfg).run()).model
    assert isinstance(model.forest, StrokeForest) and len(model.forest.classes) == int((strokes > 0).sum())
    pcfg = PredictConfig(device="cpu", refine=False, stroke_regions_only=False)
    fused = predict_volume(model, image, pcfg).labels
    alone = predict_volume(model, image, PredictConfig(device="cpu", refine=False, stroke_regions_only=False,
                                                       forest=False)).labels
    # Two steps of the network know next to nothing; the forest carries the structures.
    assert dice_per_class(fused, ref, [1, 2])[1] > dice_per_class(alone, ref, [1, 2])[1] + 0.3
    folder = save_model(model, tmp_path / "model")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["forest"]["file"] == FOREST_NAME and meta["forest"]["samples"] == len(model.forest.classes)
    back = load_model(folder)
    np.testing.assert_array_equal(predict_volume(back, image, pcfg).labels, fused)
    # A scan whose features are not kept: computed a few planes at a time, the same mask (but
    # for float16 rounding of the kept features).
    import dataclasses

    unkept = predict_volume(back, image, dataclasses.replace(pcfg, forest_max_feature_bytes=0, slab_voxels=1)).labels
    assert (unkept == fused).mean() > 0.999
    # A model without a forest keeps predicting with the network alone.
    plain = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=2, time_budget=None, device="cpu",
                                                           forest=False)).run()).model
    assert plain.forest is None and plain.history[-1]["forest_samples"] is None
    assert model.history[-1]["forest_samples"] == len(model.forest.classes)
    # A warm start with the forest switched off drops the earlier round's forest.
    warm = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=1, time_budget=None, device="cpu", forest=False),
                              init=model).run()).model
    assert warm.forest is None and model.forest is not None
    assert not (save_model(plain, tmp_path / "plain") / FOREST_NAME).exists()


def test_a_broken_forest_file_is_a_clear_error(phantom, tmp_path):
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, ref = phantom
    model = run_to_end(Trainer(image, simulate_scribbles(ref, k=1, seed=0),
                               TrainConfig(max_steps=1, time_budget=None, device="cpu")).run()).model
    folder = save_model(model, tmp_path / "model")
    (folder / FOREST_NAME).write_bytes(b"not an npz")
    with pytest.raises(CheckpointError, match="forest.npz cannot be read"):
        load_model(folder)
    (folder / FOREST_NAME).unlink()
    with pytest.raises(CheckpointError, match="forest.npz is missing"):
        load_model(folder)


def test_confident_labels_are_unlabelled_voxels_the_forest_is_sure_of_as_many_as_asked():
    probs = np.zeros((3, 4, 10, 10), np.float16)
    probs[0, :2] = 0.97  # background sure on the first two rows of slices...
    probs[1, :2] = 0.03
    probs[0, 2:] = 0.60  # ...and unsure elsewhere
    probs[2, 2:] = 0.40
    y = np.zeros((4, 10, 10), np.uint8)
    y[0, 0, :5] = 1  # 5 background stroke voxels, among the sure ones
    y[3, 0, :4] = 3  # 4 of class 2
    where, values = confident_labels(probs, y, 3.0, 0.95, np.random.RandomState(0), classes=[0])
    assert len(where) == 15 and len(set(where.tolist())) == 15 and (values == 1).all()
    flat = y.reshape(-1)
    assert (flat[where] == 0).all() and (probs[0].reshape(-1)[where] >= 0.95).all()
    # Fewer sure voxels than asked: all of them; a class without strokes or without sure voxels: none.
    where, values = confident_labels(probs, y, 100.0, 0.95, np.random.RandomState(0))
    assert sorted(where.tolist()) == sorted(set(np.flatnonzero((probs[0] >= 0.95).reshape(-1) & (flat == 0)).tolist()))
    assert (values == 1).all()
    assert len(confident_labels(probs, y, 0.0, 0.95, np.random.RandomState(0))[0]) == 0
    # Excluded voxels (strokes held out of the round) are never drawn.
    exclude = np.zeros(y.shape, bool)
    exclude[1] = True
    where, _ = confident_labels(probs, y, 100.0, 0.95, np.random.RandomState(0), exclude=exclude)
    assert len(where) and not exclude.reshape(-1)[where].any() and (np.unravel_index(where, y.shape)[0] == 0).all()


def test_a_round_trains_on_the_forests_sure_background_and_leaves_the_strokes_alone(phantom, monkeypatch):
    from napari_sparseseg.core.annotations.labels import SOURCE_HINT, SOURCE_SCRIBBLE
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, ref = phantom
    strokes = simulate_scribbles(ref, k=1, seed=0)
    seen = {}
    original = Trainer._with_forest_labels

    def spy(self, probs, volume):
        seen["before"] = tuple(a.copy() for a in volume[1:3])
        seen["centres_before"] = [i.copy() for i in volume[3]]
        out = original(self, probs, volume)
        seen["after"], seen["held"], seen["probs"] = out[0], self.heldout, probs
        return out

    monkeypatch.setattr(Trainer, "_with_forest_labels", spy)
    cfg = TrainConfig(max_steps=2, time_budget=None, device="cpu", forest_pseudo_labels=2.0)
    model = run_to_end(Trainer(image, strokes, cfg).run()).model
    (y0, s0), (_, y1, s1, _) = seen["before"], seen["after"]
    assert (y0 == strokes).all() and (s0 == SOURCE_SCRIBBLE * (strokes > 0)).all()  # the strokes' own arrays untouched
    added = (s1 == SOURCE_HINT)
    assert added.sum() == 2 * (strokes == 1).sum()  # twice the background strokes (the phantom has sure background to spare)
    assert model.history[-1]["forest_pseudo_labels"] == added.sum()
    assert (y1[added] == 1).all() and (y0[added] == 0).all() and (seen["probs"][0][added] >= 0.95).all()
    assert (y1[~added] == y0[~added]).all()
    # Background's patches are centred on its pseudo-labels as on its strokes; the structures' on their strokes.
    before, after = seen["centres_before"], seen["after"][3]
    assert sorted(after[1]) == sorted(np.concatenate([before[1], np.flatnonzero(added)]))
    assert all((a == b).all() for a, b in zip(after[2:], before[2:], strict=True))
    assert (y1.reshape(-1)[after[1]] == 1).all()
    # Never on a stroke held out of the round (its estimate is scored there).
    cfg = TrainConfig(max_steps=1, time_budget=None, device="cpu", forest_pseudo_labels=10.0, holdout_every=2)
    run_to_end(Trainer(image, strokes, cfg).run())
    added = seen["after"][2] == SOURCE_HINT
    assert seen["held"] is not None and seen["held"].any() and added.any() and not (added & seen["held"]).any()
    # Off: the round trains on the strokes alone.
    seen.clear()
    model = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=1, time_budget=None, device="cpu",
                                                           forest_pseudo_labels=0)).run()).model
    assert not seen and model.history[-1]["forest_pseudo_labels"] == 0


def test_no_forest_for_a_scan_whose_features_exceed_the_budget(phantom):
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, ref = phantom
    cfg = TrainConfig(max_steps=1, time_budget=None, device="cpu", forest_max_feature_bytes=1000)
    assert run_to_end(Trainer(image, simulate_scribbles(ref, k=1, seed=0), cfg).run()).model.forest is None


def test_preview_is_the_forests_mask_a_few_seconds_in(phantom):
    """With ``preview=True`` one progress, before the first step, carries the forest's mask."""
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, ref = phantom
    strokes = simulate_scribbles(ref, k=1, seed=0)
    seen = []
    trainer = Trainer(image, strokes, TrainConfig(max_steps=3, time_budget=None, device="cpu"), preview=True)
    result = run_to_end(trainer.run(), seen.append)
    early = [p for p in seen if p.preview is not None]
    assert len(early) == 1 and early[0] is seen[0] and early[0].step == 0
    mask = early[0].preview
    assert mask.shape == image.shape and dice_per_class(mask, ref, [1, 2])[1] > 0.5
    assert (mask[strokes > 0] == strokes[strokes > 0] - 1).mean() > 0.95  # it agrees with the strokes
    assert result.steps == 3
    # Without it (the default, and every round once a mask is shown) no mask travels.
    seen.clear()
    run_to_end(Trainer(image, strokes, TrainConfig(max_steps=1, time_budget=None, device="cpu")).run(), seen.append)
    assert all(p.preview is None for p in seen)


def test_features_prepared_ahead_are_what_the_first_round_uses(phantom, monkeypatch):
    from napari_sparseseg.core.model.intensity import choose_normalization

    image, _ = phantom
    image = image + 0.25
    ranges = choose_normalization(image).ranges(image)
    cache = FeatureCache()
    assert not cache.has(image, ranges, (1.0, 1.0, 1.0))
    assert not cache.prepare(image, (1.0, 1.0, 1.0), max_bytes=1000)  # too large: nothing kept
    assert not cache.has(image, ranges, (1.0, 1.0, 1.0))
    assert cache.prepare(image, (1.0, 1.0, 1.0))
    assert cache.has(image, ranges, (1.0, 1.0, 1.0))
    assert not cache.has(image, ranges, (2.0, 1.0, 1.0))  # another spacing, other features
    # The first round's trainer and prediction read them from the cache they are given: no pass more.
    import napari_sparseseg.core.model.forest as forest_module

    passes = []
    real = forest_module.scan_features
    monkeypatch.setattr(forest_module, "scan_features", lambda *a, **k: passes.append(1) or real(*a, **k))
    strokes = np.zeros(image.shape, np.uint8)
    strokes[image.shape[0] // 2, 2:6, 2:6] = 1
    strokes[image.shape[0] // 2][image[image.shape[0] // 2] > image.mean()] = 2
    result = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=1, time_budget=None, device="cpu"),
                                spacing=(1.0, 1.0, 1.0), features=cache).run())
    assert result.model.forest is not None
    predict_volume(result.model, image, PredictConfig(device="cpu", uncertainty=False), strokes, (1.0, 1.0, 1.0),
                   features=cache)
    assert passes == []
