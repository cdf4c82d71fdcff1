"""A model from one patient's strokes, warm-started on another patient with that patient's strokes.

The real pair of the shared data (tests/data/mr_brain_*: two patients scanned alike). A network
warm-started from patient A marks A's look-alike tissue on patient B until it has learned B's
strokes; the fusion must not let it paint the tumour there (core/model/forest.py ``fuse``).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.model.forest import FeatureCache, fuse
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from napari_sparseseg.io import read_image, read_labels


def test_a_network_untrusted_on_a_class_cannot_paint_it():
    import torch

    # Voxel 0: the network (warm-started from another patient) is sure of the structure where the
    # forest of this scan's strokes says background; voxel 1: both say background.
    net = torch.tensor([[0.001, 0.9], [0.999, 0.1]])
    forest = torch.tensor([[0.9, 0.8], [0.1, 0.2]])
    # It has learned background on this scan's strokes, not the structure: its vote against
    # background at voxel 0 is a vote for the structure, and does not count either.
    assert fuse(net, forest, 0.5, [0.92, 0.0]).argmax(0).tolist() == [0, 0]
    assert fuse(net, forest, 0.5, [1.0, 1.0]).argmax(0).tolist() == [1, 0]  # trusted on both: it may


def _crop(path_image, path_label, half: int = 40):
    """The scan cut to 2 * half voxels in-plane around its tumour (every slice), and its reference."""
    image, geom = read_image(path_image)
    ref, _ = read_labels(path_label, like=geom)
    ref = (ref > 0).astype(np.uint8)
    centre = np.argwhere(ref).mean(0).round().astype(int)
    sl = (slice(None),) + tuple(slice(max(0, c - half), max(0, c - half) + 2 * half) for c in centre[1:])
    return np.ascontiguousarray(image[sl]), np.ascontiguousarray(ref[sl]), geom.spacing


@pytest.mark.slow
def test_a_warm_start_from_another_patient_is_not_worse_than_its_forest(data_dir):
    """Patient A's model on patient B after a step or two (a 60 s round on a full-size scan): at least B's forest."""
    image_a, ref_a, spacing = _crop(data_dir / "mr_brain_image.nrrd", data_dir / "mr_brain_label.nrrd")
    image_b, ref_b, spacing_b = _crop(data_dir / "mr_brain2_image.nrrd", data_dir / "mr_brain2_label.nrrd")
    cfg = TrainConfig(max_steps=60, time_budget=None, device="cpu", seed=0, plateau=False, forest=False)
    source = run_to_end(Trainer(image_a, simulate_scribbles(ref_a, 3, seed=0), cfg, spacing=spacing).run()).model
    strokes_b = simulate_scribbles(ref_b, 3, seed=0)
    features = FeatureCache()
    warm = Trainer(image_b, strokes_b, TrainConfig(max_steps=2, time_budget=None, device="cpu", seed=0), init=source,
                   spacing=spacing_b, features=features)
    model = run_to_end(warm.run()).model
    ranges = model.normalization.ranges(image_b)
    own = features.kept_forest_probabilities(model.forest, image_b, ranges, spacing_b).argmax(0)
    # Without the stroke-region filter, so what the fusion paints away from the strokes shows.
    plain = PredictConfig(device="cpu", refine=False, stroke_regions_only=False, uncertainty=False)
    mask = predict_volume(model, image_b, plain, warm.y, spacing_b, features=features).labels
    network = predict_volume(model, image_b, PredictConfig(device="cpu", refine=False, stroke_regions_only=False,
                                                           uncertainty=False, forest=False), None, spacing_b).labels
    forest_dice = dice_per_class(own, ref_b, [1])[1]
    round_dice = dice_per_class(mask, ref_b, [1])[1]
    painted, forest_voxels = int((mask == 1).sum()), int((own == 1).sum())
    assert int((network == 1).sum()) > 5 * forest_voxels  # A's network marks A's look-alike tissue on B
    assert painted <= 2 * forest_voxels, (painted, forest_voxels)
    assert round_dice >= forest_dice - 0.05, (round_dice, forest_dice)
