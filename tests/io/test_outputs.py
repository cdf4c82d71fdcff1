"""io.check_outputs / check_format_limits / OutputLog as the widget and the CLI call them."""

import os

import pytest

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io import OutputLog, check_format_limits, check_outputs
from tests.conftest import tiny_model, tree_hash


def test_export_mask_refuses_the_scan_itself_by_any_path(tmp_path):
    scan = tmp_path / "ct.nii.gz"
    scan.write_bytes(b"scan")
    (tmp_path / "alias.nii.gz").symlink_to(scan)
    for path in (scan, tmp_path / "alias.nii.gz", tmp_path / "." / "ct.nii.gz"):
        with pytest.raises(OutputError, match="the mask would overwrite the image"):
            check_outputs({"mask": path}, {"image": scan})
    assert check_outputs({"mask": tmp_path / "mask.nii.gz"}, {"image": scan}) == {"mask": tmp_path / "mask.nii.gz"}


def test_session_output_is_new_empty_or_ours(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("x")
    with pytest.raises(OutputError, match=r"holds other files \(data.csv\)"):
        check_outputs({"session": tmp_path / "mine"})
    (tmp_path / "empty").mkdir()
    check_outputs({"session": tmp_path / "empty"}, {"image": tmp_path / "ct.nii.gz"})
    with pytest.raises(OutputError, match="the session folder would replace the image inside it"):
        (tmp_path / "empty" / "ct.nii.gz").write_bytes(b"scan")
        check_outputs({"session": tmp_path / "empty"}, {"image": tmp_path / "empty" / "ct.nii.gz"})


def test_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="unknown output kind"):
        check_outputs({"masks": tmp_path / "m.nii.gz"})


def test_format_limits():
    check_format_limits({"mask": "m.nii.gz", "probabilities": "p.nrrd"}, (32767, 2, 2), 3)
    with pytest.raises(OutputError, match="more than NIfTI-1's 32767"):
        check_format_limits({"mask": "m.nii"}, (2, 32768, 2))
    with pytest.raises(OutputError, match="2x2x2x40000"):
        check_format_limits({"probabilities": "p.nii.gz"}, (2, 2, 2), 40000)
    check_format_limits({"mask": "m.nrrd", "model": "model"}, (2, 2, 70000))
    with pytest.raises(OutputError, match="DICOM slices hold at most 65535"):
        check_format_limits({"mask": "maskdir"}, (2, 2, 70000))


def test_output_log_summary(tmp_path):
    log = OutputLog()
    log.plan({"mask": tmp_path / "m.nii.gz", "probabilities": tmp_path / "p.nii.gz", "model": tmp_path / "model"})
    assert log.summary() == "nothing was written"
    log.write("mask", lambda: (tmp_path / "m.nii.gz").write_bytes(b"m"))
    assert log.summary() == f"wrote mask {tmp_path / 'm.nii.gz'}; the probabilities and model were not written"

    def interrupted_after_the_rename():
        os.mkdir(tmp_path / "model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log.write("model", interrupted_after_the_rename)
    assert log.summary().endswith(f"and model {tmp_path / 'model'}; the probabilities were not written")


def test_a_dicom_series_leaves_the_process_locale_alone(tmp_path):
    import locale

    import numpy as np

    from napari_sparseseg.io import Geometry, read_image, write_labels

    before = locale.setlocale(locale.LC_ALL)
    write_labels(tmp_path / "dcm", np.arange(60, dtype=np.int16).reshape(3, 4, 5), Geometry(np.eye(4), (3, 4, 5)))
    assert read_image(tmp_path / "dcm")[0].shape == (3, 4, 5)
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM had left it at "C" (ASCII subprocess output)


# ------------------------------------------------------------------------------ ours by kind and content, not names



def _session():
    import numpy as np

    from napari_sparseseg.core.session.state import Session

    image = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[4, 1:3, 1:3], scribbles[4, 5:7, 5:7] = 1, 2
    return Session(image, scribbles, ["bg", "fg"])


def _user_folder_as(name):
    def setup(f):
        (f / name).unlink() if (f / name).is_file() else None
        (f / name).mkdir()
        (f / name / "results.csv").write_text("the user's results")

    return setup


def _link_as(name):
    def setup(f):
        (f.parent / "user.bin").write_bytes(b"the user's own file")
        (f / name).unlink()
        (f / name).symlink_to(f.parent / "user.bin")

    return setup


def _replace_with(name, content):
    def setup(f):
        if (f / name).is_dir():
            import shutil

            shutil.rmtree(f / name)
        (f / name).write_bytes(content)

    return setup


KINDS = [
    # (what, first write of ours or None, setup, save again, message)
    ("model.json/ folder of the user's, nothing else", None,
     lambda f: (f.mkdir(), _user_folder_as("model.json")(f)), "model", "holds model.json as a folder"),
    ("model.pt as a folder", "model", _user_folder_as("model.pt"), "model", "holds model.pt as a folder"),
    ("model.pt a link to a user's file", "model", _link_as("model.pt"), "model", "holds model.pt as a symbolic link"),
    ("model.pt not a torch file", "model", _replace_with("model.pt", b"the user's data"), "model",
     "holds model.pt as a file napari-sparseseg did not write"),
    ("annotations.npz/ folder of the user's", "session", _user_folder_as("annotations.npz"), "session",
     "holds annotations.npz as a folder"),
    ("annotations.npz not a zip", "session", _replace_with("annotations.npz", b"the user's data"), "session",
     "holds annotations.npz as a file napari-sparseseg did not write"),
    ("the session's model/ is a file", "session", _replace_with("model", b"the user's data"), "session",
     "holds model as a file, where napari-sparseseg writes a folder"),
]


@pytest.mark.parametrize("what, first, setup, again, message", KINDS, ids=[k[0] for k in KINDS])
def test_a_folder_is_ours_by_kind_and_content_not_names(tmp_path, what, first, setup, again, message):
    from napari_sparseseg.io.models import save_model
    from napari_sparseseg.io.sessions import save_session

    f = tmp_path / "out"
    save = {"model": lambda: save_model(tiny_model(), f), "session": lambda: save_session(_session(), f)}
    if first is not None:
        save[first]()
    setup(f)
    before = tree_hash(tmp_path)
    with pytest.raises(OutputError, match=message):
        save[again]()
    kind = {"model": "model", "session": "session"}[again]
    with pytest.raises(OutputError, match=message):
        check_outputs({kind: f})
    assert tree_hash(tmp_path) == before  # byte-identical, nothing deleted or added


def test_a_demo_folder_is_ours_by_kind_too(tmp_path):
    from napari_sparseseg.io import check_demo_folder

    f = tmp_path / "demo"
    f.mkdir()
    (f / "model").write_text("the user's notes")
    with pytest.raises(OutputError, match="holds model as a file, where napari-sparseseg writes a folder"):
        check_demo_folder(f)
    (f / "model").unlink()
    (f / "model").mkdir()
    (f / "mask.nii.gz").write_text("not a gzip file")
    with pytest.raises(OutputError, match="holds mask.nii.gz as a file napari-sparseseg did not write"):
        check_demo_folder(f)
