import json

import numpy as np
import pytest

from napari_sparseseg.core.checkpoint import FORMAT_VERSION, load_model, save_model
from napari_sparseseg.core.config import PredictConfig, TrainConfig
from napari_sparseseg.core.errors import CheckpointError
from napari_sparseseg.core.predict import predict_volume
from napari_sparseseg.core.progress import run_to_end
from napari_sparseseg.core.simulated_annotator import simulate_scribbles
from napari_sparseseg.core.train import Trainer


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


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
