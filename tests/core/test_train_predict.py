"""Training and prediction on a phantom with a known answer (seeded, CPU, seconds)."""

import numpy as np
import pytest
import torch

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import ScribbleError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import network_probabilities, predict_volume
from napari_sparseseg.core.training.train import Trainer, auto_patch_size
from napari_sparseseg.evaluation.metrics import dice_per_class
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles
from napari_sparseseg.io.models import load_model, save_model


def _cfg(**kw):
    base = dict(max_steps=4, time_budget=None, patch_size=(16, 16, 16), device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _state(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def test_auto_patch_follows_spacing():
    # The brain-tumour scan: 6.5 mm slices, 0.78 mm in plane -> a flat patch.
    assert auto_patch_size((6.5, 0.78125, 0.78125), (25, 256, 256)) == (16, 128, 128)
    assert auto_patch_size((3.0, 3.0, 3.0), (112, 101, 122)) == (64, 64, 64)
    # A short axis is capped at the volume and its budget goes to the others.
    p = auto_patch_size((3.0, 3.0, 3.0), (20, 91, 117))
    assert p[0] == 24 and p[1] > 64 and p[1] % 8 == 0


@pytest.fixture(scope="module")
def learned():
    """A model trained on strokes on 2 slices per axis of the phantom (seeded)."""
    from tests.conftest import make_phantom

    image, ref = make_phantom()
    scribbles = simulate_scribbles(ref, k=2, seed=0)
    # "medium" (16-32-64-128): 0.94/0.92 here; the CPU default "small" reaches 0.92/0.78-0.83.
    cfg = TrainConfig(max_steps=150, time_budget=None, patch_size=(32, 32, 32), device="cpu", seed=0, model_size="medium",
                      plateau=False)  # a fixed number of steps (the plateau rule: tests/core/test_monitor.py)
    result = run_to_end(Trainer(image, scribbles, cfg, spacing=(1, 1, 1)).run())
    return image, ref, scribbles, result


@pytest.mark.slow
def test_learns_phantom_from_strokes_on_few_slices(learned):
    image, ref, scribbles, result = learned
    assert (scribbles > 0).mean() < 0.02  # sparse: strokes, not whole slices
    assert result.steps == 150 and result.stopped_by == "max_steps"
    pred = predict_volume(result.model, image, PredictConfig(device="cpu"))
    dice = dice_per_class(pred.labels, ref, [1, 2])
    assert min(dice.values()) >= 0.9, dice


@pytest.mark.slow
def test_bfloat16_training_learns_the_phantom_like_float32(phantom):
    """Mixed precision changes the arithmetic of the steps, not what a round learns; the weights stay float32."""
    image, ref = phantom
    scribbles = simulate_scribbles(ref, k=2, seed=0)
    dice = {}
    for precision in ("float32", "bfloat16"):
        cfg = TrainConfig(max_steps=120, time_budget=None, patch_size=(32, 32, 32), device="cpu", seed=0, plateau=False,
                          precision=precision)
        result = run_to_end(Trainer(image, scribbles, cfg, spacing=(1, 1, 1)).run())
        assert all(p.dtype == torch.float32 for p in result.model.network.parameters())
        assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:20])
        pred = predict_volume(result.model, image, PredictConfig(device="cpu", precision="float32", uncertainty=False))
        dice[precision] = np.mean(list(dice_per_class(pred.labels, ref, [1, 2]).values()))
    assert dice["float32"] > 0.8 and dice["bfloat16"] > 0.8, dice
    assert abs(dice["bfloat16"] - dice["float32"]) < 0.05, dice


def test_precision_auto_is_bfloat16_only_where_native_and_bfloat16_is_refused_on_mps():
    from napari_sparseseg.core.base.device import bfloat16_native, use_bfloat16
    from napari_sparseseg.core.base.errors import ConfigError

    cpu = torch.device("cpu")
    assert use_bfloat16("auto", cpu) == bfloat16_native(cpu)
    assert use_bfloat16("float32", cpu) is False and use_bfloat16("bfloat16", cpu) is True
    assert use_bfloat16("auto", torch.device("mps")) is False
    with pytest.raises(ConfigError, match="float32 or auto"):
        use_bfloat16("bfloat16", torch.device("mps"))
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="half")


def test_seeded_training_is_reproducible(phantom):
    image, ref = phantom
    s = simulate_scribbles(ref, k=1, seed=1)
    a = run_to_end(Trainer(image, s, _cfg()).run())
    b = run_to_end(Trainer(image, s, _cfg()).run())
    c = run_to_end(Trainer(image, s, _cfg(seed=1)).run())
    assert a.losses == b.losses
    sa, sb, sc = _state(a.model), _state(b.model), _state(c.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # trained in the device's layout (channels-last on the CPU), handed back in the default one
    assert all(v.is_contiguous() for v in sa.values())
    assert all(p.is_contiguous() for p in a.model.network.parameters())


def test_warm_start_continues_from_weights_and_keeps_classes(phantom, tmp_path):
    image, ref = phantom
    s = simulate_scribbles(ref, k=1, seed=2)
    first = run_to_end(Trainer(image, s, _cfg(), class_names=["bg", "ball", "box"]).run())
    save_model(first.model, tmp_path / "m")
    init = load_model(tmp_path / "m")
    before = _state(init)
    second = run_to_end(Trainer(image, s, _cfg(), init=init).run())
    assert second.model.class_names == ["bg", "ball", "box"]
    assert len(second.model.history) == 2
    assert all(torch.equal(before[k], v) for k, v in init.network.state_dict().items()), "init must not be mutated"
    assert not all(torch.equal(before[k], v) for k, v in second.model.network.state_dict().items())
    # A class the model does not know is a clear error.
    s2 = s.copy()
    s2[0, 0, 0] = 9
    with pytest.raises(ScribbleError, match="only 3 classes"):
        Trainer(image, s2, _cfg(), init=init)


def test_cancel_between_steps_leaves_a_usable_model(phantom):
    image, ref = phantom
    trainer = Trainer(image, simulate_scribbles(ref, k=1, seed=3), _cfg(max_steps=50))
    gen = trainer.run()
    progress = next(gen)
    assert progress.step == 0 and progress.loss is None  # the forest is fitted first (before the budget starts)
    while progress.step < 3:
        progress = next(gen)
    assert progress.step == 3 and progress.loss is not None
    gen.close()
    assert trainer.model.history[-1]["stopped_by"] == "cancelled"
    pred = predict_volume(trainer.model, image, PredictConfig(device="cpu"))
    assert pred.labels.shape == image.shape


def test_time_budget_stops_training(phantom):
    image, ref = phantom
    cfg = _cfg(max_steps=100000, time_budget=1.5, plateau=False)  # the phantom's plateau can come first
    result = run_to_end(Trainer(image, simulate_scribbles(ref, k=1), cfg).run())
    assert result.stopped_by == "time_budget"
    assert 1 <= result.steps < 100000


def test_the_budget_is_the_networks_however_long_the_forest_takes(phantom, monkeypatch):
    """A large scan's filters and forest took a whole budget before the first step (issue: full-size CT).

    The trainer's clock is a fake one: every reading advances it by 50 ms, and fitting the forest
    by 100 s, so the test does not depend on the machine's speed.
    """
    import napari_sparseseg.core.training.train as train_module

    class Clock:
        now = 0.0

        def perf_counter(self):
            self.now += 0.05
            return self.now

    clock = Clock()
    monkeypatch.setattr(train_module, "time", clock)
    fit = Trainer._fit_forest

    def slow_fit(self, model):
        clock.now += 100.0  # a forest 100 times the budget
        return fit(self, model)

    monkeypatch.setattr(Trainer, "_fit_forest", slow_fit)
    cfg = _cfg(max_steps=100000, time_budget=1.0, forest=True)
    image, ref = phantom
    result = run_to_end(Trainer(image, simulate_scribbles(ref, k=1), cfg).run())
    assert result.stopped_by == "time_budget" and result.elapsed > 100.0
    assert result.steps >= 3  # it trained after the forest (inside the budget it stopped after its first step)


def test_a_correction_round_keeps_the_previous_prediction_where_nothing_is_labelled(learned):
    """Learning without forgetting: the corrections are learned, the rest of the last round's mask is kept.

    Without it a correction round drifted from what the previous round got right (brain-tumour
    Dice 0.89 at the round's start, 0.33-0.48 later). A warm start without corrections (another
    scan's model on new strokes) is not a correction round: nothing of the old network is kept.
    """
    image, ref, scribbles, result = learned
    net_only = PredictConfig(device="cpu", forest=False, refine=False, stroke_regions_only=False, uncertainty=False)
    before = predict_volume(result.model, image, net_only).labels
    corrections = simulate_corrections(before, ref, k=1, seed=3)
    assert corrections.any()
    changed = {}
    for keep in (0.0, 1.0):
        cfg = TrainConfig(max_steps=60, time_budget=None, patch_size=(32, 32, 32), device="cpu", seed=1, plateau=False,
                          keep_previous=keep)
        res = run_to_end(Trainer(image, scribbles, cfg, corrections=corrections, init=result.model).run())
        after = predict_volume(res.model, image, net_only).labels
        changed[keep] = int(((after != before) & (corrections == 0)).sum())
    assert changed[1.0] < changed[0.0]  # fewer voxels nobody corrected were changed

    states = []
    for keep in (0.0, 1.0):  # no corrections: the same round whatever keep_previous says
        cfg = TrainConfig(max_steps=3, time_budget=None, patch_size=(32, 32, 32), device="cpu", seed=1, plateau=False,
                          keep_previous=keep)
        states.append(_state(run_to_end(Trainer(image, scribbles, cfg, init=result.model).run()).model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.slow
def test_slabs_match_single_pass_and_outputs_are_compact(learned):
    image, ref, _, result = learned
    model = result.model
    window = dict(device="cpu", probabilities=True, inferer="sliding_window")
    whole = predict_volume(model, image, PredictConfig(**window))
    slabs = predict_volume(model, image, PredictConfig(**window, slab_voxels=8 * 48 * 48))
    assert model.patch_size[0] > 8  # so several slabs really were used
    assert whole.labels.dtype == np.uint8 and whole.probabilities.dtype == np.uint8
    assert whole.uncertainty.dtype == np.float16
    assert whole.probabilities.shape == (3,) + image.shape
    total = whole.probabilities.astype(int).sum(0)
    assert np.all(np.abs(total - 255) <= 3)
    assert 0 <= float(whole.uncertainty.min()) and float(whole.uncertainty.max()) <= 1
    # The windows are those of one pass over the volume, whatever the slabs: the same numbers.
    assert np.array_equal(whole.labels, slabs.labels)
    assert np.abs(whole.probabilities.astype(int) - slabs.probabilities).max() <= 1


@pytest.mark.slow
def test_float32_prediction_is_monais_whole_volume_sliding_window_and_bfloat16_agrees(learned):
    import torch
    from monai.inferers import sliding_window_inference

    image, ref, _, result = learned
    model = result.model
    before = {n: (p.dtype, p.is_contiguous(), p.detach().clone()) for n, p in model.network.named_parameters()}
    x = torch.from_numpy(model.normalization.apply(image))[None]
    with torch.inference_mode():
        monai = sliding_window_inference(x, tuple(model.patch_size), 2, lambda z: model.network(z).softmax(1), overlap=0.25,
                                         mode="gaussian", padding_mode="replicate")[0]
    base = dict(device="cpu", refine=False, forest=False, uncertainty=False, slab_voxels=8 * 48 * 48)
    fp32 = predict_volume(model, image, PredictConfig(**base, precision="float32"))
    assert np.array_equal(fp32.labels, monai.argmax(0).numpy())
    bf16 = predict_volume(model, image, PredictConfig(**base, precision="bfloat16"))
    assert min(dice_per_class(bf16.labels, fp32.labels, [1, 2]).values()) > 0.99
    # What a correction round keeps of the previous network: the same windows' probabilities, as float16.
    kept = network_probabilities(model.network, x[0].numpy(), model.patch_size, model.num_classes, torch.device("cpu"),
                                 "float32")
    assert kept.dtype == np.float16 and kept.shape == tuple(monai.shape)
    assert np.abs(kept.astype(np.float32) - monai.numpy()).max() < 2e-3  # float16's rounding
    # Inference ran on its own copy: the model's weights, dtype and layout are as they were.
    for n, p in model.network.named_parameters():
        dtype, contiguous, value = before[n]
        assert p.dtype == dtype and p.is_contiguous() == contiguous and torch.equal(p.detach(), value)


def test_tiles_with_a_halo_match_one_whole_volume_tile_and_the_sliding_window(learned):
    image, ref, _, result = learned
    model = result.model
    base = dict(device="cpu", probabilities=True, refine=False, uncertainty=False, inferer="tiles")
    one = predict_volume(model, image, PredictConfig(**base, tile_voxels=10**8))  # the whole volume in one tile
    # 16^3 tiles: 3 x 3 x 3 of them (several slabs, tiles in-plane), each with 8 voxels of context.
    tiled = predict_volume(model, image, PredictConfig(**base, tile_voxels=16**3, halo=8))
    bare = predict_volume(model, image, PredictConfig(**base, tile_voxels=16**3, halo=0))
    window = predict_volume(model, image, PredictConfig(**{**base, "inferer": "sliding_window"}))
    assert (tiled.labels == one.labels).mean() > 0.995
    assert np.abs(tiled.probabilities.astype(int) - one.probabilities).mean() < 2
    # Without context the tile borders show: the halo is what makes tiles exact enough.
    assert np.abs(bare.probabilities.astype(int) - one.probabilities).mean() > \
        np.abs(tiled.probabilities.astype(int) - one.probabilities).mean()
    dice = dice_per_class(tiled.labels, window.labels, [1, 2])
    assert min(dice.values()) > 0.97, dice
    assert min(dice_per_class(tiled.labels, ref, [1, 2]).values()) >= 0.85


@pytest.mark.slow
def test_prediction_with_strokes_keeps_only_stroked_regions(learned):
    from napari_sparseseg.core.inference.postprocess import keep_stroke_regions

    image, ref, scribbles, result = learned
    # With the strokes, the mask is the network's mask with the filter applied; with the
    # filter off (or without strokes) it is the network's mask unchanged.
    raw = predict_volume(result.model, image, PredictConfig(device="cpu", uncertainty=False))
    filtered = predict_volume(result.model, image, PredictConfig(device="cpu", uncertainty=False), scribbles)
    off = predict_volume(result.model, image, PredictConfig(device="cpu", uncertainty=False, stroke_regions_only=False), scribbles)
    expected = raw.labels.copy()
    keep_stroke_regions(expected, scribbles)
    assert np.array_equal(filtered.labels, expected)
    assert np.array_equal(off.labels, raw.labels)
    dice = dice_per_class(filtered.labels, ref, [1, 2])
    assert min(dice.values()) >= 0.9, dice  # the structures themselves are kept
    with pytest.raises(ScribbleError, match="scribbles shape"):
        predict_volume(result.model, image, PredictConfig(device="cpu"), scribbles[:-1])
