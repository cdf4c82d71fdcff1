"""Self-supervised pretraining on the scan: it learns its pretext task, transfers, caches, stops."""

import numpy as np
import pytest
import torch

from napari_sparseseg.core.base.config import PretrainConfig, TrainConfig
from napari_sparseseg.core.base.errors import ConfigError, OutputError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.training.pretrain import Pretrainer, transfer
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.io.cache import load_cached, pretrain, save_cached
from tests.conftest import make_phantom

SPACING = (1.0, 1.0, 1.0)


def _cfg(**kw):
    return PretrainConfig(**{"seconds": None, "max_steps": 30, "device": "cpu", "model_size": "small", **kw})


@pytest.fixture(scope="module")
def image():
    return make_phantom((32, 40, 40))[0]


def test_denoising_pretraining_restores_better_than_the_noisy_input():
    """The known answer of the pretext task: after training, the net's output is closer to the clean patch than its noisy input."""
    image = make_phantom((24, 24, 24))[0]
    pre = run_to_end(Pretrainer(image, _cfg(task="denoise", max_steps=150, learning_rate=3e-3)).run())
    from napari_sparseseg.core.model.network import build_network

    net = build_network(pre.config)
    net.load_state_dict(pre.state)
    net.eval()
    clean = torch.from_numpy(pre.normalization.apply(image))[None]
    noisy = clean + 0.5 * torch.from_numpy(np.random.default_rng(1).normal(size=clean.shape).astype(np.float32))
    with torch.no_grad():
        restored = net(noisy)[:, :1]
    before = float(((noisy - clean) ** 2).mean())
    after = float(((restored - clean) ** 2).mean())
    assert after < 0.5 * before, (before, after)
    assert pre.steps == 150 and pre.task == "denoise"


def test_transfer_copies_the_body_and_leaves_the_class_head(image):
    pre = run_to_end(Pretrainer(image, _cfg(max_steps=2)).run())
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[16, 5:10, 5:10] = 1
    scribbles[16, 20:25, 20:25] = 2
    scribbles[16, 30:35, 5:10] = 3
    # A tiny learning rate: after one step the weights are still the pretrained ones where copied.
    cfg = TrainConfig(max_steps=1, time_budget=None, learning_rate=1e-12, device="cpu", model_size="small", augment=False)
    res = run_to_end(Trainer(image, scribbles, cfg, spacing=SPACING, pretrained=pre).run())
    state = res.model.network.state_dict()
    same = [k for k, v in pre.state.items() if v.shape == state[k].shape]
    fresh = [k for k, v in pre.state.items() if v.shape != state[k].shape]
    assert fresh and len(same) > 5 * len(fresh)  # only the class head is new
    for k in same:
        torch.testing.assert_close(state[k], pre.state[k], rtol=0, atol=1e-6)
    assert res.model.normalization == pre.normalization and res.model.patch_size == pre.patch_size
    assert res.model.num_classes == 3 and res.model.history[0]["pretrained"] == "inpaint"
    assert res.model.history[-1]["round"] == 1


def test_transfer_refuses_another_architecture(image):
    pre = run_to_end(Pretrainer(image, _cfg(max_steps=1)).run())
    from napari_sparseseg.core.model.network import NetworkConfig, build_network

    cfg = NetworkConfig.of_size("medium", pre.config.in_channels, 3)  # same depth: some shapes coincide
    with pytest.raises(ConfigError, match="does not fit"):
        transfer(pre, build_network(cfg), cfg)


def test_trainer_refuses_a_state_from_another_grid(image):
    pre = run_to_end(Pretrainer(image, _cfg(max_steps=1)).run())
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[16, 5:10, 5:10], scribbles[16, 20:25, 20:25] = 1, 2
    with pytest.raises(ConfigError, match="spacing"):
        Trainer(image, scribbles, TrainConfig(max_steps=1), spacing=(2.0, 1.0, 1.0), pretrained=pre)
    with pytest.raises(ConfigError, match="pretraining result"):
        Trainer(image, scribbles, TrainConfig(max_steps=1), spacing=SPACING, pretrained="state.pt")
    with pytest.raises(ConfigError, match="another scan"):
        Pretrainer(image[::-1].copy(), _cfg(), start=pre)


def test_cache_pays_once_and_continues(image, tmp_path):
    cfg = _cfg(seconds=1.0, max_steps=None)
    first = list(_drive(pretrain(image, cfg, spacing=SPACING, cache_dir=tmp_path)))
    assert first[0] and first[1].seconds >= 0.5
    cached = load_cached(first[1].fingerprint, tmp_path)
    assert cached.steps == first[1].steps
    for k, v in first[1].state.items():
        torch.testing.assert_close(cached.state[k], v)
    # The same seconds again: nothing to do, no step taken.
    progress, again = _drive(pretrain(image, cfg, spacing=SPACING, cache_dir=tmp_path))
    assert progress == [] and again.steps == first[1].steps
    # More seconds: continues from the cached state (3 more steps here).
    progress, more = _drive(pretrain(image, _cfg(seconds=first[1].seconds + 60, max_steps=3), spacing=SPACING,
                                     cache_dir=tmp_path))
    assert len(progress) == 3 and more.steps == first[1].steps + 3 and more.seconds > first[1].seconds
    assert load_cached(first[1].fingerprint, tmp_path).steps == more.steps
    # Another scan has another key.
    assert load_cached(Pretrainer(image + 1, cfg).fingerprint, tmp_path) is None


def test_stop_keeps_and_caches_the_work_done(image, tmp_path):
    gen = pretrain(image, _cfg(max_steps=1000), spacing=SPACING, cache_dir=tmp_path)
    for p in gen:
        if p.step == 3:
            break
    gen.close()
    cached = load_cached(Pretrainer(image, _cfg(max_steps=1000)).fingerprint, tmp_path)
    assert cached is not None and cached.steps == 3


def test_cache_never_replaces_a_folder_of_the_users(image, tmp_path):
    pre = run_to_end(Pretrainer(image, _cfg(max_steps=1)).run())
    folder = tmp_path / pre.fingerprint
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="other files"):
        save_cached(pre, tmp_path)
    assert (folder / "notes.txt").read_text() == "mine"
    # A damaged entry of ours reads as absent and is rebuilt.
    (folder / "notes.txt").unlink()
    save_cached(pre, tmp_path)
    (folder / "pretrained.pt").write_bytes(b"garbage")
    assert load_cached(pre.fingerprint, tmp_path) is None
    save_cached(pre, tmp_path)
    assert load_cached(pre.fingerprint, tmp_path).steps == 1


@pytest.mark.parametrize("exc", [RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                                 OSError(28, "No space left on device")], ids=["torch", "os"])
def test_a_cache_that_cannot_be_written_never_fails_pretraining(image, tmp_path, monkeypatch, exc):
    """torch reports a full disk as RuntimeError: it ended `segment --pretrain` in a traceback. The cache is a
    convenience: a warning, the pretrained state, and the old entry byte-identical."""
    first = run_to_end(pretrain(image, _cfg(max_steps=1), spacing=SPACING, cache_dir=tmp_path))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def save(*a, **k):
        raise exc

    monkeypatch.setattr(torch, "save", save)
    with pytest.warns(UserWarning, match="pretraining could not be cached .*it will be redone next time"):
        more = run_to_end(pretrain(image, _cfg(max_steps=3), spacing=SPACING, cache_dir=tmp_path))
    assert first.steps == 1 and more.steps == 4  # continued from the cached step
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_config_is_checked():
    with pytest.raises(ConfigError, match="(?i)did you mean"):
        PretrainConfig(task="inpait")
    with pytest.raises(ConfigError, match="needs a bound"):
        PretrainConfig(seconds=None, max_steps=None)
    with pytest.raises(ConfigError, match="PretrainConfig"):
        Pretrainer(np.zeros((8, 8, 8), np.float32), TrainConfig())


def _drive(gen):
    """``(progress items, result)`` of a generator."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value
