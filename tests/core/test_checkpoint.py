import json

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import CheckpointError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict_volume
from napari_sparseseg.core.model.checkpoint import FORMAT_VERSION
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from napari_sparseseg.io.models import load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from tests.conftest import make_phantom

    image, ref = make_phantom(shape=(24, 24, 24))
    cfg = TrainConfig(max_steps=2, time_budget=None, patch_size=(16, 16, 16), device="cpu")
    model = run_to_end(Trainer(image, simulate_scribbles(ref, k=1), cfg, class_names=["bg", "ball", "box"]).run()).model
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    save_model(model, folder)
    return image, model, folder


def test_round_trip_predicts_identically(saved):
    image, model, folder = saved
    loaded = load_model(folder)
    assert loaded.class_names == ["bg", "ball", "box"]
    assert loaded.normalization == model.normalization and loaded.patch_size == model.patch_size
    # The refinement's intensity scale, measured on the training strokes, travels with the model.
    assert model.intensity_scale is not None and loaded.intensity_scale == pytest.approx(model.intensity_scale)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["package_version"] and meta["format_version"] == FORMAT_VERSION
    a = predict_volume(model, image, PredictConfig(device="cpu", probabilities=True))
    b = predict_volume(loaded, image, PredictConfig(device="cpu", probabilities=True))
    assert np.array_equal(a.probabilities, b.probabilities)


def _copy(folder, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_other_version_is_a_clear_error(saved, tmp_path):
    dst = _copy(saved[2], tmp_path)
    meta = json.loads((dst / "model.json").read_text())
    meta["format_version"], meta["package_version"] = 99, "9.0.0"
    (dst / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"format 99 \(saved by napari-sparseseg 9.0.0\)"):
        load_model(dst)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:200]), "weights .* cannot be loaded"),
        (lambda d: (d / "model.json").write_text("{not json"), "cannot be parsed"),
        (lambda d: (d / "model.pt").unlink(), "model.pt is missing"),
        (lambda d: (d / "model.json").write_text(json.dumps({"package": "napari-sparseseg", "format_version": FORMAT_VERSION})), "incomplete"),
    ],
)
def test_corrupt_checkpoint_is_a_clear_error(saved, tmp_path, damage, message):
    dst = _copy(saved[2], tmp_path)
    damage(dst)
    with pytest.raises(CheckpointError, match=message):
        load_model(dst)


def _edit(key, value):
    """Set ``model.json``'s ``key`` (``network.x`` for a network field) to ``value``."""
    def damage(d):
        meta = json.loads((d / "model.json").read_text())
        where, _, name = key.rpartition(".")
        target = meta[where] if where else meta
        if value is _DROP:
            target.pop(name)
        else:
            target[name] = value
        (d / "model.json").write_text(json.dumps(meta))

    return damage


_DROP = object()


def _weights(edit):
    def damage(d):
        import torch

        state = torch.load(d / "model.pt", weights_only=True)
        torch.save(edit(state), d / "model.pt")

    return damage


def _nan_first(state):
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][...] = float("nan")
    return state


CONTRADICTIONS = [
    # model.json against model.pt
    ("more classes than outputs", lambda d: (_edit("network.out_channels", 4)(d), _edit("class_names", ["bg", "a", "b", "c"])(d)),
     "describes a network with 1 input channel(s) and 4 classes, but in model.pt"),
    ("other input channels", lambda d: (_edit("network.in_channels", 2)(d),
                                        _edit("normalization", {"modality": "ct", "windows": [[-100, 100], [-1000, 1000]]})(d)),
     "2 input channel(s)"),
    ("strides for channels", _edit("network.channels", [8, 16, 32, 64, 128]), "5 channel counts but 3 strides"),
    ("other architecture", lambda d: (_edit("network.channels", [8, 16, 32, 64, 128])(d), _edit("network.strides", [2, 2, 2, 2])(d)),
     "do not belong together"),
    # model.json against itself
    ("normalisation channels", _edit("network.in_channels", 2), "normalisation makes 1 input channel(s) but the network takes 2"),
    ("class names", _edit("class_names", ["bg", "ball"]), "2 class names for 3 network outputs"),
    ("names not text", _edit("class_names", [0, 1, 2]), "class_names = [0, 1, 2]"),
    ("missing strides", _edit("network.strides", _DROP), "lacks strides"),
    ("missing network", _edit("network", _DROP), "no 'network' entry"),
    ("missing normalisation", _edit("normalization", _DROP), "no 'normalization' entry"),
    ("bad modality", _edit("normalization", {"modality": "pet"}), "unusable normalisation"),
    ("text channels", _edit("network.in_channels", "1"), "in_channels = '1'"),
    ("bool channels", _edit("network.in_channels", True), "in_channels = True"),
    ("60000 classes", _edit("network.out_channels", 60000), "out_channels = 60000; it must be a whole number in 2..64"),
    ("bad norm", _edit("network.norm", "layer"), "norm = 'layer'"),
    ("other network", _edit("network.architecture", "SwinUNETR"), "SwinUNETR"),
    ("patch 2-D", _edit("patch_size", [16, 16]), "patch_size = [16, 16]"),
    ("patch odd", _edit("patch_size", [16, 16, 15]), "multiples of 8"),
    ("patch text", _edit("patch_size", "16,16,16"), "patch_size = '16,16,16'"),
    ("patch zero", _edit("patch_size", [0, 16, 16]), "3 positive whole numbers"),
    ("intensity scale", _edit("intensity_scale", -1.0), "intensity_scale = -1.0; it must be a positive number"),
    ("spacing", _edit("spacing", [1, 0, 1]), "training voxel spacing"),
    ("history", _edit("history", "round 1"), "history = 'round 1'"),
    # model.pt
    ("weights garbage", lambda d: (d / "model.pt").write_bytes(b"\x00" * 1000), "cannot be loaded"),
    ("weights empty", lambda d: (d / "model.pt").write_bytes(b""), "cannot be loaded"),
    ("weights a tensor", _weights(lambda state: next(iter(state.values()))), "does not hold a network's weights"),
    ("weights key missing", _weights(lambda state: dict(list(state.items())[1:])), "1 missing and 0 unexpected"),
    ("weights nan", _weights(_nan_first), "NaN or infinite weights"),
]


@pytest.mark.parametrize("name, damage, message", CONTRADICTIONS, ids=[c[0] for c in CONTRADICTIONS])
def test_contradictory_or_damaged_model_files(saved, tmp_path, name, damage, message):
    dst = _copy(saved[2], tmp_path)
    damage(dst)
    with pytest.raises(CheckpointError) as info:
        load_model(dst)
    assert message in info.value.message, info.value.message
    assert info.value.path == str(dst) and info.value.message.startswith("corrupt model: ")


def test_unknown_device_is_a_device_error(saved):
    from napari_sparseseg.core.base.errors import DeviceError

    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        load_model(saved[2], device="gpu")


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
