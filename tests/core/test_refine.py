"""Boundary refinement (dense CRF with local kernels): known answers on synthetic volumes."""

import math

import numpy as np
import pytest
import torch

from napari_sparseseg.core.inference.refine import intensity_scale, mean_field, stencil


def test_stencil_follows_the_spacing():
    iso = stencil((1.0, 1.0, 1.0), 3.5)
    # 6 face directions x 3 steps (1, 2, 3 mm), 12 edge diagonals x 2 (1.41, 2.83 mm), 8 corners x 2 (1.73, 3.46 mm)
    assert len(iso) == 6 * 3 + 12 * 2 + 8 * 2 and len(set(iso)) == len(iso) and (0, 0, 0) not in iso
    thick = stencil((6.5, 0.78, 0.78), 3.5)
    assert max(abs(o[0]) for o in thick) == 1  # across thick slices: one step only
    assert max(abs(o[1]) for o in thick) == 4  # in-plane: out to 3.5 mm, capped at 4 voxels
    assert all(max(abs(c) for c in o) >= 1 for o in thick)


def test_intensity_scale_measures_the_noise_within_labelled_regions():
    rng = np.random.default_rng(0)
    sigma = 0.1
    channels = rng.normal(0, sigma, (1, 20, 30, 30)).astype(np.float32)
    channels[0, :, :, 15:] += 5.0  # a strong edge between the classes must not count
    strokes = np.zeros((20, 30, 30), np.uint8)
    strokes[5:15, 5:25, 2:13] = 1
    strokes[5:15, 5:25, 17:28] = 2
    strokes[10, 10, 13:17] = 2  # one stroke across the edge: only same-class pairs count
    scale = intensity_scale(channels, strokes)
    assert scale == pytest.approx(sigma * math.sqrt(2), rel=0.1)
    assert intensity_scale(channels, np.zeros_like(strokes)) is None


def _edge_case(shift=1, pnoise=0.3, noise=0.05, seed=0):
    """A bright half-space (x >= 16) and a noisy network whose outline sits ``shift`` voxels too far left."""
    rng = np.random.default_rng(seed)
    shape = (12, 20, 32)
    x = np.arange(shape[2])
    truth = np.broadcast_to(x >= 16, shape)
    image = truth.astype(np.float32) + rng.normal(0, noise, shape).astype(np.float32)
    p1 = 1.0 / (1.0 + np.exp(-(x - (16 - shift) + 0.5)))
    p1 = np.clip(np.broadcast_to(p1, shape) + rng.normal(0, pnoise, shape), 0.02, 0.98)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return image, truth, torch.from_numpy(probs), torch.from_numpy(image[None])


def test_mean_field_puts_the_outline_on_the_image_edge():
    """Most errors of a few-stroke network lie within a voxel of an outline: the CRF fixes those."""
    image, truth, probs, channels = _edge_case()
    raw = probs.argmax(0).numpy().astype(bool)
    q = mean_field(probs, channels, (1.0, 1.0, 1.0), theta_intensity=0.1)
    refined = q.argmax(0).numpy().astype(bool)
    assert torch.allclose(q.sum(0), torch.ones(q.shape[1:]), atol=1e-4)
    wrong_raw, wrong_refined = int((raw != truth).sum()), int((refined != truth).sum())
    assert wrong_raw > 12 * 20, wrong_raw  # a column of voxels on the wrong side, and noise
    assert wrong_refined <= 0.02 * wrong_raw, (wrong_raw, wrong_refined)
    # Without the intensity term (a huge scale) the same smoothing removes the noise but not the
    # displaced column: the image's edge is what puts the outline right.
    blind = mean_field(probs, channels, (1.0, 1.0, 1.0), theta_intensity=1e6).argmax(0).numpy().astype(bool)
    assert int((blind != truth).sum()) >= 12 * 20


def test_strokes_are_hard_constraints_and_weight_zero_is_the_network():
    image, truth, probs, channels = _edge_case()
    hard = torch.zeros(truth.shape, dtype=torch.int64)
    hard[6, 10, 25] = 1  # a background stroke deep in the bright region (the user's word is final)
    hard[6, 10, 2] = 9  # a value the model does not have: ignored
    q = mean_field(probs, channels, (1.0, 1.0, 1.0), 0.1, hard)
    assert q[0, 6, 10, 25] == 1.0 and q[1, 6, 10, 25] == 0.0
    same = mean_field(probs, channels, (1.0, 1.0, 1.0), 0.1, weight=0.0)
    assert torch.allclose(same, probs.clamp_min(1e-6) / probs.clamp_min(1e-6).sum(0), atol=1e-5)


def test_kernels_kept_or_recomputed_and_chunking_give_the_same_answer(monkeypatch):
    from napari_sparseseg.core.inference import refine

    _, _, probs, channels = _edge_case(seed=1)
    kept = mean_field(probs, channels, (2.0, 1.0, 1.0), 0.1, iterations=4)
    monkeypatch.setattr(refine, "KERNEL_BYTES", 0)
    monkeypatch.setattr(refine, "CHUNK_VOXELS", 997)
    recomputed = mean_field(probs, channels, (2.0, 1.0, 1.0), 0.1, iterations=4)
    assert torch.allclose(kept, recomputed, atol=1e-6)


def test_only_the_band_near_outlines_or_unsure_voxels_changes():
    """Confident voxels whose whole neighbourhood agrees keep the network's probabilities."""
    from napari_sparseseg.core.inference.refine import band

    shape = (10, 30, 30)
    probs = torch.full((2,) + shape, 0.002)
    probs[0] = 0.998
    probs[1, :, 10:20, 10:20] = 0.998
    probs[0, :, 10:20, 10:20] = 0.002
    probs[:, 5, 2, 2] = torch.tensor([0.6, 0.4])  # one unsure voxel far from the square
    offsets = stencil((1.0, 1.0, 1.0), 3.5)
    b = band(probs, offsets)
    assert b[5, 2, 2] and b[5, 10, 15] and b[5, 7, 15] and not b[5, 15, 15] and not b[5, 28, 28]
    channels = torch.zeros((1,) + shape)
    q = mean_field(probs, channels, (1.0, 1.0, 1.0), 0.1)
    assert torch.equal(q[:, ~torch.from_numpy(b)], probs[:, ~torch.from_numpy(b)])
