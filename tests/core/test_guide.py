"""Where to paint next: known answers on synthetic predictions, and on a real scan the suggested
slices hold more of the model's errors than the rest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.annotations.guide import suggest_slices
from napari_sparseseg.core.base.config import ConfigError, PredictConfig, SuggestConfig, TrainConfig
from napari_sparseseg.core.base.errors import InputError


def _case(shape=(30, 40, 50)):
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 10:30, 10:40] = 1
    u = np.zeros(shape, np.float32)
    return labels, u


def test_the_slice_through_the_most_uncertainty_comes_first_with_its_share_of_the_structure():
    labels, u = _case()
    u[14, 10:30, 10:40] = 0.8          # an unsure axial slice through the structure (20 x 30 voxels)
    out = suggest_slices(labels, u, cfg=SuggestConfig(count=1))
    assert [(s.axis, s.index) for s in out] == [(0, 14)]
    # 600 voxels at 0.8 of a 6000-voxel structure: 8 % of it is in doubt there (nothing else near).
    assert out[0].score == pytest.approx(0.8 * 600 / 6000, rel=1e-5)
    assert out[0].uncertain_mm2 == pytest.approx(0.8 * 600, rel=1e-5)  # at 1 mm voxels
    # Uncertainty away from every predicted structure is not counted: the mask shows background there.
    labels, u = _case()
    u[2, :, :] = 0.9
    assert suggest_slices(labels, u) == []


def test_a_small_structure_outweighs_the_same_doubt_on_a_large_one():
    labels, u = _case()
    labels[24:27, 34:37, 5:8] = 2      # 27 voxels, far from the large structure (6000 voxels)
    u[14, 10:30, 10:40] = 0.5           # 600 voxels in doubt on the large one
    u[25, 34:37, 5:8] = 0.5             # 9 on the small one: a third of it
    out = suggest_slices(labels, u, cfg=SuggestConfig(count=1))
    assert (out[0].axis, out[0].index) == (0, 25)
    # A third of the small one on the slice, plus the large one's 5 % seen from 11 mm away.
    assert out[0].score == pytest.approx(0.5 * 9 / 27 + 0.5 * 600 / 6000 * np.exp(-11 / 10), rel=1e-5)


def test_the_first_three_suggestions_take_the_three_orientations():
    labels, u = _case()
    u[labels > 0] = 0.6                 # the whole structure is in doubt
    out = suggest_slices(labels, u, cfg=SuggestConfig(count=3))
    assert sorted(s.axis for s in out) == [0, 1, 2]
    free = suggest_slices(labels, u, cfg=SuggestConfig(count=3, orthogonal=False))
    assert len({s.axis for s in free}) < 3  # without the rule the largest planes win


def test_strokes_and_earlier_suggestions_discount_their_neighbourhood():
    labels, u = _case()
    u[12, 10:30, 10:40] = 0.8
    u[18, 10:30, 10:40] = 0.7
    strokes = np.zeros(labels.shape, np.uint8)
    strokes[12, 15:25, 20] = 2  # the user already painted on slice 12
    out = suggest_slices(labels, u, strokes, cfg=SuggestConfig(count=1))
    assert (out[0].axis, out[0].index) == (0, 18)
    plain = suggest_slices(labels, u, cfg=SuggestConfig(count=1))
    assert (plain[0].axis, plain[0].index) == (0, 12)
    # A chosen slice covers its neighbours as a stroke would: after 12, the next axial pick is
    # not slice 13 (which would sit 1 mm away) but the other doubtful slice, 18.
    two = suggest_slices(labels, u, cfg=SuggestConfig(count=2, orthogonal=False, reach_mm=2))
    assert [(s.axis, s.index) for s in two] == [(0, 12), (0, 18)]


def test_a_large_scan_is_ranked_on_blocks_and_answers_in_its_own_slices(monkeypatch):
    """Above SUGGEST_VOXELS the ranking runs on blocks; slices come back on the scan's own grid."""
    from napari_sparseseg.core.annotations import guide

    labels, u = _case((60, 80, 100))
    labels[20:40, 20:60, 20:80] = 1
    u[33, 20:60, 20:80] = 0.8  # an unsure axial slice
    u[20:40, 51, 20:80] = 0.6  # and a coronal one
    strokes = np.zeros(labels.shape, np.uint8)
    strokes[25, 30:40, 50] = 2
    full = suggest_slices(labels, u, strokes, cfg=SuggestConfig(count=2))
    monkeypatch.setattr(guide, "SUGGEST_VOXELS", 60_000)  # 480,000 voxels -> blocks of 2 x 2 x 2
    strided = suggest_slices(labels, u, strokes, cfg=SuggestConfig(count=2))
    assert [(s.axis, s.index) for s in full] == [(0, 33), (1, 51)]
    assert [s.axis for s in strided] == [0, 1]
    assert all(abs(a.index - b.index) <= 1 for a, b in zip(full, strided, strict=True))


def test_the_band_and_reach_are_in_mm():
    labels, u = _case()
    u[7, 10:30, 10:40] = 0.8  # 3 slices above the structure (which starts at 10)
    assert suggest_slices(labels, u) == []  # 3 mm away: outside the 2 mm band
    near = suggest_slices(labels, u, spacing=(0.5, 1.0, 1.0))  # 1.5 mm away
    assert (near[0].axis, near[0].index) == (0, 7)


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
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.inference.predict import predict_volume
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
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
