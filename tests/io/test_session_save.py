"""save_session: one rename for the whole folder, only into a new/empty folder or a session of ours,
unchanged model and image reused by hard link, and a crash at any point keeps the old session."""

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.io import sessions as session_mod
from napari_sparseseg.io.atomic import TMP_MARK
from napari_sparseseg.io.sessions import check_session_folder, load_session, save_session


def tree_hash(folder: Path) -> dict:
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = "dir"
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def trained():
    from tests.conftest import make_phantom

    image, ref = make_phantom(shape=(24, 24, 24))
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[12, 2:6, 2:6] = 1
    scribbles[12, 12:16, 12:16] = 2
    cfg = TrainConfig(max_steps=1, time_budget=None, patch_size=(16, 16, 16), device="cpu")
    model = run_to_end(Trainer(image, scribbles, cfg, class_names=["bg", "fg"]).run()).model
    return image, scribbles, model


def _session(trained, **kw):
    image, scribbles, model = trained
    return Session(image, scribbles.copy(), ["bg", "fg"], model=model, **kw)


def test_save_reuses_unchanged_model_and_image_by_link(trained, tmp_path):
    s = _session(trained)
    folder = save_session(s, tmp_path / "sess")
    ino = {n: os.stat(folder / n).st_ino for n in ("image.npy", "model/model.pt", "annotations.npz")}
    s.scribbles[3, 3, 3] = 1
    save_session(s, folder)
    assert os.stat(folder / "image.npy").st_ino == ino["image.npy"]  # linked, not rewritten
    assert os.stat(folder / "model/model.pt").st_ino == ino["model/model.pt"]
    assert os.stat(folder / "annotations.npz").st_ino != ino["annotations.npz"]
    assert load_session(folder).scribbles[3, 3, 3] == 1
    s.set_model(trained[2])  # a new model revision is written again
    save_session(s, folder)
    assert os.stat(folder / "model/model.pt").st_ino != ino["model/model.pt"]
    assert not any(TMP_MARK in p.name for p in tmp_path.iterdir())


def test_image_of_another_session_with_the_same_shape_is_not_reused(trained, tmp_path):
    other = _session(trained)
    other.image = other.image + 1
    save_session(other, tmp_path / "sess")
    s = _session(trained)
    save_session(s, tmp_path / "sess")  # the folder holds a session of ours: replaced
    assert np.array_equal(np.load(tmp_path / "sess" / "image.npy"), s.image)


@pytest.mark.parametrize("setup, message", [
    (lambda f: (f.mkdir(), (f / "thesis.docx").write_bytes(b"mine")), "holds other files \\(thesis.docx\\)"),
    (lambda f: (f.mkdir(), (f / "session.json").write_text('{"package": "other"}')), "did not write"),
    (lambda f: (f.mkdir(), (f / "annotations.npz").write_bytes(b"x")), "no session.json"),
    (lambda f: f.write_bytes(b"a file"), "a file exists where the session folder should go"),
    (lambda f: (f.mkdir(), (f / "session.json").write_text('{"package": "napari-sparseseg"}'), (f / "model").mkdir(),
                (f / "model" / "notes.txt").write_text("mine")), "holds other files \\(notes.txt\\)"),
], ids=["user file", "foreign session.json", "no session.json", "a file", "foreign file in model/"])
def test_save_refuses_a_folder_that_is_not_ours(trained, tmp_path, setup, message):
    f = tmp_path / "target"
    setup(f)
    before = tree_hash(tmp_path)
    with pytest.raises(OutputError, match=message):
        check_session_folder(f)
    with pytest.raises(OutputError, match=message):
        save_session(_session(trained), f)
    assert tree_hash(tmp_path) == before


def _fail_savez(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _interrupt(*a, **k):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where, exc", [
    ("annotations", OutputError), ("model", OutputError), ("annotations-interrupted", KeyboardInterrupt),
    ("swap", OutputError), ("swap-interrupted", KeyboardInterrupt)])
def test_crash_during_save_keeps_the_old_session_loadable(trained, tmp_path, monkeypatch, where, exc):
    s = _session(trained)
    folder = save_session(s, tmp_path / "sess")
    before = tree_hash(tmp_path)
    s.scribbles[5, 5, 5] = 2
    s.set_model(trained[2])  # the model must be written again
    if where == "annotations":
        monkeypatch.setattr(session_mod.np, "savez_compressed", _fail_savez)
    elif where == "annotations-interrupted":
        monkeypatch.setattr(session_mod.np, "savez_compressed", _interrupt)
    elif where == "model":
        import torch

        monkeypatch.setattr(torch, "save", _fail_savez)
    elif where == "swap":
        from napari_sparseseg.io import atomic

        monkeypatch.setattr(atomic, "_exchange", lambda a, b: _fail_savez())
    else:
        from napari_sparseseg.io import atomic

        monkeypatch.setattr(atomic, "_exchange", _interrupt)
    with pytest.raises(exc):
        save_session(s, folder)
    monkeypatch.undo()
    assert tree_hash(tmp_path) == before
    back = load_session(folder)
    assert back.scribbles[5, 5, 5] == 0 and back.model is not None


def test_saving_into_an_empty_folder_and_creating_parents(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    save_session(_session(trained), tmp_path / "empty")
    assert (tmp_path / "empty" / "session.json").is_file()
    save_session(_session(trained, image_path="/data/ct.nii.gz"), tmp_path / "a" / "b" / "autosave")
    assert not (tmp_path / "a" / "b" / "autosave" / "image.npy").exists()  # the scan has a file: not stored
