"""The working grid of large scans (core/model/resolution.py): known answers, and a scan through train + predict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.core.model.resolution import (
    coarsen_image,
    coarsen_labels,
    expand_labels,
    upsample_rows,
    working_factors,
    working_scan,
)
from napari_sparseseg.core.training.train import Trainer


def test_factors_leave_small_scans_alone_and_make_a_clinical_ct_about_2mm():
    assert working_factors((112, 101, 122), (3.0, 3.0, 3.0), 6_000_000) == (1, 1, 1)
    assert working_factors((336, 433, 523), (1.0, 0.7, 0.7), 0) == (1, 1, 1)  # 0: always the scan's own voxels
    f = working_factors((336, 433, 523), (1.0, 0.7, 0.7), 6_000_000)
    assert f == (2, 3, 3)  # blocks of 2 x 2.1 x 2.1 mm
    assert math.prod(math.ceil(n / k) for n, k in zip((336, 433, 523), f, strict=True)) <= 6_000_000
    # Thick slices are not coarsened before the fine in-plane axes catch up.
    assert working_factors((25, 1024, 1024), (6.5, 0.78, 0.78), 6_000_000)[0] == 1


def test_block_means_include_partial_blocks():
    image = np.arange(5 * 4 * 7, dtype=np.int16).reshape(5, 4, 7)
    out = coarsen_image(image, (2, 2, 3), rows=1)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(image[:2, :2, :3].mean())
    assert out[2, 1, 2] == pytest.approx(image[4:, 2:, 6:].mean())  # a partial block averages what it holds
    image2, spacing = working_scan(image, (1.0, 1.0, 1.0), 30)  # 140 voxels -> 2 x 2 x 2 blocks: 24
    assert spacing == (2.0, 2.0, 2.0) and image2.shape == (3, 2, 4)


def test_a_thin_stroke_keeps_its_blocks_and_the_majority_wins():
    labels = np.zeros((4, 6, 6), np.uint8)
    source = np.zeros_like(labels)
    labels[0, :, 1] = 3  # a one-voxel-thin line
    source[0, :, 1] = 2  # a correction
    labels[1, 0, 0] = 1  # one background voxel in the first block, outvoted by the line's two
    source[1, 0, 0] = 1
    labels[3, 4:, 4:] = 2  # a block of its own
    source[3, 4:, 4:] = 1
    out, src = coarsen_labels(labels, (2, 2, 2), source)
    assert out.shape == (2, 3, 3)
    assert out[0, :, 0].tolist() == [3, 3, 3] and src[0, :, 0].tolist() == [2, 2, 2]
    assert out[1, 2, 2] == 2 and src[1, 2, 2] == 1
    assert np.count_nonzero(out) == 4
    tie = np.zeros((2, 2, 2), np.uint8)
    tie[0, 0, 0], tie[1, 1, 1] = 1, 2
    assert coarsen_labels(tie, (2, 2, 2))[0, 0, 0] == 2  # ties go to the higher value
    assert expand_labels(out, (2, 2, 2), labels.shape)[0, 5, 1] == 3


@pytest.mark.parametrize("rows", [(0, 13), (0, 1), (3, 7), (5, 13), (12, 13), (6, 9)])
def test_upsampling_rows_equals_interpolating_the_whole_volume(rows):
    torch.manual_seed(0)
    p = torch.rand(3, 7, 6, 5)
    whole = F.interpolate(p[None], size=(14, 18, 20), mode="trilinear", align_corners=False)[0][:, :13, :17, :19]
    lo, hi = rows
    assert torch.allclose(upsample_rows(p, (2, 3, 4), 13, (17, 19), lo, hi), whole[:, lo:hi], atol=1e-6)


def _ball_scan():
    """A bright ball in a noisy field on 0.5 mm voxels, strokes on three slices (known answer: the ball)."""
    rng = np.random.default_rng(0)
    shape = (40, 72, 72)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    ball = ((z - 20) / 12.0) ** 2 + ((y - 36) / 20.0) ** 2 + ((x - 36) / 20.0) ** 2 <= 1
    image = (np.where(ball, 300.0, -100.0) + rng.normal(0, 30, shape)).astype(np.int16)
    strokes = np.zeros(shape, np.uint8)
    for sl in (np.s_[20, 36, :], np.s_[20, :, 36], np.s_[:, 36, 30]):
        strokes[sl] = np.where(ball[sl], 2, 1)
    return image, strokes, ball.astype(np.uint8)


def test_a_large_scan_trains_on_blocks_and_is_predicted_on_every_voxel():
    image, strokes, ball = _ball_scan()
    spacing = (0.5, 0.5, 0.5)
    cfg = TrainConfig(max_steps=30, time_budget=None, plateau=False, device="cpu", working_voxels=30_000, seed=0)
    trainer = Trainer(image, strokes, cfg, spacing=spacing)
    assert trainer.factors == (2, 2, 2) and trainer.work.image.shape == (20, 36, 36)
    assert trainer.y.shape == image.shape  # the constraints of the prediction stay on the scan's voxels
    result = run_to_end(trainer.run())
    assert result.model.spacing == (1.0, 1.0, 1.0)  # what the network learned on
    assert result.model.intensity_scale is not None
    steps = []
    pcfg = PredictConfig(device="cpu", working_voxels=30_000, uncertainty=True)
    gen = predict(result.model, image, pcfg, trainer.y, spacing, features=trainer.features)
    try:
        while True:
            steps.append(next(gen).step)
    except StopIteration as stop:
        pred = stop.value
    assert pred.labels.shape == image.shape and pred.uncertainty.shape == image.shape
    assert steps == sorted(steps) and steps[-1] == image.shape[0]
    assert np.all(pred.labels[strokes > 0] == strokes[strokes > 0] - 1)  # strokes keep their class
    dice = 2 * np.sum((pred.labels == 1) & (ball == 1)) / (np.sum(pred.labels == 1) + ball.sum())
    assert dice > 0.9
    # The same model on the scan's own voxels draws its mask differently (the grid is used, not ignored).
    full = run_to_end(predict(result.model, image, PredictConfig(device="cpu", working_voxels=0), trainer.y, spacing))
    assert not np.array_equal(full.labels, pred.labels)


@pytest.mark.parametrize("working_voxels", [0, 20_000])
def test_a_prediction_closed_half_way_leaves_autograd_as_it_was(working_voxels):
    """Stop during prediction (the generator closed mid-way) leaves inference mode off for the thread.

    When it stayed on, the next round's training failed ("element 0 of tensors does not require grad").
    """
    from tests.conftest import tiny_model

    model = tiny_model(forest=True)
    image = np.random.default_rng(0).normal(0, 50, (40, 48, 48)).astype(np.float32)
    strokes = np.zeros(image.shape, np.uint8)
    strokes[20, 10:30, 10:30] = 1
    strokes[20, 32:40, 32:40] = 2
    cfg = PredictConfig(device="cpu", working_voxels=working_voxels, slab_voxels=48 * 48 * 4, refine=False)
    gen = predict(model, image, cfg, strokes, (1.0, 1.0, 1.0))
    next(gen)
    next(gen)
    gen.close()
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    weight = torch.nn.Parameter(torch.ones(3))
    (weight * 2).sum().backward()  # what training does first
    assert weight.grad is not None
