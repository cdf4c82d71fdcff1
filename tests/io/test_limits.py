"""Every number read from a model folder or a session file is bounded before anything is allocated.

A forged ``model.json`` (patch_size [4096]*3: a 274 GB window; a U-Net of 1024-channel levels)
or ``forest.npz`` (10**9 trees, or a samples array claiming 10**9 rows) and a forged session
(a shape of 10**18 voxels, an annotations array claiming more values than the session has)
are refused with a ``CheckpointError`` naming the file; the limits live in one place,
``napari_sparseseg/core/base/config.py``.
"""

import io
import json
import resource
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_sparseseg.core.base.config import MAX_FOREST_TREES, MAX_PATCH_SIDE
from napari_sparseseg.core.base.errors import CheckpointError
from napari_sparseseg.io.models import load_model, save_model
from napari_sparseseg.io.sessions import load_session, read_session_info, save_session
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits") / "model"
    save_model(tiny_model(forest=True), d)
    assert load_model(d).forest is not None
    return d


def _forged(model_dir, tmp_path, **changes):
    d = tmp_path / "forged"
    shutil.copytree(model_dir, d)
    meta = json.loads((d / "model.json").read_text())
    for key, value in changes.items():
        if key in ("channels", "strides", "num_res_units", "in_channels"):
            meta["network"][key] = value
        else:
            meta[key] = value
    (d / "model.json").write_text(json.dumps(meta))
    return d


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


FORGED_JSON = [
    ("patch 4096^3", dict(patch_size=[4096] * 3), "patch_size = \\[4096, 4096, 4096\\].*beyond the limits"),
    ("patch side", dict(patch_size=[8, 8, 2 * MAX_PATCH_SIDE]), "beyond the limits"),
    ("channels", dict(channels=[10**6, 10**6], strides=[2]), "network channels .* it must be a list of 2..8 whole numbers "
                                                              "in 1..1024"),
    ("levels", dict(channels=[2] * 50, strides=[1] * 49), "network channels"),
    ("strides", dict(strides=[4096]), "network strides"),
    ("residual units", dict(num_res_units=10**6), "network num_res_units"),
    ("in channels", dict(in_channels=10**6), "network in_channels"),
    ("a large network the weights do not hold", dict(channels=[1024] * 8, strides=[1] * 7, num_res_units=8),
     "holds the weights of another network"),
]


@pytest.mark.parametrize("changes, message", [c[1:] for c in FORGED_JSON], ids=[c[0] for c in FORGED_JSON])
def test_a_forged_model_json_is_refused_before_allocating(model_dir, tmp_path, changes, message):
    d = _forged(model_dir, tmp_path, **changes)
    before = _peak_rss_mb()
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(d)
    assert info.value.path == str(d)
    assert _peak_rss_mb() - before < 1024  # the 1024-channel U-Net would take ~10 GB


def _npz_claiming(arrays: dict, claims: dict) -> bytes:
    """An .npz whose members ``claims`` have headers claiming those shapes (and no data to match)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, arr in arrays.items():
            member = io.BytesIO()
            if name in claims:
                np.lib.format.write_array_header_1_0(member, {"descr": arr.dtype.str, "fortran_order": False,
                                                              "shape": claims[name]})
                member.write(arr.tobytes()[:64])
            else:
                np.lib.format.write_array(member, arr)
            z.writestr(name + ".npy", member.getvalue())
    return buf.getvalue()


def _forest_arrays(model_dir):
    with np.load(model_dir / "forest.npz") as z:
        return {k: z[k] for k in z.files}


def test_a_forged_forest_is_refused(model_dir, tmp_path):
    d = _forged(model_dir, tmp_path)
    arrays = _forest_arrays(model_dir)
    arrays["settings"] = np.array([2, 10**9, 0], np.int64)  # 10**9 trees: fitting would never end
    with open(d / "forest.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=f"at most 64 classes and {MAX_FOREST_TREES} trees"):
        load_model(d)
    arrays = _forest_arrays(model_dir)
    (d / "forest.npz").write_bytes(_npz_claiming(arrays, {"samples": (10**9, 36)}))  # 72 GB claimed
    before = _peak_rss_mb()
    with pytest.raises(CheckpointError, match="forest.npz claims 1000000000 samples"):
        load_model(d)
    assert _peak_rss_mb() - before < 1024


def _session():
    from napari_sparseseg.core.session.state import Session

    image = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[4, 1:3, 1:3], scribbles[4, 5:7, 5:7] = 1, 2
    return Session(image, scribbles, ["bg", "fg"])


def test_a_forged_session_is_refused_before_allocating(tmp_path):
    folder = save_session(_session(), tmp_path / "sess")
    meta = json.loads((folder / "session.json").read_text())
    good = dict(meta)
    meta["shape"] = [10**6] * 3
    (folder / "session.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="more than the 2147483648 voxels"):
        read_session_info(folder)
    (folder / "session.json").write_text(json.dumps(good))
    with np.load(folder / "annotations.npz") as z:
        arrays = {k: z[k] for k in z.files}
    Path(folder / "annotations.npz").write_bytes(_npz_claiming(arrays, {"scribbles": (2000, 2000, 2000)}))
    before = _peak_rss_mb()
    with pytest.raises(CheckpointError, match="the array 'scribbles' of annotations.npz claims shape \\(2000, 2000, 2000\\)"):
        load_session(folder)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (4000, 4000, 4000)})
    (folder / "image.npy").write_bytes(buf.getvalue() + b"\0" * 64)
    Path(folder / "annotations.npz").write_bytes(_npz_claiming(arrays, {}))
    with pytest.raises(CheckpointError, match="image.npy claims shape \\(4000, 4000, 4000\\)"):
        load_session(folder)
    assert _peak_rss_mb() - before < 1024
