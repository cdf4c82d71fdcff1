"""Where to paint next: known answers on synthetic predictions, and on a real scan the suggested
slices hold more of the model's errors than the rest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.config import ConfigError, PredictConfig, SuggestConfig, TrainConfig
from napari_sparseseg.core.errors import InputError
from napari_sparseseg.core.guide import suggest_slices


def _case(shape=(30, 40, 50)):
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 10:30, 10:40] = 1
    u = np.zeros(shape, np.float32)
    return labels, u


def test_the_slice_through_the_most_uncertainty_comes_first_in_its_orientation():
    labels, u = _case()
    u[14, 10:30, 10:40] = 0.8          # an unsure axial slice through the structure
    u[10:20, 10:30, 37] = 0.3          # a weaker sagittal band
    out = suggest_slices(labels, u, cfg=SuggestConfig(count=2, min_gap_mm=0))
    assert [(s.axis, s.index) for s in out] == [(0, 14), (2, 37)]
    assert out[0].score == pytest.approx(0.8 * (20 * 30 - 20) + 0.3 * 20, rel=1e-5)  # mm² at 1 mm voxels
    # Uncertainty in the background far from any structure does not count unless it is high.
    labels, u = _case()
    u[2, :, :] = 0.4
    assert suggest_slices(labels, u) == []
    u[2, :, :] = 0.9  # a structure the model may have missed
    assert [(s.axis, s.index) for s in suggest_slices(labels, u)][:1] == [(0, 2)]


def test_strokes_discount_nearby_uncertainty_and_suggestions_spread_out():
    labels, u = _case()
    u[12, 10:30, 10:40] = 0.8
    u[18, 10:30, 10:40] = 0.7
    strokes = np.zeros(labels.shape, np.uint8)
    strokes[12, 15:25, 20] = 2  # the user already painted on slice 12
    out = suggest_slices(labels, u, strokes, cfg=SuggestConfig(count=1))
    assert (out[0].axis, out[0].index) == (0, 18)
    assert out[0].uncertain_mm2 > out[0].score > 0
    # With 10 mm between suggestions, 12 and 18 are not both offered; at 1 mm voxels 5 mm allows it.
    both = suggest_slices(labels, u, cfg=SuggestConfig(count=5, min_gap_mm=10))
    assert sum(s.axis == 0 for s in both) == 1
    close = suggest_slices(labels, u, cfg=SuggestConfig(count=5, min_gap_mm=5))
    assert {s.index for s in close if s.axis == 0} == {12, 18}


def test_voxel_spacing_scales_areas_and_gaps():
    labels, u = _case()
    u[14, 10:30, 10:40] = 0.8
    u[10:20, 20, 10:40] = 0.8  # same voxels in a coronal slice: 10 x 30 against 20 x 30
    iso = suggest_slices(labels, u, cfg=SuggestConfig(count=1))
    assert (iso[0].axis, iso[0].index) == (0, 14)
    thick = suggest_slices(labels, u, spacing=(5.0, 1.0, 1.0), cfg=SuggestConfig(count=1))  # 5 mm slices
    assert (thick[0].axis, thick[0].index) == (1, 20)  # 10 x 30 voxels of 5 mm² beat 20 x 30 of 1 mm²


def test_bad_input_is_named():
    labels, u = _case()
    with pytest.raises(InputError, match="one shape"):
        suggest_slices(labels, u[:-1])
    with pytest.raises(InputError, match="strokes"):
        suggest_slices(labels, u, np.zeros((3, 3, 3)))
    with pytest.raises(ConfigError):
        SuggestConfig(count=0)
    with pytest.raises(ConfigError, match="SuggestConfig"):
        suggest_slices(labels, u, cfg=PredictConfig())


@pytest.mark.slow
def test_on_a_real_scan_suggested_slices_hold_more_errors_than_the_others(sample_dir):
    from napari_sparseseg.core.predict import predict_volume
    from napari_sparseseg.core.progress import run_to_end
    from napari_sparseseg.core.simulated_annotator import simulate_scribbles
    from napari_sparseseg.core.train import Trainer
    from napari_sparseseg.io import read_image, read_labels

    image, geom = read_image(sample_dir / "image.nii.gz")
    ref, _ = read_labels(sample_dir / "reference.nii.gz", like=geom)
    strokes = simulate_scribbles(ref, 1, seed=0)
    cfg = TrainConfig(max_steps=120, time_budget=None, device="cpu", seed=0)
    model = run_to_end(Trainer(image, strokes, cfg, spacing=geom.spacing).run()).model
    pred = predict_volume(model, image, PredictConfig(device="cpu", refine=False), strokes, geom.spacing)
    out = suggest_slices(pred.labels, pred.uncertainty, strokes, geom.spacing, SuggestConfig(count=6))
    assert len(out) == 6
    wrong = pred.labels != ref
    for axis in range(3):
        per_slice = wrong.sum(axis=tuple(a for a in range(3) if a != axis))
        picked = [s.index for s in out if s.axis == axis]
        if picked:  # the suggested slices of this orientation hold more errors than its median slice
            assert np.mean(per_slice[picked]) > np.median(per_slice), (axis, picked)
