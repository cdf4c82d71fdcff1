"""Issue 26: every structured input a stranger can hand us is one line and exit 2, and touches nothing.

The exact cases of the issue, each of which printed a Python traceback (or hung) before, run as
``sparseseg`` in-process in a fresh copy of a tiny case (a 24^3 NIfTI scan, its strokes, a small
model folder, a sentinel folder with a file in it); the whole tree is hashed before and after:
every file, inputs and sentinel, byte-identical, nothing added (a batch's ``--out-dir`` made for
the run is gone again):

* ``--boxes``/``--clicks`` JSON of the wrong shape: a class as a list or null, a corner or a
  click point as an object, an integer too large for a float, arrays nested thousands deep,
  100,000 boxes (refused at once, not minutes of work);
* ``sparseseg batch`` over an earlier ``sparseseg_summary.json`` that is not what we wrote
  (scans as strings, a record without a name, classes not a mapping, a name that is a list; no
  format tag, even with ``--overwrite``), a CSV manifest with a blank image cell;
* ``--scheduler`` with garbage, ``http://``, ``ucx://``, ``inproc://``, malformed IPv6, nothing
  listening, and a server that accepts the connection and never speaks (bounded by
  ``--connect-timeout``);
* ``cohort.json`` that is not ours or is damaged (the Cohort widget's ``Cohort.open``).

The parsers themselves are fuzzed in ``tests/io/test_fuzz_structured.py``.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.cohort.batch import SUMMARY_JSON, plan_batch
from napari_sparseseg.cohort.project import COHORT_FILE, Cohort
from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io import Geometry, write_labels
from napari_sparseseg.io.cohort import expand_inputs
from napari_sparseseg.io.models import save_model
from tests.conftest import tree_hash

SEG = ["segment", "image.nii.gz", "scribbles.nii.gz", "-o", "out.nii.gz", "--max-steps", "1", "--device", "cpu", "-q"]
BATCH = ["batch", "--model", "model", "--out-dir", "out", "image.nii.gz", "--device", "cpu", "-q"]
SUMMARY_TAG = {"format": "napari-sparseseg batch summary", "format_version": 1}
COHORT_TAG = {"format": "napari-sparseseg cohort", "format_version": 1}




@pytest.fixture(scope="module")
def case(tmp_path_factory):
    import nibabel as nib

    from tests.conftest import make_phantom, tiny_model

    d = tmp_path_factory.mktemp("structured")
    image, _ = make_phantom(shape=(24, 24, 24))
    g = Geometry(np.eye(4), image.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0)), g.nifti_affine()), str(d / "image.nii.gz"))
    s = np.zeros(image.shape, np.uint8)
    s[12, 2:6, 2:6], s[12, 12:18, 12:18] = 1, 2
    write_labels(d / "scribbles.nii.gz", s, g)
    save_model(tiny_model(), d / "model")
    return d


@pytest.fixture
def ws(case, tmp_path, monkeypatch):
    w = tmp_path / "ws"
    shutil.copytree(case, w)
    (w / "keep").mkdir()
    (w / "keep" / "notes.txt").write_text("the user's notes")
    monkeypatch.chdir(w)
    return w


def refused(ws, capsys, argv, message, seconds=60.0):
    """Exit 2, one line ``sparseseg: error: ...`` holding ``message``, within ``seconds``; the tree unchanged."""
    before = tree_hash(ws)
    t0 = time.monotonic()
    code = main([str(a) for a in argv])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("sparseseg: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err
    assert took < seconds, f"{took:.1f} s: {err}"
    assert tree_hash(ws) == before
    return lines[0]


def _json(name, value):
    def setup(w):
        (w / name).write_text(value if isinstance(value, str) else json.dumps(value))

    return setup


def _summary(value):
    def setup(w):
        (w / "out").mkdir()
        (w / "out" / SUMMARY_JSON).write_text(value if isinstance(value, str) else json.dumps(value))

    return setup


BOX = {"class": 1, "corners_mm": [[2, 2, 2], [8, 8, 8]]}
CASES = [
    # -- --boxes / --clicks
    ("box class a list", _json("b.json", [{**BOX, "class": [1]}]), [*SEG, "--boxes", "b.json"],
     "b.json: in the boxes file, field boxes[0].class must be a class number 1..63 (1 = the first structure) or a "
     "class name, got [1]"),
    ("box class null", _json("b.json", {"boxes": [{**BOX, "class": None}]}), [*SEG, "--boxes", "b.json"],
     "field boxes[0].class must be a class number 1..63 (1 = the first structure) or a class name, got null"),
    ("box corner an object", _json("b.json", [{**BOX, "corners_mm": [{"x": 1, "y": 2, "z": 3}, [8, 8, 8]]}]),
     [*SEG, "--boxes", "b.json"], "field boxes[0].corners_mm[0] must be a point [x, y, z] of three numbers (world mm, "
                                  "RAS), got an object (3 keys"),
    ("click point an object", _json("c.json", [{"class": 0, "point_mm": {"x": 1}}]), [*SEG, "--clicks", "c.json"],
     "c.json: in the clicks file, field clicks[0].point_mm must be a point [x, y, z]"),
    ("integer too large for a float", _json("b.json", '[{"class": 1, "corners_mm": [[1' + "0" * 309 + ', 2, 2], [8, 8, 8]]}]'),
     [*SEG, "--boxes", "b.json"], "field boxes[0].corners_mm[0][0] must be a finite number of mm (at most 1e+07 in size), "
                                  "got a whole number of about 309 digits"),
    ("integer of thousands of digits", _json("b.json", '[{"class": 1, "corners_mm": [[' + "9" * 5000 + ', 2, 2], [8, 8, 8]]}]'),
     [*SEG, "--boxes", "b.json"], "b.json: the boxes file holds a number of 5000 digits (at most 400)"),
    ("arrays nested thousands deep", _json("b.json", "[" * 5000 + "]" * 5000), [*SEG, "--boxes", "b.json"],
     "b.json: the boxes file nests lists or objects deeper than 64 levels"),
    ("100,000 boxes", _json("b.json", [BOX] * 100_000), [*SEG, "--boxes", "b.json"],
     "b.json: in the boxes file, field boxes must be a list of at most 1000 boxes, got a list of 100000 items"),
    ("boxes not JSON", _json("b.json", "{'class': 1}"), [*SEG, "--boxes", "b.json"], "b.json: the boxes file is not valid JSON"),
    ("click class out of range", _json("c.json", [{"class": 64, "point_mm": [1, 2, 3]}]), [*SEG, "--clicks", "c.json"],
     "field clicks[0].class must be a class number 0..63 (0 = background, 1 = the first structure) or a class name, got 64"),
    # -- an earlier batch summary that is not what we wrote
    ("summary: scans as strings", _summary({**SUMMARY_TAG, "scans": ["image", "other"]}), BATCH,
     "out/sparseseg_summary.json: this batch summary is damaged (field scans[0] must be a scan record {name, status, "
     "...}, got 'image'), so it is not trusted and nothing was changed; choose a new --out-dir to start fresh, or pass "
     "--overwrite"),
    ("summary: a record without a name", _summary({**SUMMARY_TAG, "scans": [{"status": "done"}]}), BATCH,
     "field scans[0].name is missing; it must be a scan name (a plain part of a file name)"),
    ("summary: classes not a mapping", _summary({**SUMMARY_TAG, "scans": [{"name": "image", "status": "done",
                                                                           "classes": [1, 2]}]}), BATCH,
     "field scans[0].classes must be an object of at most 64 classes, class name -> row or null, got [1, 2]"),
    ("summary: a name that is a list", _summary({**SUMMARY_TAG, "scans": [{"name": ["image"], "status": "done"}]}), BATCH,
     "field scans[0].name must be a scan name (a plain part of a file name), got ['image']"),
    ("summary: a name that is a path", _summary({**SUMMARY_TAG, "scans": [{"name": "../evil", "status": "done"}]}), BATCH,
     "field scans[0].name must be a scan name (a plain part of a file name) (the scan name '../evil' is not a plain name"),
    ("summary: a status of our own making", _summary({**SUMMARY_TAG, "scans": [{"name": "image", "status": "great"}]}),
     BATCH, 'field scans[0].status must be one of "done", "skipped", "failed", "queued", "interrupted", got \'great\''),
    ("summary: not ours", _summary({"scans": []}), BATCH,
     "out/sparseseg_summary.json: this is not a batch summary napari-sparseseg wrote (no \"format\": \"napari-sparseseg "
     "batch summary\"), so it is not trusted and nothing was changed; choose a new --out-dir to start fresh"),
    ("summary: not ours, with --overwrite", _summary([1, 2, 3]), [*BATCH, "--overwrite"],
     "this is not a batch summary napari-sparseseg wrote"),
    ("summary: nested thousands deep", _summary('{"scans": ' + "[" * 5000 + "]" * 5000 + "}"), [*BATCH, "--overwrite"],
     "this is not a batch summary napari-sparseseg wrote (the batch summary nests lists or objects deeper than 64 levels)"),
    ("summary: another format version", _summary({**SUMMARY_TAG, "format_version": 7, "scans": []}), BATCH,
     "this batch summary has format_version 7; this version of napari-sparseseg reads 1 only"),
    # -- CSV manifests
    ("manifest: a blank image cell", _json("cohort.csv", "image,scribbles\n,scribbles.nii.gz\n"),
     ["batch", "--model", "model", "--out-dir", "out", "cohort.csv", "-q"],
     "cohort.csv: row 2: column image must be the path of a scan file or DICOM series folder (not blank), got ''"),
    ("manifest: a row longer than the header", _json("cohort.csv", "image\nimage.nii.gz,scribbles.nii.gz\n"),
     ["batch", "--model", "model", "--out-dir", "out", "cohort.csv", "-q"],
     "cohort.csv: row 2 has 2 cells but the header 1 columns"),
    ("manifest: a column twice", _json("cohort.csv", "image,image\nimage.nii.gz,image.nii.gz\n"),
     ["train", "cohort.csv", "--model-out", "m2", "-q"], "cohort.csv: the column(s) image appear more than once"),
    # -- --scheduler: the syntax, before any work
    ("scheduler: garbage", None, [*BATCH, "--scheduler", "garbage"],
     "garbage: not a Dask scheduler address: it gives no port (the scheduler's is 8786 unless it was started with "
     "another); give tcp://HOST:PORT or tls://HOST:PORT (or HOST:PORT, meaning tcp://)"),
    ("scheduler: http://", None, [*BATCH, "--scheduler", "http://127.0.0.1:8787"],
     "http://127.0.0.1:8787: not a Dask scheduler address: the protocol 'http://' is not accepted (that is a web address "
     "(the dashboard's?), not the scheduler's)"),
    ("scheduler: ucx://", None, [*BATCH, "--scheduler", "ucx://127.0.0.1:8786"], "the protocol 'ucx://' is not accepted"),
    ("scheduler: in-process", None, [*BATCH, "--scheduler", "inproc://127.0.0.1/1234/1"],
     "the protocol 'inproc://' is not accepted (an in-process scheduler cannot be reached from another process)"),
    ("scheduler: IPv6 without brackets", None, [*BATCH, "--scheduler", "tcp://::1:8786"],
     "tcp://::1:8786: not a Dask scheduler address: an IPv6 address goes in brackets, e.g. tcp://[::1]:8786"),
    ("scheduler: IPv6 bracket unclosed", None, [*BATCH, "--scheduler", "tcp://[::1:8786"],
     "an IPv6 address in brackets lacks its ']'"),
    ("scheduler: not an IPv6 address", None, [*BATCH, "--scheduler", "[fe80::zz]:8786"], "'fe80::zz' in brackets is not an IPv6"),
    ("scheduler: port out of range", None, [*BATCH, "--scheduler", "tcp://127.0.0.1:70000"],
     "the port '70000' is not a number in 1..65535"),
    ("scheduler: nothing listens", None, [*BATCH, "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "3"],
     "tcp://127.0.0.1:9: cannot reach the Dask scheduler: nothing listens on port 9 of 127.0.0.1 (connection refused)"),
]


@pytest.mark.parametrize("name, setup, argv, message", CASES, ids=[c[0] for c in CASES])
def test_structured_input_is_one_line_exit_2_and_touches_nothing(ws, capsys, name, setup, argv, message):
    if setup is not None:
        setup(ws)
    refused(ws, capsys, argv, message)


@pytest.fixture
def silent_server():
    """A TCP server that accepts every connection and never sends a byte (nor closes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    server.close()


def test_a_server_that_accepts_and_never_speaks_dask_ends_in_bounded_time(ws, capsys, silent_server):
    import distributed  # noqa: F401 - imported before the clock starts: the bound is on the connection

    line = refused(ws, capsys, [*BATCH, "--scheduler", silent_server, "--connect-timeout", "2"],
                   f"{silent_server}: a server accepted the connection but did not answer as a Dask scheduler within 2 s. "
                   "Check that the port is the scheduler's (8786 by default; not the dashboard's 8787 or another service)",
                   seconds=15)
    assert not (ws / "out").exists()  # the out-dir made for the run is removed again
    assert line.endswith("give tls:// and its certificates.")


def test_connect_is_bounded_by_its_timeout_alone(silent_server):
    """The function other commands reuse: the default timeout comes from BatchConfig.connect_timeout."""
    import distributed  # noqa: F401

    from napari_sparseseg.scheduler import connect

    t0 = time.monotonic()
    with pytest.raises(InputError, match="did not answer as a Dask scheduler within 1.5 s") as info:
        connect(silent_server, timeout=1.5)
    assert time.monotonic() - t0 < 1.5 + 3
    assert info.value.path == silent_server
    assert BatchConfig().connect_timeout == 10.0


def test_a_damaged_summary_of_ours_is_started_over_with_overwrite(case, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / SUMMARY_JSON).write_text(json.dumps({**SUMMARY_TAG, "scans": [{"name": ["x"], "status": "done"}]}))
    plan = plan_batch(expand_inputs([case / "image.nii.gz"]), case / "model", out, BatchConfig(overwrite=True))
    assert plan.others == [] and len(plan.to_run) == 1


# ------------------------------------------------------------------------------ cohort.json
def _cohort(tmp_path, case, change):
    folder = tmp_path / "cohort"
    Cohort.create(folder, case / "model")
    data = json.loads((folder / COHORT_FILE).read_text())
    data = change(data)
    (folder / COHORT_FILE).write_text(data if isinstance(data, str) else json.dumps(data))
    return folder


COHORT_CASES = [
    ("scans as strings", lambda d: {**d, "scans": ["a.nii.gz"]},
     "the cohort file is damaged (field scans[0] must be a scan {image, name, reviewed}, got 'a.nii.gz'), so it is not "
     "trusted and nothing was changed; create a new cohort in a new or empty folder"),
    ("a scan without a name", lambda d: {**d, "scans": [{"image": "/a.nii.gz"}]},
     "field scans[0].name is missing; it must be a plain name (text) for the scan's outputs"),
    ("a name that is a list", lambda d: {**d, "scans": [{"image": "/a.nii.gz", "name": ["a"]}]},
     "field scans[0].name must be a plain name (text) for the scan's outputs, got ['a']"),
    ("reviewed not a flag", lambda d: {**d, "scans": [{"image": "/a.nii.gz", "name": "a", "reviewed": "yes"}]},
     "field scans[0].reviewed must be true or false, got 'yes'"),
    ("history a number", lambda d: {**d, "history": 3}, "field history must be a list of refine records, got 3"),
    ("not ours", lambda d: {"scans": []}, "not a napari-sparseseg cohort file (no \"format\": \"napari-sparseseg cohort\")"),
    ("another format version", lambda d: {**d, "format_version": 2}, "a cohort file of format_version 2"),
    ("nested thousands deep", lambda d: "[" * 5000 + "]" * 5000,
     "not a napari-sparseseg cohort file (the cohort file nests lists or objects deeper than 64 levels)"),
    ("not UTF-8", lambda d: "\udcff", None),
]


@pytest.mark.parametrize("name, change, message", COHORT_CASES, ids=[c[0] for c in COHORT_CASES])
def test_a_cohort_file_not_ours_or_damaged_is_one_line_and_touches_nothing(case, tmp_path, name, change, message):
    if message is None:  # bytes that are not UTF-8
        folder = _cohort(tmp_path, case, lambda d: d)
        (folder / COHORT_FILE).write_bytes(b"\xff\xfe{")
        message = "not a napari-sparseseg cohort file (the cohort file is not UTF-8 text (byte 0)"
    else:
        folder = _cohort(tmp_path, case, change)
    before = tree_hash(folder)
    with pytest.raises(InputError) as info:
        Cohort.open(folder)
    line = info.value.one_line()
    assert line.startswith(f"{folder / COHORT_FILE}: ") and message in line and "\n" not in line, line
    assert tree_hash(folder) == before
