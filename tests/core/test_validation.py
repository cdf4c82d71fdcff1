"""Every input is validated once, in core: the API refuses what the command line refuses, with the same errors.

Scribbles and corrections (``validate_labels``), images (``validate_image``), spacing and
affines (``core.grid``), class tables; then the public entry points that call them:
``Trainer``, ``predict``/``predict_volume``, ``Session`` and ``load_session`` (damaged session
folders). Damaged model folders are in tests/core/test_checkpoint.py.
"""

import json
import shutil
import zipfile

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.core.annotations.labels import MAX_CLASSES, validate_class_names, validate_labels
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError, InputError, ScribbleError
from napari_sparseseg.core.base.grid import validate_affine, validate_shape, validate_spacing
from napari_sparseseg.core.inference.predict import predict, predict_volume
from napari_sparseseg.core.model.checkpoint import SegModel
from napari_sparseseg.core.model.intensity import Normalization, validate_image
from napari_sparseseg.core.model.network import NetworkConfig, build_network
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.io.sessions import load_session, save_session

SHAPE = (8, 9, 10)


def _image():
    rng = np.random.default_rng(0)
    return rng.normal(100, 10, SHAPE).astype(np.float32)


def _scribbles():
    s = np.zeros(SHAPE, np.uint8)
    s[2, 2:5, 2:5] = 1
    s[5, 4:7, 4:7] = 2
    return s


def _model(classes=3):
    config = NetworkConfig.of_size("small", 1, classes)
    names = ["background"] + [f"s{i}" for i in range(1, classes)]
    return SegModel(build_network(config), config, Normalization("mri"), names, (8, 8, 8))


# ----------------------------------------------------------------------------- validate_labels
def test_integer_labels_are_taken_as_they_are():
    s = _scribbles().astype(np.int64)
    assert validate_labels(s) is s  # no copy: the widget's layer data stays the session's array


def test_whole_valued_floats_are_converted():
    s = _scribbles().astype(np.float32)
    out = validate_labels(s)
    assert out.dtype == np.uint8 and np.array_equal(out, _scribbles())


@pytest.mark.parametrize("make, message", [
    (lambda s: s.astype(np.float32) + np.where(s > 1, 0.5, 0), r"fractional values: 2.5 \(9 voxels\)"),
    (lambda s: np.where(s == 2, np.nan, s).astype(np.float64), "NaN or infinite values in 9 voxels"),
    (lambda s: np.where(s == 2, -1, s.astype(np.int16)), r"negative values: -1 \(9 voxels\)"),
    (lambda s: s > 0, "boolean"),
    (lambda s: s.astype(np.complex64), "whole numbers"),
    (lambda s: s.astype(str), "whole numbers"),
    (lambda s: s[0], "3-D"),
    (lambda s: s[:-1], r"shape \(7, 9, 10\) differs from the image shape \(8, 9, 10\)"),
])
def test_bad_scribbles_are_refused_saying_what(make, message):
    with pytest.raises(ScribbleError, match=message):
        validate_labels(make(_scribbles()), "scribbles", shape=SHAPE)


def test_a_stray_huge_value_is_named_with_its_voxel_count():
    s = _scribbles().astype(np.uint16)
    s[0, 0, :3] = 60000
    with pytest.raises(ScribbleError) as info:
        validate_labels(s)
    msg = info.value.message
    assert "60000 (3 voxels)" in msg and f"at most {MAX_CLASSES} classes" in msg
    s[0, 0, :3] = 255
    with pytest.raises(ScribbleError, match="0/255"):
        validate_labels(s)


def test_the_class_bound():
    s = _scribbles()
    s[0, 0, 0] = MAX_CLASSES
    assert validate_labels(s) is s
    s[0, 0, 0] = MAX_CLASSES + 1
    with pytest.raises(ScribbleError, match=rf"{MAX_CLASSES + 1} \(1 voxel\)"):
        validate_labels(s)
    s[0, 0, 0] = 3
    with pytest.raises(ScribbleError, match="values above 2"):
        validate_labels(s, max_value=2)


def test_masks_are_held_to_label_values_not_to_the_class_bound():
    m = np.zeros(SHAPE, np.uint32)
    m[0, 0, 0] = 60000  # an atlas label id in a reference mask is fine
    assert validate_labels(m, "reference") is m
    m[0, 0, 0] = 70000
    with pytest.raises(InputError) as info:
        validate_labels(m, "reference")
    assert not isinstance(info.value, ScribbleError) and "70000 (1 voxel)" in info.value.message


def test_class_names():
    assert validate_class_names(("bg", "liver")) == ["bg", "liver"]
    for bad, message in [("background", "list of names"), (["bg"], "2..64"), (["bg", 3], "non-empty text"),
                         (["bg", " "], "non-empty text"), ([f"c{i}" for i in range(MAX_CLASSES + 1)], "got 65"), (7, "list")]:
        with pytest.raises(ConfigError, match=message):
            validate_class_names(bad)


# ----------------------------------------------------------------------------- images and grids
@pytest.mark.parametrize("image, message", [
    (np.zeros((4, 5)), "3-D"),
    (np.zeros((1, 5, 5)), "too thin"),
    (np.zeros(SHAPE, bool), "real-valued"),
    (np.zeros(SHAPE, np.complex64), "real-valued"),
    (np.full(SHAPE, np.inf, np.float32), f"{int(np.prod(SHAPE))} NaN/inf voxels"),
])
def test_bad_images(image, message):
    with pytest.raises(InputError, match=message):
        validate_image(image)


def test_image_as_nested_lists_is_taken():
    out = validate_image(_image().tolist())
    assert isinstance(out, np.ndarray) and out.shape == SHAPE


@pytest.mark.parametrize("spacing", [(0, 1, 1), (-1, 1, 1), (np.nan, 1, 1), (np.inf, 1, 1), (1, 1), "abc", None])
def test_bad_spacing(spacing):
    with pytest.raises(InputError):
        validate_spacing(spacing)


def test_spacing_and_shape():
    assert validate_spacing([1, 2, 3.5]) == (1.0, 2.0, 3.5)
    assert validate_shape((np.int64(2), 3, 4)) == (2, 3, 4)
    for bad in [(0, 1, 1), (1, 1), (1.5, 2, 3), (True, 2, 3), None]:
        with pytest.raises(InputError):
            validate_shape(bad)


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.__setitem__((0, 0), np.nan), "NaN or infinite"),
    (lambda a: a.__setitem__((1, 3), np.inf), "NaN or infinite"),
    (lambda a: a.__setitem__((slice(None), 0), 0), "voxel size of 0"),
    (lambda a: a.__setitem__((slice(None), 1), a[:, 0]), "singular"),
    (lambda a: a.__setitem__((3, 0), 1), "last row"),
])
def test_bad_affines(edit, message):
    affine = np.diag([2.0, 1.0, 1.5, 1.0])
    affine[:3, 3] = (10, 20, 30)
    assert np.array_equal(validate_affine(affine), affine)
    edit(affine)
    with pytest.raises(InputError, match=message):
        validate_affine(affine)


def test_geometry_refuses_unusable_affines():
    from napari_sparseseg.io import Geometry

    with pytest.raises(InputError, match="NaN"):
        Geometry(np.full((4, 4), np.nan), SHAPE)
    with pytest.raises(InputError, match="voxel size of 0"):
        Geometry.from_spacing(SHAPE, (0, 1, 1))
    with pytest.raises(InputError, match="three positive"):
        Geometry(np.eye(4), (0, 4, 4))


# ----------------------------------------------------------------------------- Trainer, predict
BAD_SCRIBBLES = [
    ("fractional", lambda s: s.astype(np.float32) * 0.5, ScribbleError, "fractional values"),
    ("negative", lambda s: s.astype(np.int16) - 1, ScribbleError, "negative values: -1"),
    ("nan", lambda s: np.where(s == 1, np.nan, s).astype(np.float32), ScribbleError, "NaN or infinite"),
    ("stray", lambda s: np.where(s == 2, 60000, s.astype(np.uint16)), ScribbleError, "60000 (9 voxels)"),
]


@pytest.mark.parametrize("name, make, error, message", BAD_SCRIBBLES, ids=[b[0] for b in BAD_SCRIBBLES])
def test_trainer_refuses_like_the_cli(tmp_path, capsys, name, make, error, message):
    """The API raises the error the CLI prints for the same scribbles, before any network is built."""
    bad = make(_scribbles())
    with pytest.raises(error) as info:
        Trainer(_image(), bad, TrainConfig(device="cpu"))
    assert message in info.value.message

    import nibabel as nib

    from napari_sparseseg.io import Geometry

    g = Geometry.from_spacing(SHAPE)
    nib.save(nib.Nifti1Image(_image().transpose(2, 1, 0), g.nifti_affine()), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(bad.transpose(2, 1, 0), g.nifti_affine()), tmp_path / "scribbles.nii.gz")
    out = tmp_path / "mask.nii.gz"
    code = main(["segment", str(tmp_path / "image.nii.gz"), str(tmp_path / "scribbles.nii.gz"), "-o", str(out), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and not out.exists()
    assert f"scribbles.nii.gz: {info.value.message}" in lines[0]


def test_trainer_checks_every_argument():
    image, s = _image(), _scribbles()
    cases = [
        (dict(image=np.where(s > 0, np.nan, image)), InputError, "NaN/inf"),
        (dict(image=image[0]), InputError, "3-D"),
        (dict(scribbles=s[:, :-1]), ScribbleError, "differs from the image shape"),
        (dict(scribbles=s > 0), ScribbleError, "boolean"),
        (dict(corrections=s[:-1]), ScribbleError, "corrections shape"),
        (dict(corrections=s.astype(np.float32) / 3), ScribbleError, "corrections hold fractional"),
        (dict(spacing=(0, 1, 1)), InputError, "voxel spacing"),
        (dict(spacing=(1, 1)), InputError, "three numbers"),
        (dict(cfg={"max_steps": 3}), ConfigError, "TrainConfig"),
        (dict(class_names="background,ball"), ConfigError, "list of names"),
        (dict(class_names=["background"]), ConfigError, "2..64"),
        (dict(class_names=["bg", "x"], scribbles=np.where(s == 2, 3, s).astype(np.uint8)), ScribbleError, "2 class names"),
        (dict(init="model/"), CheckpointError, "init must be a model"),
        (dict(init=_model(2), scribbles=np.where(s == 2, 3, s).astype(np.uint8)), ScribbleError, "only 2 classes"),
    ]
    for change, error, message in cases:
        kw = dict(image=image, scribbles=s, cfg=TrainConfig(device="cpu"))
        kw.update(change)
        args = (kw.pop("image"), kw.pop("scribbles"), kw.pop("cfg"))
        with pytest.raises(error, match=message):
            Trainer(*args, **kw)


def test_trainer_takes_what_is_valid():
    s = _scribbles()
    t = Trainer(_image().astype(np.int16), s.astype(np.float64), TrainConfig(device="cpu"), corrections=np.zeros(SHAPE, np.int32),
                spacing=[1, 2, 3], class_names=("bg", "a", "b"))
    assert np.issubdtype(t.y.dtype, np.integer) and np.array_equal(t.y, s)
    assert t.spacing == (1.0, 2.0, 3.0) and t.class_names == ["bg", "a", "b"] and t.num_classes == 3


def test_predict_checks_its_inputs():
    model, image = _model(), _image()
    cases = [
        (lambda: predict_volume(model, np.where(image > 100, np.nan, image)), InputError, "NaN/inf"),
        (lambda: predict_volume(model, image[0]), InputError, "3-D"),
        (lambda: predict_volume(model, image, annotations=_scribbles() * 0.5), ScribbleError, "fractional"),
        (lambda: predict_volume(model, image, annotations=_scribbles()[1:]), ScribbleError, "differs from the image shape"),
        (lambda: predict_volume("model/", image), CheckpointError, "expected a model"),
        (lambda: predict_volume(model, image, {"device": "cpu"}), ConfigError, "PredictConfig"),
        (lambda: predict(model, image, annotations=np.full(SHAPE, 99)), ScribbleError, "99"),  # when called
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    out = predict_volume(model, image, PredictConfig(device="cpu"), annotations=_scribbles().astype(np.float32))
    assert out.labels.shape == SHAPE  # whole-valued float strokes are fine


# ----------------------------------------------------------------------------- Session
def test_session_checks_its_fields():
    image, s = _image(), _scribbles()
    ok = Session(image, s, ["bg", "a", "b"], spacing=(1, 2, 3), geometry={"affine": np.eye(4).tolist(), "shape": list(SHAPE)})
    assert ok.scribbles is s and ok.spacing == (1.0, 2.0, 3.0)
    affine = np.eye(4)
    affine[0, 0] = np.nan
    cases = [
        (dict(scribbles=s * 0.5), ScribbleError, "fractional"),
        (dict(scribbles=np.where(s == 2, 60000, s.astype(np.uint16))), ScribbleError, "60000"),
        (dict(scribbles=s[1:]), ScribbleError, "differs from the image shape"),
        (dict(image=np.where(s > 0, np.inf, image)), InputError, "NaN/inf"),
        (dict(class_names="bg"), ConfigError, "list of names"),
        (dict(spacing=(0, 1, 1)), InputError, "spacing"),
        (dict(geometry={"affine": affine.tolist(), "shape": list(SHAPE)}), InputError, "NaN"),
        (dict(geometry={"affine": np.eye(4).tolist(), "shape": [1, 2, 3]}), InputError, "geometry is for shape"),
        (dict(geometry=[1, 2]), InputError, "dict"),
        (dict(corrected=np.zeros((2, 2, 2), bool)), ScribbleError, "correction mask"),
        (dict(prediction=np.full(SHAPE, 0.5)), InputError, "fractional"),
        (dict(history="round 1"), ConfigError, "history"),
        (dict(colors="red"), ConfigError, "colors"),
        (dict(model="model/"), CheckpointError, "model"),
    ]
    for change, error, message in cases:
        kw = dict(image=image, scribbles=s, class_names=["bg", "a", "b"])
        kw.update(change)
        with pytest.raises(error, match=message):
            Session(kw.pop("image"), kw.pop("scribbles"), **kw)


@pytest.fixture
def saved(tmp_path):
    """A saved session without a model (image stored), and a function to rewrite one of its files."""
    s = Session(_image(), _scribbles(), ["bg", "a", "b"], spacing=(1.0, 2.0, 3.0),
                geometry={"affine": np.diag([1.0, 2.0, 3.0, 1.0]).tolist(), "shape": list(SHAPE)})
    s.set_prediction(np.zeros(SHAPE, np.uint8))
    folder = save_session(s, tmp_path / "sess")
    assert load_session(folder).scribbles.shape == SHAPE
    return folder


def _arrays(folder):
    with np.load(folder / "annotations.npz") as z:
        return {k: z[k] for k in z.files}


def _write_arrays(folder, **changes):
    arrays = _arrays(folder)
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez_compressed(folder / "annotations.npz", **arrays)


def _edit_json(folder, **changes):
    meta = json.loads((folder / "session.json").read_text())
    meta.update(changes)
    (folder / "session.json").write_text(json.dumps(meta))


def _bad_members(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("scribbles.npy", b"\x93NUMPY garbage")
        z.writestr("corrected.npy", b"\x93NUMPY garbage")


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


NAN_AFFINE = np.diag([1.0, 2.0, 3.0, 1.0]).tolist()
NAN_AFFINE[1][3] = float("nan")
SINGULAR = np.diag([1.0, 2.0, 3.0, 1.0])
SINGULAR[:3, 1] = SINGULAR[:3, 0]

DAMAGE = [
    ("npz truncated", lambda d: _truncate(d / "annotations.npz"), "annotations.npz cannot be read"),
    ("npz garbage", lambda d: (d / "annotations.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 300), "annotations.npz cannot be read"),
    ("npz empty", lambda d: (d / "annotations.npz").write_bytes(b""), "annotations.npz cannot be read"),
    ("npz bad member", lambda d: _bad_members(d / "annotations.npz"), "annotations.npz cannot be read"),
    ("npz missing", lambda d: (d / "annotations.npz").unlink(), "annotations.npz is missing"),
    ("no corrected", lambda d: _write_arrays(d, corrected=None), "lacks the array(s) corrected"),
    ("no scribbles", lambda d: _write_arrays(d, scribbles=None), "lacks the array(s) scribbles"),
    ("object array", lambda d: _write_arrays(d, scribbles=np.array([{"a": 1}], dtype=object)), "cannot be read"),
    ("scribbles shape", lambda d: _write_arrays(d, scribbles=np.zeros((3, 3, 3), np.uint8)), "scribbles shape (3, 3, 3)"),
    ("scribbles fractional", lambda d: _write_arrays(d, scribbles=_scribbles() * 0.5), "fractional"),
    ("scribbles huge", lambda d: _write_arrays(d, scribbles=_scribbles().astype(np.uint16) * 30000), "60000"),
    ("corrected size", lambda d: _write_arrays(d, corrected=np.zeros(3, np.uint8)), "correction mask"),
    ("corrected dtype", lambda d: _write_arrays(d, corrected=np.zeros(90, np.float64)), "correction mask"),
    ("prediction shape", lambda d: _write_arrays(d, prediction=np.zeros((2, 2, 2), np.uint8)), "prediction shape"),
    ("prediction values", lambda d: _write_arrays(d, prediction=np.full(SHAPE, 200, np.uint8)), "above 63"),
    ("shape text", lambda d: _edit_json(d, shape="8x9x10"), "shape is '8x9x10'"),
    ("shape zero", lambda d: _edit_json(d, shape=[0, 9, 10]), "3 positive whole numbers"),
    ("shape float", lambda d: _edit_json(d, shape=[8.5, 9, 10]), "3 positive whole numbers"),
    ("names text", lambda d: _edit_json(d, class_names="bg,a,b"), "list of names"),
    ("names numbers", lambda d: _edit_json(d, class_names=[0, 1, 2]), "non-empty text"),
    ("history dict", lambda d: _edit_json(d, history={"round": 1}), "history is dict"),
    ("history items", lambda d: _edit_json(d, history=[1, 2]), "history is list"),
    ("geometry nan", lambda d: _edit_json(d, geometry={"affine": NAN_AFFINE, "shape": list(SHAPE)}), "NaN"),
    ("geometry singular", lambda d: _edit_json(d, geometry={"affine": SINGULAR.tolist(), "shape": list(SHAPE)}), "singular"),
    ("geometry 3x3", lambda d: _edit_json(d, geometry={"affine": np.eye(3).tolist(), "shape": list(SHAPE)}), "4x4"),
    ("geometry shape", lambda d: _edit_json(d, geometry={"affine": np.eye(4).tolist(), "shape": [1, 1, 1]}), "geometry is for shape"),
    ("spacing", lambda d: _edit_json(d, spacing=[1, -2, 3]), "voxel spacing"),
    ("image_path", lambda d: _edit_json(d, image_path=5), "image_path is 5"),
    ("has_model text", lambda d: _edit_json(d, has_model="yes"), "true or false"),
    ("model gone", lambda d: _edit_json(d, has_model=True), "model/ folder is missing"),
    ("image truncated", lambda d: _truncate(d / "image.npy"), "image.npy cannot be read"),
    ("image nan", lambda d: np.save(d / "image.npy", np.full(SHAPE, np.nan, np.float32)), "image.npy: the image has 720 NaN/inf"),
    ("image shape", lambda d: np.save(d / "image.npy", np.zeros((2, 9, 10), np.float32)), "image.npy has shape (2, 9, 10)"),
    ("image missing", lambda d: (d / "image.npy").unlink(), "image.npy is missing"),
]


@pytest.mark.parametrize("name, damage, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_session_is_a_clear_error_naming_the_file(saved, name, damage, message):
    damage(saved)
    with pytest.raises(CheckpointError) as info:
        load_session(saved)
    assert message in info.value.message, info.value.message
    assert info.value.path == str(saved) and "corrupt session" in info.value.message


def test_session_load_checks_the_image_it_is_given(saved):
    with pytest.raises(InputError, match="NaN/inf"):
        load_session(saved, image=np.full(SHAPE, np.nan, np.float32))
    with pytest.raises(ScribbleError, match="drawn on"):
        load_session(saved, image=np.zeros((2, 3, 4), np.float32))
    s = load_session(saved, image=np.ones(SHAPE, np.float32))
    assert s.image.max() == 1


def test_damaged_model_inside_a_session_names_the_model(saved, tmp_path):
    from napari_sparseseg.io.models import save_model

    save_model(_model(), saved / "model")
    _edit_json(saved, has_model=True)
    assert load_session(saved).model.num_classes == 3
    _truncate(saved / "model" / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt") as info:
        load_session(saved)
    assert info.value.path == str(saved / "model")
    shutil.rmtree(saved / "model")
