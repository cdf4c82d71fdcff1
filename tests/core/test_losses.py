"""The loss sees labelled voxels only, weighted as specified (docs/design.md: the label and weight conventions)."""

import numpy as np
import pytest
import torch

from napari_sparseseg.core.annotations.labels import merge_annotations, voxel_weights
from napari_sparseseg.core.base.config import WeightConfig
from napari_sparseseg.core.training.losses import keep_loss, masked_soft_dice, masked_weighted_ce, sparse_loss


def _case(seed=0, shape=(2, 3, 6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    weight = torch.zeros(target.shape, dtype=torch.float64)
    weight.view(-1)[::7] = 1.0
    weight.view(-1)[::21] = 3.0
    return logits, target, weight


def test_unlabelled_voxels_get_exactly_zero_gradient():
    logits, target, weight = _case()
    logits[:, :, 0, 0, 1] = float("nan")  # garbage where w == 0 must not leak
    assert weight[:, 0, 0, 1].eq(0).all()
    logits.requires_grad_(True)
    loss = masked_weighted_ce(logits, target, weight)
    loss.backward()
    grad = logits.grad.movedim(1, -1)
    unl = weight == 0
    assert torch.isfinite(loss)
    assert torch.equal(grad[unl], torch.zeros_like(grad[unl]))
    assert (grad[~unl].abs().sum(-1) > 0).all()


def test_gradient_matches_weighted_formula():
    """d loss / d logit = w_i / sum(w) * (softmax_i - onehot_i) at labelled voxels."""
    logits, target, weight = _case(1)
    logits.requires_grad_(True)
    masked_weighted_ce(logits, target, weight).backward()
    p = logits.detach().softmax(1).movedim(1, -1)
    onehot = torch.nn.functional.one_hot(target, p.shape[-1]).double()
    expected = weight[..., None] / weight.sum() * (p - onehot)
    assert torch.allclose(logits.grad.movedim(1, -1), expected, atol=1e-12)


def test_weights_scale_the_gradient_and_the_loss_value():
    logits, target, weight = _case(2)
    lab = weight > 0
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.isclose(masked_weighted_ce(logits, target, weight), (weight * ce)[lab].sum() / weight[lab].sum())
    # A voxel with weight 3 pulls three times as hard as one with weight 1 (same error).
    w = torch.zeros_like(weight)
    idx_a, idx_b = (0, 0, 0, 0), (1, 5, 4, 3)
    w[idx_a], w[idx_b] = 1.0, 3.0
    lg = torch.zeros_like(logits, requires_grad=True)
    t = torch.zeros_like(target)
    masked_weighted_ce(lg, t, w).backward()
    ga = lg.grad[idx_a[0], :, idx_a[1], idx_a[2], idx_a[3]]
    gb = lg.grad[idx_b[0], :, idx_b[1], idx_b[2], idx_b[3]]
    assert torch.allclose(gb, 3 * ga)


def test_loss_ignores_unlabelled_logits_and_handles_no_labels():
    logits, target, weight = _case(3)
    a = masked_weighted_ce(logits, target, weight)
    logits2 = logits.clone()
    logits2[(weight == 0)[:, None].expand_as(logits)] = 1e6
    assert torch.equal(a, masked_weighted_ce(logits2, target, weight))
    z = masked_weighted_ce(logits.requires_grad_(True), target, torch.zeros_like(weight))
    assert z.item() == 0.0
    z.backward()
    assert logits.grad.abs().sum() == 0


def test_dice_term_uses_labelled_voxels_only():
    logits, target, weight = _case(4)
    logits.requires_grad_(True)
    sparse_loss(logits, target, weight, dice_weight=1.0).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.equal(grad[weight == 0], torch.zeros_like(grad[weight == 0]))
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).double() * 50
    assert masked_soft_dice(perfect, target, weight).item() == pytest.approx(0.0, abs=1e-6)


def test_corrections_raise_weight_and_overwrite_labels():
    scrib = np.zeros((4, 4, 4), np.uint8)
    scrib[0, 0, :2] = 1  # background
    scrib[1, 1, :2] = 2  # structure
    corr = np.zeros_like(scrib)
    corr[1, 1, 0] = 1  # user says: this voxel is background after all
    y, source = merge_annotations(scrib, corr)
    assert y[1, 1, 0] == 1 and source[1, 1, 0] == 2
    w = voxel_weights(y, source, 2, WeightConfig(w_scribble=1.0, w_correction=3.0, class_balance=False))
    assert w[1, 1, 0] == 3.0 and w[0, 0, 0] == 1.0 and w[1, 1, 1] == 1.0
    assert w[scrib == 0].sum() == 0 and w[2:].sum() == 0


def test_keep_loss_is_zero_where_the_rounds_agree_and_sees_only_unlabelled_voxels():
    logits, _, weight = _case()
    assert float(keep_loss(logits, logits.softmax(1), weight)) == pytest.approx(0.0, abs=1e-6)
    other = logits.flip(1).softmax(1)  # another class distribution everywhere
    assert float(keep_loss(logits, other, weight)) > 0.1
    moving = logits.clone().requires_grad_(True)
    keep_loss(moving, other, weight).backward()
    grad = moving.grad.movedim(1, -1)
    labelled = weight > 0
    assert torch.equal(grad[labelled], torch.zeros_like(grad[labelled]))  # the strokes are the CE's alone
    assert (grad[~labelled].abs().sum(-1) > 0).all()
    everywhere = torch.ones_like(weight)
    assert float(keep_loss(moving, other, everywhere)) == 0.0  # nothing unlabelled: nothing to keep
