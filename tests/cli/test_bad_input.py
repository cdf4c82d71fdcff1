"""Bad input and faults: every case exits with its code and one line, and loses no file.

Each case runs ``sparseseg`` in-process (``main([...])``) in a fresh copy of a tiny synthetic
case (a 24^3 NIfTI scan, scribbles with two classes, corrections, a trained model, an old
mask, a sentinel folder with a file in it...), and hashes the whole tree before and after: no
pre-existing file may change, and nothing may be added (no temporary file left behind).
Faults (full disk, a crash or Ctrl-C inside a write, SIGINT/SIGTERM) are injected with
monkeypatch or, for signals during training, by signalling a ``sparseseg`` subprocess.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.io import Geometry, read_labels, write_labels
from napari_sparseseg.io.models import load_model
from napari_sparseseg.io.sessions import load_session, save_session
from tests.conftest import tree_hash

SEG = ["segment", "image.nii.gz", "scribbles.nii.gz", "--max-steps", "1", "--device", "cpu"]
PRED = ["predict", "image.nii.gz", "--model", "model", "--device", "cpu"]
# Faults strike after the work started: -q keeps stderr to the one line that matters (and shows
# that -q never hides an error or an interruption).
SEGQ, PREDQ = [*SEG, "-q"], [*PRED, "-q"]
DEMO = ["demo", "--data", "sample", "--time-budget", "0.5", "--rounds", "1", "--device", "cpu"]
ENOSPC = OSError(errno.ENOSPC, "No space left on device")




def _nifti(path, arr, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), np.eye(4) if affine is None else affine), str(path))


def _sitk(path, arr):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), useCompression=True)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The pristine case; every test works in its own copy (see ``ws``)."""
    from tests.conftest import make_phantom

    d = tmp_path_factory.mktemp("bad_input")
    image, ref = make_phantom(shape=(24, 24, 24))
    g = Geometry(np.eye(4), image.shape)
    _nifti(d / "image.nii.gz", image, g.nifti_affine())
    s = np.zeros(image.shape, np.uint8)
    s[12, 2:6, 2:6] = 1
    s[12, 12:18, 12:18] = 2
    write_labels(d / "scribbles.nii.gz", s, g)
    c = np.zeros_like(s)
    c[10, 3:5, 3:5] = 1
    write_labels(d / "corrections.nii.gz", c, g)
    write_labels(d / "empty.nii.gz", np.zeros_like(s), g)
    write_labels(d / "oneclass.nii.gz", np.where(s > 0, 2, 0).astype(np.uint8), g)
    write_labels(d / "othergrid.nii.gz", s[:, :-4], Geometry(np.eye(4), (24, 20, 24)))
    _nifti(d / "fraction.nii.gz", s.astype(np.float32) * 0.5)
    _nifti(d / "negative.nii.gz", s.astype(np.int16) - 1)
    nan = image.copy()
    nan[3, 4, 5] = np.nan
    _nifti(d / "nan.nii.gz", nan)
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((9, 9), np.int16), np.eye(4)), str(d / "flat.nii.gz"))
    (d / "garbage.nii.gz").write_bytes(b"\x1f\x8b garbage")
    (d / "image.png").write_bytes(b"\x89PNG not a scan")
    # A MetaImage scan whose data file is called out.zraw (for the companion collision).
    _sitk(d / "img.mhd", image)
    (d / "img.zraw").rename(d / "out.zraw")
    (d / "img.mhd").write_text((d / "img.mhd").read_text().replace("img.zraw", "out.zraw"))
    write_labels(d / "dicom", image.astype(np.int16), g)  # a DICOM series folder as input
    # Too large for NIfTI-1 (32768 voxels along i) and for DICOM (65536 columns).
    for name, n in (("long", 32768), ("wide", 65536)):
        im = np.zeros((2, 2, n), np.int16)
        im[:, :, n // 2:] = 100
        sc = np.zeros((2, 2, n), np.uint8)
        sc[:, :, :4], sc[:, :, -4:] = 1, 2
        _sitk(d / f"{name}.nrrd", im)
        _sitk(d / f"{name}_scr.nrrd", sc)
    # A trained model (also proves the success path works here).
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main([*SEG, "-o", "mask.nii.gz", "--model-out", "model", "-q"]) == 0
    finally:
        os.chdir(cwd)
    (d / "mask.nii.gz").rename(d / "old_mask.nii.gz")
    bad = d / "corrupt_model"
    shutil.copytree(d / "model", bad)
    (bad / "model.pt").write_bytes((bad / "model.pt").read_bytes()[:300])
    # A tiny sample folder for `sparseseg demo --data`.
    sample = d / "sample"
    sample.mkdir()
    for name in ("image.nii.gz", "scribbles.nii.gz"):
        shutil.copy(d / name, sample / name)
    write_labels(sample / "reference.nii.gz", ref.clip(0, 1), g)
    (sample / "classes.json").write_text(json.dumps(["background", "ball"]))
    return d


@pytest.fixture
def ws(case, tmp_path, monkeypatch):
    """A fresh copy of the case with a sentinel folder and a plain file; the current folder."""
    w = tmp_path / "ws"
    shutil.copytree(case, w, symlinks=True)
    (w / "keep").mkdir()
    (w / "keep" / "notes.txt").write_text("the user's notes")
    (w / "afile").write_text("a plain file")
    monkeypatch.chdir(w)
    return w


def run(capsys, argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def check_refused(ws, capsys, argv, message, code=2):
    """Exit ``code``, one line naming the problem, every file as it was, nothing added."""
    before = tree_hash(ws)
    got, out, err = run(capsys, argv)
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1, err
    prefix = "sparseseg: error: " if code == 2 else "sparseseg: interrupted; "
    assert lines[0].startswith(prefix), err
    assert message in lines[0], err
    assert tree_hash(ws) == before
    return lines[0]


# ------------------------------------------------------------------------------ the table
def _mk(*paths):
    def setup(w):
        for p in paths:
            (w / p).mkdir(parents=True)

    return setup


def _link(name, target, hard=False):
    def setup(w):
        (os.link if hard else os.symlink)(w / target, w / name)

    return setup


def _foreign_model(w):
    (w / "theirs").mkdir()
    (w / "theirs" / "model.json").write_text('{"package": "someone-else"}')


def _forged_patch(w):
    shutil.copytree(w / "model", w / "forged")
    meta = json.loads((w / "forged" / "model.json").read_text())
    meta["patch_size"] = [4096] * 3  # MONAI's window would have needed 274 GB
    (w / "forged" / "model.json").write_text(json.dumps(meta))


def _foreign_demo(w):
    (w / "demo").mkdir()
    (w / "demo" / "model").mkdir()
    (w / "demo" / "model" / "weights.h5").write_text("theirs")


BAD = [
    # -- inputs
    ("missing image", None, ["segment", "nope.nii.gz", "scribbles.nii.gz", "-o", "out.nii.gz"], "nope.nii.gz: file not found"),
    ("unreadable image", None, ["segment", "garbage.nii.gz", "scribbles.nii.gz", "-o", "out.nii.gz"], "garbage.nii.gz: cannot read"),
    ("image not 3-D", None, ["segment", "flat.nii.gz", "scribbles.nii.gz", "-o", "out.nii.gz"], "flat.nii.gz: expected a 3-D volume"),
    ("image format", None, ["segment", "image.png", "scribbles.nii.gz", "-o", "out.nii.gz"], "image.png: unsupported format '.png'"),
    ("image with NaN", None, ["segment", "nan.nii.gz", "scribbles.nii.gz", "-o", "out.nii.gz"], "nan.nii.gz: the image has 1 NaN/inf"),
    ("missing scribbles", None, ["segment", "image.nii.gz", "nope.nii.gz", "-o", "out.nii.gz"], "nope.nii.gz: file not found"),
    ("scribbles on another grid", None, ["segment", "image.nii.gz", "othergrid.nii.gz", "-o", "out.nii.gz"],
     "othergrid.nii.gz: scribbles grid"),
    ("corrections on another grid", None, [*SEG, "--corrections", "othergrid.nii.gz", "-o", "out.nii.gz"],
     "othergrid.nii.gz: corrections grid"),
    ("no scribbles", None, ["segment", "image.nii.gz", "empty.nii.gz", "-o", "out.nii.gz"], "empty.nii.gz: no scribbles"),
    ("one class", None, ["segment", "image.nii.gz", "oneclass.nii.gz", "-o", "out.nii.gz"], "oneclass.nii.gz: only one class"),
    ("fractional scribbles", None, ["segment", "image.nii.gz", "fraction.nii.gz", "-o", "out.nii.gz"],
     "fraction.nii.gz: scribbles hold fractional values: 0.5"),
    ("negative scribbles", None, ["segment", "image.nii.gz", "negative.nii.gz", "-o", "out.nii.gz"],
     "negative.nii.gz: scribbles hold negative values: -1"),
    ("unknown device", None, [*SEG[:3], "--device", "gpu", "-o", "out.nii.gz"], "unknown device 'gpu'"),
    ("no CUDA", None, [*SEG[:3], "--device", "cuda", "-o", "out.nii.gz"], "CUDA is not available"),
    ("bad option value", None, [*SEG[:3], "--max-steps", "0", "-o", "out.nii.gz"], "max_steps"),
    ("init model not a model", None, [*SEG, "--init-model", "keep", "-o", "out.nii.gz"], "keep: not a napari-sparseseg model"),
    ("init model corrupt", None, [*SEG, "--init-model", "corrupt_model", "-o", "out.nii.gz"],
     "corrupt_model: corrupt model: the weights in model.pt cannot be loaded"),
    ("predict with a forged patch size", _forged_patch, ["predict", "image.nii.gz", "--model", "forged", "-o", "out.nii.gz"],
     "forged: corrupt model: model.json gives patch_size = [4096, 4096, 4096]"),
    ("predict model missing", None, ["predict", "image.nii.gz", "--model", "nomodel", "-o", "out.nii.gz"],
     "nomodel: model folder not found"),
    # -- an output equal to an input, by any path
    ("mask onto scribbles", None, [*SEG, "-o", "scribbles.nii.gz"], "scribbles.nii.gz: the mask would overwrite the scribbles"),
    ("mask onto corrections", None, [*SEG, "--corrections", "corrections.nii.gz", "-o", "corrections.nii.gz"],
     "corrections.nii.gz: the mask would overwrite the corrections"),
    ("mask onto image", None, [*SEG, "-o", "image.nii.gz"], "image.nii.gz: the mask would overwrite the image"),
    ("probabilities onto image", None, [*SEG, "-o", "out.nii.gz", "--probabilities", "image.nii.gz"],
     "image.nii.gz: the probabilities would overwrite the image"),
    ("mask via symlink", _link("link.nii.gz", "scribbles.nii.gz"), [*SEG, "-o", "link.nii.gz"],
     "link.nii.gz: the mask would overwrite the scribbles"),
    ("mask via hard link", _link("hard.nii.gz", "image.nii.gz", hard=True), [*SEG, "-o", "hard.nii.gz"],
     "hard.nii.gz: the mask would overwrite the image"),
    ("mask via ../", _mk("sub"), [*SEG, "-o", "sub/../scribbles.nii.gz"], "the mask would overwrite the scribbles"),
    ("mask onto the image's .mhd data file", None,
     ["segment", "img.mhd", "scribbles.nii.gz", "--max-steps", "1", "--device", "cpu", "-o", "out.mhd"],
     "out.mhd: the mask's data file out.zraw would overwrite the image's data file out.zraw"),
    ("mask onto the DICOM image folder", None,
     ["segment", "dicom", "scribbles.nii.gz", "--max-steps", "1", "--device", "cpu", "-o", "dicom"],
     "dicom: the mask would overwrite the image"),
    ("mask inside the DICOM image folder", None,
     ["segment", "dicom", "scribbles.nii.gz", "--max-steps", "1", "--device", "cpu", "-o", "dicom/mask.nii.gz"],
     "dicom/mask.nii.gz: the mask would be written inside the image"),
    ("model onto the init model", None, [*SEG, "--init-model", "model", "--model-out", "model", "-o", "out.nii.gz"],
     "model: the model would overwrite the --init-model folder"),
    ("model inside the init model", None, [*SEG, "--init-model", "model", "--model-out", "model/next", "-o", "out.nii.gz"],
     "model/next: the model would be written inside the --init-model folder"),
    ("model folder holding the inputs", None, [*SEG, "--model-out", ".", "-o", "out.nii.gz"],
     ".: the model folder would replace the image inside it"),
    ("predict: mask inside the model", None, [*PRED, "-o", "model/mask.nii.gz"],
     "model/mask.nii.gz: the mask would be written inside the --model folder"),
    ("predict: mask onto the model folder", None, [*PRED, "-o", "model"], "model: the mask would overwrite the --model folder"),
    ("predict: probabilities onto image", None, [*PRED, "-o", "out.nii.gz", "--probabilities", "image.nii.gz"],
     "image.nii.gz: the probabilities would overwrite the image"),
    # -- two outputs in the same place
    ("probabilities onto the mask", None, [*SEG, "-o", "old_mask.nii.gz", "--probabilities", "old_mask.nii.gz"],
     "old_mask.nii.gz: the mask would be written to the same place as the probabilities"),
    ("mask inside the model folder", None, [*SEG, "--model-out", "model", "-o", "model/mask.nii.gz"],
     "model/mask.nii.gz: the mask would be written inside the model"),
    ("mask folder = probabilities' .mhd data file", _mk("p.zraw"), [*SEG, "-o", "p.zraw", "--probabilities", "p.mhd"],
     "p.zraw: the mask would be written to the same place as the probabilities's data file p.zraw"),
    # -- formats and kinds of path
    ("mask format", None, [*SEG, "-o", "out.png"], "out.png: unsupported mask format '.png'"),
    ("probabilities format", None, [*SEG, "-o", "out.nii.gz", "--probabilities", "p.png"],
     "p.png: unsupported probabilities format '.png'"),
    ("probabilities as a DICOM folder", None, [*SEG, "-o", "out.nii.gz", "--probabilities", "pdir"],
     "pdir: unsupported probabilities format 'pdir'"),
    ("mask onto a non-empty folder", None, [*SEG, "-o", "keep"], "keep: the mask folder (DICOM series) is not empty"),
    ("mask folder onto a file", None, [*SEG, "-o", "afile"], "afile: a file exists where the mask folder"),
    ("probabilities onto a folder", _mk("p.nii.gz"), [*SEG, "-o", "out.nii.gz", "--probabilities", "p.nii.gz"],
     "p.nii.gz: a folder exists where the probabilities file should go"),
    ("mask file onto a folder", _mk("m.nii.gz"), [*SEG, "-o", "m.nii.gz"], "m.nii.gz: a folder exists where the mask file"),
    ("mask folder missing", None, [*SEG, "-o", "missing_dir/mask.nii.gz"], "missing_dir/mask.nii.gz: the mask folder missing_dir does not exist"),
    ("mask under a file", None, [*SEG, "-o", "afile/mask.nii.gz"], "afile/mask.nii.gz: afile is a file, not a folder"),
    ("mask name only a suffix", None, [*SEG, "-o", ".nii.gz"], ".nii.gz: the mask file name is only a suffix"),
    ("mask name reserved", None, [*SEG, "-o", "a.sparseseg-tmp.nii.gz"], "reserved for temporary files"),
    ("mask name empty", None, [*SEG, "-o", ""], "no mask path given"),
    ("orphan .mhd data file", lambda w: (w / "m.zraw").write_bytes(b"someone's data"), [*SEG, "-o", "m.mhd"],
     "m.mhd: m.zraw exists and is not the data file of m.mhd"),
    ("mask too large for NIfTI", None,
     ["segment", "long.nrrd", "long_scr.nrrd", "--max-steps", "1", "--device", "cpu", "-o", "out.nii.gz"],
     "out.nii.gz: the mask would be 2x2x32768 voxels, more than NIfTI-1's 32767 per axis"),
    ("probabilities too large for NIfTI", None, ["predict", "long.nrrd", "--model", "model", "-o", "out.nrrd",
                                                 "--probabilities", "p.nii.gz"], "p.nii.gz: the probabilities would be 2x2x32768x2"),
    ("mask too wide for DICOM", None,
     ["segment", "wide.nrrd", "wide_scr.nrrd", "--max-steps", "1", "--device", "cpu", "-o", "outdir"],
     "outdir: DICOM slices hold at most 65535 rows and columns"),
    ("--suggest's default file exists", lambda w: (w / "out_suggestions.json").write_text("the user's notes"),
     [*SEG, "--suggest", "2", "-o", "out.nii.gz"],
     "out_suggestions.json: --suggest writes out_suggestions.json beside the mask, and a file of that name exists; "
     "it is never replaced unless named: move it, or pass --suggestions out_suggestions.json"),
    # -- the model folder
    ("model onto a user folder", None, [*SEG, "-o", "out.nii.gz", "--model-out", "keep"],
     "keep: the model folder already holds other files (notes.txt)"),
    ("model onto a file", None, [*SEG, "-o", "out.nii.gz", "--model-out", "afile"], "afile: a file exists where the model folder"),
    ("model with a foreign model.json", _foreign_model, [*SEG, "-o", "out.nii.gz", "--model-out", "theirs"],
     "theirs: the model folder holds a model.json that napari-sparseseg did not write"),
    ("model.json/ a folder of the user's", lambda w: (_mk("mdir/model.json")(w), (w / "mdir/model.json/data.csv").write_text("x")),
     [*SEG, "-o", "out.nii.gz", "--model-out", "mdir"],
     "mdir: the model folder holds model.json as a folder, where napari-sparseseg writes a file"),
    ("model parent missing", None, [*SEG, "-o", "out.nii.gz", "--model-out", "no/model"], "no/model: the model folder no does not exist"),
    # -- demo
    ("demo onto a user folder", None, [*DEMO, "-o", "keep"], "keep: the demo output folder already holds other files"),
    ("demo onto a file", None, [*DEMO, "-o", "afile"], "afile: a file exists where the demo output folder"),
    ("demo onto its data", None, [*DEMO, "-o", "sample"],
     "sample: the demo output would overwrite the sample data folder"),
    ("demo parent missing", None, [*DEMO, "-o", "no/demo"], "no/demo: the demo output folder no does not exist"),
    ("demo onto a foreign model", _foreign_demo, [*DEMO, "-o", "demo"],
     "demo: the demo output folder holds a model folder that the demo did not write"),
    ("demo data missing", None, [*DEMO, "--data", "keep", "-o", "newdemo"], "keep: sample data incomplete"),
    ("demo rounds", None, [*DEMO, "--rounds", "0", "-o", "newdemo"], "rounds"),
]


@pytest.mark.parametrize("name, setup, argv, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line_nothing_changed(ws, capsys, name, setup, argv, message):
    import torch

    if name == "no CUDA" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if setup is not None:
        setup(ws)
    check_refused(ws, capsys, argv, message)


def test_parent_not_writable(ws, capsys, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    check_refused(ws, capsys, [*SEG, "-o", "out.nii.gz"], "out.nii.gz: the mask folder . is not writable (Permission denied)")


# ------------------------------------------------------------------------------ faults
def _raise_in(monkeypatch, target, name, exc, after=None):
    """Make ``target.name`` call the real one partly (``after``) and then raise ``exc``."""
    real = getattr(target, name)

    def wrapper(*a, **k):
        if after is not None:
            after(real, *a, **k)
        raise exc

    monkeypatch.setattr(target, name, wrapper)


def _half_write(real, tmp, *a, **k):
    Path(tmp).write_bytes(b"half a mask")


def test_disk_full_during_the_mask_write(ws, capsys, monkeypatch):
    from napari_sparseseg.io import volumes

    _raise_in(monkeypatch, volumes, "_write_array", ENOSPC, after=_half_write)
    line = check_refused(ws, capsys, [*PREDQ, "-o", "old_mask.nii.gz"], "old_mask.nii.gz: cannot write the file (No space left on device)")
    assert line.endswith("; nothing was written")


def test_disk_full_during_the_probabilities_after_the_mask(ws, capsys, monkeypatch):
    import nibabel as nib

    (ws / "p.nii.gz").write_bytes(b"old probabilities")
    monkeypatch.setattr(nib, "save", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    before = tree_hash(ws)
    code, _, err = run(capsys, [*PREDQ, "-o", "new.mhd", "--probabilities", "p.nii.gz"])  # the mask is not NIfTI
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("sparseseg: error: p.nii.gz: cannot write the file (No space left on device)")
    assert err.strip().endswith("; wrote mask new.mhd; the probabilities were not written")
    after = tree_hash(ws)
    assert {k: v for k, v in after.items() if k not in ("new.mhd", "new.zraw")} == before
    assert read_labels(ws / "new.mhd")[0].shape == (24, 24, 24)


TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                          "file write failed")  # how torch reports a full disk


@pytest.mark.parametrize("exc, code", [(ENOSPC, 2), (TORCH_FULL, 2), (KeyboardInterrupt(), 130)],
                         ids=["disk full", "disk full, as torch says it", "Ctrl-C"])
def test_crash_during_the_model_save_keeps_the_old_model(ws, capsys, monkeypatch, exc, code):
    import torch

    before = tree_hash(ws)
    _raise_in(monkeypatch, torch, "save", exc, after=lambda real, obj, f, *a, **k: Path(f).write_bytes(b"half"))
    got, _, err = run(capsys, [*SEGQ, "-o", "new.nii.gz", "--model-out", "model"])
    monkeypatch.undo()
    assert got == code and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("wrote mask new.nii.gz; the model was not written")
    assert {k: v for k, v in tree_hash(ws).items() if k != "new.nii.gz"} == before
    assert load_model(ws / "model").num_classes == 2  # still loadable under its own name


def test_train_on_a_full_disk_is_one_line_and_keeps_the_old_model(ws, capsys, monkeypatch):
    """`sparseseg train` ended in torch's traceback when the disk filled up during the model save."""
    import torch

    (ws / "cohort.csv").write_text("image,scribbles\nimage.nii.gz,scribbles.nii.gz\n")
    _raise_in(monkeypatch, torch, "save", TORCH_FULL, after=lambda real, obj, f, *a, **k: Path(f).write_bytes(b"half"))
    line = check_refused(ws, capsys, ["train", "cohort.csv", "--model-out", "model", "--max-steps", "1", "--device", "cpu",
                                      "--no-forest", "-q"], "model: cannot write model.pt (")
    assert "Free some space" in line and line.endswith("; nothing was written")
    monkeypatch.undo()
    assert load_model(ws / "model").num_classes == 2


def test_a_pretraining_cache_on_a_full_disk_never_fails_segment(ws, capsys, monkeypatch):
    """The docs promise that a cache that cannot be written never fails the command: torch's RuntimeError did."""
    import torch

    _raise_in(monkeypatch, torch, "save", TORCH_FULL)
    before = tree_hash(ws)
    with pytest.warns(UserWarning, match="pretraining could not be cached .*PytorchStreamWriter"):
        code, _, err = run(capsys, [*SEG, "--pretrain", "0.2", "-o", "new.nii.gz"])
    assert code == 0 and "wrote mask new.nii.gz" in err, err
    assert {k: v for k, v in tree_hash(ws).items() if k != "new.nii.gz"} == before


def test_suggestions_replace_only_a_file_the_user_named(ws, capsys, monkeypatch):
    """--suggest replaced an existing NAME_suggestions.json the user never named; it now refuses before any work
    (the table above) and, should the file appear during the work, at the end; naming it replaces it."""
    from napari_sparseseg.core.base import progress

    real = progress.ProgressPrinter.__call__

    def call(self, p):
        if not (ws / "new_suggestions.json").exists():
            (ws / "new_suggestions.json").write_text("the user's file, saved meanwhile")
        return real(self, p)

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", call)
    code, _, err = run(capsys, [*SEGQ, "--suggest", "2", "-o", "new.nii.gz"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "new_suggestions.json: new_suggestions.json exists and was not named to be replaced" in err
    assert err.strip().endswith("; wrote mask new.nii.gz; the suggestions were not written")
    assert (ws / "new_suggestions.json").read_text() == "the user's file, saved meanwhile"
    monkeypatch.setattr(progress.ProgressPrinter, "__call__", real)
    code, _, err = run(capsys, [*SEGQ, "--suggest", "2", "-o", "new.nii.gz", "--suggestions", "new_suggestions.json"])
    assert code == 0, err
    assert json.loads((ws / "new_suggestions.json").read_text())["suggestions"]


def test_a_file_put_in_the_model_folder_during_training_is_kept(ws, capsys, monkeypatch):
    from napari_sparseseg.core.base import progress

    real = progress.ProgressPrinter.__call__

    def call(self, p):
        (ws / "model" / "results.csv").write_text("the user's file, saved meanwhile")
        return real(self, p)

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", call)
    code, _, err = run(capsys, [*SEGQ, "-o", "new.nii.gz", "--model-out", "model"])
    assert code == 2 and "model: the model folder already holds other files (results.csv)" in err
    assert err.strip().endswith("; wrote mask new.nii.gz; the model was not written")
    assert (ws / "model" / "results.csv").is_file() and load_model(ws / "model").num_classes == 2


@pytest.mark.parametrize("stage", ["train", "predict"])
def test_ctrl_c_during_a_stage_writes_nothing(ws, capsys, monkeypatch, stage):
    from napari_sparseseg.core.base import progress

    real = progress.ProgressPrinter.__call__

    def call(self, p):
        if p.stage == stage:
            raise KeyboardInterrupt
        return real(self, p)

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", call)
    line = check_refused(ws, capsys, [*SEGQ, "-o", "old_mask.nii.gz", "--model-out", "model", "--probabilities", "p.nii.gz"],
                         "nothing was written", code=130)
    assert line == "sparseseg: interrupted; nothing was written"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_that_surfaces_as_another_error_still_exits_130(ws, capsys, monkeypatch, sig):
    """A signal during a C extension's import reaches us as ImportError (pybind11 wraps the
    KeyboardInterrupt): seen in CI when Ctrl-C hit sklearn's first import. It is an interrupt."""
    from napari_sparseseg.core.base import progress

    real = progress.ProgressPrinter.__call__

    def call(self, p):
        if p.stage == "train":
            try:
                os.kill(os.getpid(), sig)
                time.sleep(1)
            except KeyboardInterrupt as exc:
                raise ImportError('generic_type: type "ObjSense" is already registered!') from exc
        return real(self, p)

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", call)
    line = check_refused(ws, capsys, [*SEGQ, "-o", "old_mask.nii.gz", "--model-out", "model", "--probabilities", "p.nii.gz"],
                         "nothing was written", code=130)
    assert line == "sparseseg: interrupted; nothing was written"


def test_an_error_without_a_signal_is_not_taken_for_an_interrupt(ws, capsys, monkeypatch):
    from napari_sparseseg.core.base import progress

    def call(self, p):
        raise ImportError("a real bug")

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", call)
    with pytest.raises(ImportError, match="a real bug"):
        main([*SEGQ, "-o", "old_mask.nii.gz"])


def test_ctrl_c_inside_the_mask_write_leaves_the_old_mask(ws, capsys, monkeypatch):
    from napari_sparseseg.io import volumes

    _raise_in(monkeypatch, volumes, "_write_array", KeyboardInterrupt(), after=_half_write)
    check_refused(ws, capsys, [*PREDQ, "-o", "old_mask.nii.gz"], "nothing was written", code=130)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_mask_write_lets_it_finish(ws, capsys, monkeypatch, sig):
    from napari_sparseseg.io import volumes

    real = volumes._write_array

    def write(*a, **k):
        os.kill(os.getpid(), sig)  # arrives in the middle of the write
        time.sleep(0.05)
        return real(*a, **k)

    monkeypatch.setattr(volumes, "_write_array", write)
    before = tree_hash(ws)
    code, _, err = run(capsys, [*PREDQ, "-o", "old_mask.nii.gz", "--probabilities", "p.nii.gz"])
    assert code == 130
    assert err.strip().splitlines()[-1] == \
        "sparseseg: interrupted; wrote mask old_mask.nii.gz; the probabilities were not written"
    assert read_labels(ws / "old_mask.nii.gz")[0].shape == (24, 24, 24)  # complete, readable
    assert {k: v for k, v in tree_hash(ws).items() if k != "old_mask.nii.gz"} == \
        {k: v for k, v in before.items() if k != "old_mask.nii.gz"}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are given back


def test_crash_in_a_mhd_header_rename_keeps_the_old_pair(ws, capsys, monkeypatch):
    from napari_sparseseg.io import atomic

    assert run(capsys, [*PREDQ, "-o", "old.mhd", "-q"])[0] == 0
    real, calls = atomic.os.replace, []

    def replace(a, b):
        calls.append(b)
        if str(b).endswith("old.mhd"):
            raise ENOSPC
        return real(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    check_refused(ws, capsys, [*PREDQ, "-o", "old.mhd"], "old.mhd: cannot write the file (No space left on device)")
    assert any(str(c).endswith("old.zraw") for c in calls)  # the data file had been moved in, then put back


@pytest.mark.parametrize("target", ["empty_dicom", "old.nrrd"])
def test_library_write_error_in_the_middle_of_a_write(ws, capsys, monkeypatch, target):
    import SimpleITK as sitk

    (ws / "empty_dicom").mkdir()
    (ws / "old.nrrd").write_bytes(b"an old mask")
    real, n = sitk.ImageFileWriter.Execute, []

    def execute(self, *a):
        n.append(1)
        if len(n) == 3:  # the third slice of a DICOM series
            raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: itk::ERROR: Could not write file")
        return real(self, *a)

    def write_image(img, fname, *a, **k):
        Path(fname).write_bytes(b"NRRD0004 half a file")
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: itk::ERROR: Could not write file")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", execute)
    monkeypatch.setattr(sitk, "WriteImage", write_image)
    line = check_refused(ws, capsys, [*PREDQ, "-o", target], f"{target}: cannot write the file (Could not write file)")
    assert line.endswith("; nothing was written")  # a third DICOM slice / the NRRD: no half series, no half file


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
@pytest.mark.parametrize("damage", ["empty header", "empty data"])
def test_a_writer_that_fails_silently_on_a_full_disk_replaces_no_mask(ws, capsys, monkeypatch, suffix, damage):
    """SimpleITK on a full disk may leave a 0-byte file and return normally: it printed "wrote mask" and the
    empty file replaced the old mask (an .mhd's old header became 0 bytes and a temporary data file stayed)."""
    import SimpleITK as sitk

    from napari_sparseseg.io.atomic import data_file_of

    old = read_labels(ws / "old_mask.nii.gz")
    write_labels(ws / f"old{suffix}", old[0], old[1])
    real = sitk.WriteImage

    def write_image(img, fname, *a, **k):
        real(img, fname, *a, **k)
        head = Path(fname)
        target = head if damage == "empty header" else (data_file_of(head) if suffix in (".mhd", ".nhdr") else head)
        target.write_bytes(b"")

    monkeypatch.setattr(sitk, "WriteImage", write_image)
    line = check_refused(ws, capsys, [*PREDQ, "-o", f"old{suffix}"], f"old{suffix}: the ")
    assert "Free some space" in line and line.endswith("; nothing was written")
    monkeypatch.undo()
    assert np.array_equal(read_labels(ws / f"old{suffix}")[0], old[0])


def test_ctrl_c_during_the_demo(ws, capsys, monkeypatch):
    from napari_sparseseg.core.base import progress

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", lambda self, p: (_ for _ in ()).throw(KeyboardInterrupt))
    check_refused(ws, capsys, [*DEMO, "-o", "newdemo", "--time-budget", "1", "--rounds", "1",
                               "--device", "cpu", "-q"], "sparseseg: interrupted; nothing was written", code=130)


def test_crash_during_session_save_keeps_the_old_session(ws, monkeypatch):
    from napari_sparseseg.core.base.errors import OutputError
    from napari_sparseseg.core.session.state import Session
    from napari_sparseseg.io import atomic, read_image

    image, _ = read_image(ws / "image.nii.gz")
    s = Session(image, read_labels(ws / "scribbles.nii.gz")[0], ["bg", "fg"], model=load_model(ws / "model"))
    save_session(s, ws / "sess")
    before = tree_hash(ws)
    s.scribbles[0, 0, 0] = 2
    for exc in (ENOSPC, KeyboardInterrupt()):
        monkeypatch.setattr(atomic, "_exchange", lambda a, b, exc=exc: (_ for _ in ()).throw(exc))
        with pytest.raises(OutputError if isinstance(exc, OSError) else KeyboardInterrupt):
            save_session(s, ws / "sess")
        assert tree_hash(ws) == before
    monkeypatch.undo()
    assert load_session(ws / "sess").scribbles[0, 0, 0] == 0
    with pytest.raises(OutputError, match="holds other files"):
        save_session(s, ws / "keep")
    assert tree_hash(ws) == before


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_exit_130_nothing_written(ws, sig):
    exe = [sys.executable, "-c", "import sys; from napari_sparseseg.cli import main; sys.exit(main())"]
    before = tree_hash(ws)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [*exe, "segment", "image.nii.gz", "scribbles.nii.gz", "--device", "cpu", "--time-budget", "60",
         "-o", "old_mask.nii.gz", "--model-out", "model", "--probabilities", "p.nii.gz"],
        cwd=ws, env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("training on"):
                break
        assert lines and lines[-1].startswith("training on"), "".join(lines)
        time.sleep(0.5)  # well inside the 60 s of training
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert rest.strip().splitlines() == ["sparseseg: interrupted; nothing was written"]
    assert tree_hash(ws) == before
