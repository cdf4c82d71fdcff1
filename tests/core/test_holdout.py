"""The held-out-stroke estimate: which pieces rotate out, the Dice on them (known answers), and a
round that trains without them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.annotations.holdout import format_estimate, holdout_dice, holdout_mask
from napari_sparseseg.core.annotations.labels import SOURCE_HINT, merge_annotations
from napari_sparseseg.core.session.rounds import accept_round, run_round


def _strokes():
    y = np.zeros((20, 30, 40), np.uint8)
    for j in range(10):              # 10 separate strokes of class 1 (value 2)
        y[j * 2, 5:10, 3 + j] = 2
    y[5, 20:25, 20] = 3              # class 2 has one piece only
    y[15, 20:28, 30:32] = 1          # background, one piece
    return y


def test_one_piece_in_five_rotates_out_and_a_lone_piece_stays_in():
    y = _strokes()
    _, source = merge_annotations(y)
    seen = np.zeros(y.shape, int)
    for r in range(5):
        held = holdout_mask(y, source, r, 5)
        assert held.any() and set(np.unique(y[held])) == {2}        # classes with one piece keep it
        assert (held & (y == 2)).sum() == 2 * 5                     # two of the ten strokes, 5 voxels each
        seen += held
    assert np.array_equal(seen > 0, y == 2) and seen.max() == 1      # every stroke out exactly once in 5 rounds


def test_hints_are_never_held_out():
    y = _strokes()
    hints = np.zeros(y.shape, np.uint8)
    hints[10:14, 10:14, 10:14] = 2
    merged, source = merge_annotations(y, None, hints)
    held = holdout_mask(merged, source, 0, 2)
    assert not (held & (source == SOURCE_HINT)).any()


def test_dice_on_held_out_pieces_and_its_spread():
    y = _strokes()
    _, source = merge_annotations(y)
    held = holdout_mask(y, source, 0, 5)          # pieces 0 and 5 of class 1
    labels = np.where(y == 2, 1, 0)                # right everywhere...
    labels[0, 5:10, 3] = 0                         # ...but piece 0 missed entirely
    est = holdout_dice(labels, y, held, num_classes=3)
    assert set(est) == {1}
    e = est[1]
    assert e.dice == pytest.approx(2 * 5 / (2 * 5 + 5)) and e.pieces == 2 and e.voxels == 10
    assert e.spread > 0                            # resampling the two pieces moves it
    perfect = holdout_dice(np.where(y == 2, 1, 0), y, held, num_classes=3)
    assert perfect[1].dice == 1.0 and perfect[1].spread == 0.0
    assert format_estimate(perfect, ["background", "structure"]) == "structure 1.00 ± 0.00 (2 pieces)"
    one = np.zeros(y.shape, bool)
    one[0, 5:10, 3] = True  # a single piece: no spread to tell
    single = holdout_dice(labels, y, one, num_classes=3)
    assert single[1].dice == 0.0 and np.isnan(single[1].spread)
    assert format_estimate(single, ["background", "structure"]) == "structure 0.00 (1 piece)"
    assert holdout_dice(labels, y, np.zeros(y.shape, bool), 3) == {}


@pytest.mark.slow
def test_a_round_with_the_estimate_trains_without_the_held_out_strokes_and_scores_them(sample_dir):
    from napari_sparseseg.core.base.config import PredictConfig, RoundSettings
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.session.state import Session
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.io import read_image, read_labels

    image, geom = read_image(sample_dir / "image.nii.gz")
    ref, _ = read_labels(sample_dir / "reference.nii.gz", like=geom)
    s = Session(image, simulate_scribbles(ref, 2, seed=0), ["background", "liver", "spleen", "kidney_r", "kidney_l"],
                geom.spacing, settings=RoundSettings(device="cpu", max_steps=120, estimate=True))
    res = run_to_end(run_round(s, s.settings.train_config(0), PredictConfig(device="cpu", refine=False)))
    assert res.estimate and all(0.0 <= e.dice <= 1.0 and e.pieces >= 1 for e in res.estimate.values())
    # The estimate is not a copy of the strokes (they were not trained on, filtered or clamped by the CRF):
    # it is about as good as the Dice against the full reference, and not perfect.
    from napari_sparseseg.evaluation.metrics import dice_per_class

    true = dice_per_class(res.prediction.labels, ref, list(res.estimate))
    mean_est = np.mean([e.dice for e in res.estimate.values()])
    assert mean_est < 0.999 and abs(mean_est - np.mean(list(true.values()))) < 0.35
    accept_round(s, res)
    assert set(s.history[-1]["held_out_dice"]) <= {"liver", "spleen", "kidney_r", "kidney_l"}
