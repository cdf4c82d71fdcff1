"""Rounds that end when the network has learned, and a network that cannot veto the forest before it has.

core/training/monitor.py (the probe and the plateau rule), the trust it gives the fusion
(core/model/forest.py ``fuse``), and the forest's probabilities a round keeps for its prediction.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.annotations.labels import SOURCE_CORRECTION, SOURCE_SCRIBBLE
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import ConfigError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.model.forest import FeatureCache, fuse
from napari_sparseseg.core.training.monitor import Check, Plateau, Probe
from napari_sparseseg.core.training.train import STOP_REASONS, Trainer
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from napari_sparseseg.io.models import load_model, save_model


class _Oracle:
    """A stand-in network: predicts the class written in input channel 0 (or ``fixed`` everywhere)."""

    training = False

    def __init__(self, num_classes, fixed=None):
        import torch

        self.k, self.fixed, self.p = num_classes, fixed, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.p])

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, x):
        import torch

        cls = x[:, 0].long() if self.fixed is None else torch.full(x[:, 0].shape, self.fixed, dtype=torch.long)
        return torch.nn.functional.one_hot(cls, self.k).permute(0, 4, 1, 2, 3).float() * 10


def _probe_volume():
    truth = np.zeros((20, 24, 24), np.int64)
    truth[5:15, 4:12, 4:12] = 1
    truth[5:15, 14:22, 14:22] = 2
    y = np.zeros(truth.shape, np.uint8)
    y[10] = truth[10] + 1  # one slice of strokes, every class
    source = (y > 0).astype(np.uint8) * SOURCE_SCRIBBLE
    return truth, y, source


def test_probe_agreement_is_the_f1_on_the_strokes():
    truth, y, source = _probe_volume()
    x = truth[None].astype(np.float32)  # the oracle reads the class from channel 0
    probe = Probe(x, y, source, (8, 8, 8), 3, np.random.RandomState(0))
    assert probe.x.shape[1:] == (1, 8, 8, 8) and 3 <= len(probe.x) <= 6
    right = probe.check(_Oracle(3), 20, 1.0)
    assert right.agreement == [1.0, 1.0, 1.0] and right.change is None
    # A network that still says background everywhere: no agreement on the structures, and its
    # mask moved completely since the previous check.
    lazy = probe.check(_Oracle(3, fixed=0), 40, 2.0)
    assert lazy.agreement[1] == 0.0 and lazy.agreement[2] == 0.0 and 0 < lazy.agreement[0] < 1
    assert lazy.change == 1.0
    assert probe.check(_Oracle(3, fixed=0), 60, 3.0).change == 0.0


def test_probe_patches_cover_every_class_and_the_corrections():
    truth, y, source = _probe_volume()
    y[:] = 0
    y[10, 5, 5], y[10, 20, 20] = 2, 3  # one voxel of each structure, no background stroke
    y[3, 2, 2], source[3, 2, 2] = 1, SOURCE_CORRECTION  # a correction far from both
    source[y > 0] = np.where(source[y > 0] == SOURCE_CORRECTION, SOURCE_CORRECTION, SOURCE_SCRIBBLE)
    probe = Probe(truth[None].astype(np.float32), y, source, (4, 4, 4), 3, np.random.RandomState(0))
    covered = probe.y > 0
    assert {int(v) for v in np.unique(probe.y[covered])} == {1, 2, 3}
    # The correction (background at (3, 2, 2)) is scored on its own: the oracle gets it right
    # (truth is background there), a network saying "structure 1" everywhere does not.
    assert probe.corrected.sum() >= 1
    assert probe.check(_Oracle(3), 20, 1.0).corrections == 1.0
    assert probe.check(_Oracle(3, fixed=1), 40, 2.0).corrections == 0.0


def _check(step, agreement):
    return Check(step, float(step), agreement, 0.5)


def test_plateau_ends_a_round_that_reproduces_its_strokes():
    rule = Plateau(0.01, 2)
    for step, a in ((20, [0.8, 0.55]), (40, [0.9, 0.85]), (60, [0.95, 0.95]), (80, [0.99, 0.985])):
        assert not rule.reached(_check(step, a))
    assert not rule.reached(_check(100, [0.995, 0.99]))  # one check at 0.99
    assert rule.reached(_check(120, [0.99, 0.995])) and rule.why == "fitted"  # two in a row
    # A dip below starts the count again.
    rule = Plateau(0.01, 2)
    for step, a, done in ((20, [1.0, 0.99], False), (40, [0.99, 0.97], False), (60, [1.0, 0.99], False),
                          (80, [1.0, 0.99], True)):
        assert rule.reached(_check(step, a)) is done


def test_a_correction_round_has_learned_only_once_it_gets_the_corrections_right():
    rule = Plateau(0.01, 2)
    seen = [rule.reached(Check(s, float(s), [1.0, 1.0], 0.1, corrections=c))
            for s, c in ((20, 0.6), (40, 0.9), (60, 0.995), (80, 1.0))]
    assert seen == [False, False, False, True]


def test_plateau_waits_for_a_slow_rise_and_ends_a_stalled_round():
    # Flat early on, but the network has not started on class 1: it is not stalled.
    rule = Plateau(0.01, 2, stall=3)
    assert not any(rule.reached(_check(20 * i, [0.8, 0.0])) for i in range(1, 8))
    # A slow, steady rise (0.005 a check, 0.01 every other) is progress: no end.
    rule = Plateau(0.01, 2, stall=3)
    assert not any(rule.reached(_check(20 * i, [0.9 + 0.005 * i, 0.9 + 0.005 * i])) for i in range(1, 15))
    # Stuck at 0.95 (strokes that contradict each other): ends after `stall` checks without progress.
    rule = Plateau(0.01, 2, stall=3)
    ends = [rule.reached(_check(20 * i, [0.95, 0.95])) for i in range(1, 6)]
    assert ends == [False, False, False, True, True] and rule.why == "stalled"


def test_plateau_settings_are_checked():
    with pytest.raises(ConfigError, match="plateau_tolerance"):
        TrainConfig(plateau_tolerance=0)
    with pytest.raises(ConfigError, match="check_every"):
        TrainConfig(check_every=0)


def test_a_round_ends_on_the_plateau_before_its_caps_and_says_why(phantom):
    image, ref = phantom
    strokes = simulate_scribbles(ref, k=2, seed=0)
    cfg = TrainConfig(max_steps=600, time_budget=None, device="cpu", seed=0)
    result = run_to_end(Trainer(image, strokes, cfg).run())
    assert result.stopped_by == "plateau" and result.steps < 600
    assert result.reason == STOP_REASONS["plateau"]
    checks = result.checks
    assert [c.step for c in checks] == list(range(20, result.steps + 1, 20))
    assert all(a >= Plateau.STARTED for a in checks[-1].agreement)
    np.testing.assert_allclose(result.model.forest.trust, checks[-1].agreement)
    assert result.model.history[-1]["stopped_by"] == "plateau"
    # The same round without the rule trains to its cap.
    capped = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=result.steps + 20, time_budget=None,
                                                            device="cpu", seed=0, plateau=False)).run())
    assert capped.stopped_by == "max_steps" and capped.steps == result.steps + 20


def test_a_correction_round_ends_on_its_own_tolerance(phantom):
    """A warm start with corrections is judged by ``plateau_correction_tolerance``, a first round by ``plateau_tolerance``."""
    from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections

    image, ref = phantom
    strokes = simulate_scribbles(ref, k=2, seed=0)
    first = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=200, time_budget=None, device="cpu", seed=0,
                                                           plateau=False)).run())
    net_only = PredictConfig(device="cpu", forest=False, refine=False, stroke_regions_only=False, uncertainty=False)
    corrections = simulate_corrections(predict_volume(first.model, image, net_only).labels, ref, k=2, seed=3)
    assert corrections.any()

    def correction_round(**tolerances):
        cfg = TrainConfig(max_steps=100, time_budget=None, device="cpu", seed=1, **tolerances)
        return run_to_end(Trainer(image, strokes, cfg, corrections=corrections, init=first.model).run())

    loose = correction_round(plateau_tolerance=1e-6, plateau_correction_tolerance=0.5)
    assert loose.stopped_by == "plateau" and loose.steps == 40  # two checks in a row at half agreement
    strict = correction_round(plateau_tolerance=0.5, plateau_correction_tolerance=1e-6)
    assert strict.steps > 40  # the first round's loose tolerance does not apply


def test_trust_scales_the_network_per_class():
    import torch

    net = torch.tensor([[0.9, 0.9], [0.1, 0.1]])  # a fresh network: background everywhere
    forest = torch.tensor([[0.2, 0.7], [0.8, 0.3]])
    assert torch.allclose(fuse(net, forest, 0.5, [1.0, 1.0]), fuse(net, forest, 0.5))
    assert fuse(net, forest, 0.5).argmax(0).tolist() == [0, 0]  # the untrained network vetoes the structure
    assert fuse(net, forest, 0.5, [1.0, 0.0]).argmax(0).tolist() == [1, 0]  # not once it is not trusted on it
    assert fuse(net, forest, 0.5, [0.0, 0.0]).argmax(0).tolist() == forest.argmax(0).tolist()


def test_a_short_round_is_never_worse_than_its_forest(phantom, tmp_path):
    """One step of the network knows nothing: the round's mask is at least the forest's own."""
    image, ref = phantom
    strokes = simulate_scribbles(ref, k=1, seed=1)
    features = FeatureCache()
    trainer = Trainer(image, strokes, TrainConfig(max_steps=1, time_budget=None, device="cpu"), features=features)
    model = run_to_end(trainer.run()).model
    assert model.forest.trust[1] < 0.5 and model.forest.trust[2] < 0.5
    ranges = model.normalization.ranges(image)
    kept = features.kept_forest_probabilities(model.forest, image, ranges, (1.0, 1.0, 1.0))
    assert kept is not None and kept.shape == (3,) + image.shape  # computed when the forest was fitted
    alone = kept.argmax(0).astype(np.uint8)
    keep_stroke_regions(alone, trainer.y)
    cfg = PredictConfig(device="cpu")
    mask = predict_volume(model, image, cfg, trainer.y, features=features).labels
    forest_dice = dice_per_class(alone, ref, [1, 2])
    round_dice = dice_per_class(mask, ref, [1, 2])
    assert all(round_dice[c] >= forest_dice[c] - 0.02 for c in (1, 2)), (round_dice, forest_dice)
    untrusting = model.forest.trust
    plain = PredictConfig(device="cpu", refine=False)  # (the CRF repairs this phantom either way)
    trusted = dice_per_class(predict_volume(model, image, plain, trainer.y, features=features).labels, ref, [1, 2])
    model.forest.trust = None  # the fusion as it was: the untrained network drags the structures down
    dragged = dice_per_class(predict_volume(model, image, plain, trainer.y, features=features).labels, ref, [1, 2])
    assert min(dragged.values()) < min(trusted.values()) - 0.05, (dragged, trusted)  # 0.90 against 0.98
    model.forest.trust = untrusting
    # The trust is stored with the model and read back; the prediction of a loaded model (its
    # forest refitted, probabilities recomputed in float32) gives the same mask.
    back = load_model(save_model(model, tmp_path / "m"))
    np.testing.assert_allclose(back.forest.trust, untrusting)
    again = predict_volume(back, image, cfg, trainer.y).labels
    assert (again == mask).mean() > 0.999


def test_a_forged_trust_is_refused(phantom, tmp_path):
    from napari_sparseseg.core.base.errors import CheckpointError

    image, ref = phantom
    model = run_to_end(Trainer(image, simulate_scribbles(ref, k=1, seed=0),
                               TrainConfig(max_steps=1, time_budget=None, device="cpu")).run()).model
    model.forest.trust = np.array([1.0, 2.0, 0.5])
    folder = save_model(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match="forest.npz"):
        load_model(folder)


def test_a_warm_start_ramps_its_learning_rate_up(phantom):
    """Adam restarts empty: without the ramp its first step moves every weight of the trained network by ~lr."""
    import torch

    image, ref = phantom
    strokes = simulate_scribbles(ref, k=1, seed=0)
    trained = run_to_end(Trainer(image, strokes, TrainConfig(max_steps=5, time_budget=None, device="cpu")).run()).model
    before = torch.cat([p.detach().flatten() for p in trained.network.parameters()])

    def moved(warmup):
        cfg = TrainConfig(max_steps=1, time_budget=None, device="cpu", seed=3, warmup_steps=warmup, weight_ema=0.0)
        model = run_to_end(Trainer(image, strokes, cfg, init=trained).run()).model
        return float((torch.cat([p.detach().flatten() for p in model.network.parameters()]) - before).abs().mean())

    full, ramped = moved(0), moved(20)
    assert full > 0 and ramped < 0.1 * full, (ramped, full)  # the first step at lr / 20
    assert TrainConfig().warmup_steps == 20
