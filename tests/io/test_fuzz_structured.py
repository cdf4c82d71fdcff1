"""Property-based fuzzing of every structured-input parser: whatever the content, a record or one line.

Each parser gets arbitrary JSON-ish values and valid documents with parts replaced or removed
(a class as a list, a corner as an object, a huge integer, a name that is a list...), written
to a file as a stranger would, and must either return typed records or raise the project's own
error for that input, with a message that is one short line: never a ``TypeError``,
``OverflowError``, ``RecursionError`` or any other traceback. The parsers: ``--boxes`` and
``--clicks`` (io/hints.py), CSV manifests (io/cohort.py), the batch summary read back
(cohort/batch.py), ``cohort.json`` (cohort/project.py), ``session.json`` (io/sessions.py),
``model.json`` (io/models.py), the hints stored with a session (core/annotations/hints.py),
``io.schema.read_json`` on raw bytes, and scheduler addresses (scheduler.py).

Deterministic (``derandomize=True``, no example database) and bounded (``max_examples``) so it
runs in seconds in CI.
"""

from __future__ import annotations

import atexit
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_sparseseg.cohort.batch import SUMMARY_JSON, SummaryError, read_summary
from napari_sparseseg.cohort.project import COHORT_FILE, Cohort
from napari_sparseseg.core.annotations.hints import checked_hint_shapes
from napari_sparseseg.core.base.config import MAX_BOXES, MAX_JSON_DEPTH
from napari_sparseseg.core.base.errors import CheckpointError, InputError, SparseSegError
from napari_sparseseg.io import Geometry
from napari_sparseseg.io.cohort import expand_inputs
from napari_sparseseg.io.hints import read_boxes, read_clicks
from napari_sparseseg.io.models import load_model, save_model
from napari_sparseseg.io.schema import read_json
from napari_sparseseg.io.sessions import read_session_info
from napari_sparseseg.scheduler import check_address

N = 60  # examples per parser: seconds each
FUZZ = dict(deadline=None, derandomize=True, database=None, max_examples=N,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="sparseseg-fuzz-structured-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

# ------------------------------------------------------------------------------ values
_KEYS = ["class", "corners_mm", "point_mm", "boxes", "clicks", "name", "status", "classes", "scans", "image",
         "reviewed", "format", "format_version", "voxels", "shape", "vertices", "point", "history", "network"]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 63, 64, 2**31, 10**300, 10**399, -(10**399), 1.5, -0.0, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["", "..", "/abs/path", "a/b", "background", "liver", "done", "queued", "x" * 300,
                     "napari-sparseseg batch summary", "napari-sparseseg cohort", "napari-sparseseg"]),
)
JSONISH = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=5)
                       | st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)), c, max_size=5),
                       max_leaves=20)


def _slots(doc, out=None):
    """Every (container, key) inside ``doc``: what a mutation can replace or delete."""
    out = [] if out is None else out
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((doc, k))
        _slots(v, out)
    return out


@st.composite
def mutated(draw, valid):
    """``valid`` with one to three parts replaced by arbitrary values, deleted, or nested deep."""
    root = {"doc": copy.deepcopy(valid)}
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(root)
        parent, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "nest", "many"]))
        if action == "delete" and parent is not root:
            del parent[key]
        elif action == "nest":
            deep = parent[key]
            for _ in range(draw(st.sampled_from([2, MAX_JSON_DEPTH, 300]))):
                deep = [deep]
            parent[key] = deep
        elif action == "many" and isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] * draw(st.sampled_from([2, 1200]))
        else:
            parent[key] = draw(JSONISH)
    return root["doc"]


def _write(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def refused_or_read(fn, *errors) -> str:
    """Call the parser: it returns, or raises one of ``errors`` with a one-line message."""
    try:
        fn()
    except SparseSegError as exc:
        assert isinstance(exc, errors), f"{type(exc).__name__}: {exc}"
        line = exc.one_line()
        assert line and "\n" not in line and len(line) < 2000, line
        assert "Traceback" not in line
        event("refused")
        return "refused"
    event("read")
    return "read"


# ------------------------------------------------------------------------------ boxes and clicks
GEOM = Geometry(np.diag([2.0, 1.0, 1.5, 1.0]), (8, 9, 10))
BOXES = {"boxes": [{"class": 1, "corners_mm": [[1, 2, 3], [4, 5, 6]]}, {"class": "liver", "corners_mm": [[0, 0, 0],
                                                                                                       [1, 1, 1]]}]}
CLICKS = [{"class": 0, "point_mm": [1, 2, 3]}, {"class": "liver", "point_mm": [4.5, 0, 1]}]


@settings(**FUZZ)
@given(st.one_of(mutated(BOXES), mutated(BOXES["boxes"]), JSONISH))
def test_boxes_files(value):
    path = _write(WORK / "boxes.json", value)
    refused_or_read(lambda: read_boxes(path, GEOM, ["background", "liver"]), InputError)


@settings(**FUZZ)
@given(st.one_of(mutated(CLICKS), mutated({"clicks": CLICKS}), JSONISH))
def test_clicks_files(value):
    path = _write(WORK / "clicks.json", value)
    refused_or_read(lambda: read_clicks(path, GEOM, ["background", "liver"]), InputError)


@settings(**FUZZ)
@given(st.one_of(mutated({"boxes": [{"class": 1, "vertices": [[0, 0, 0], [1, 1, 1]]}],
                          "clicks": [{"class": 0, "point": [1, 2, 3]}]}), JSONISH))
def test_hints_stored_with_a_session(value):
    value = json.loads(json.dumps(value))  # as read back from session.json
    refused_or_read(lambda: checked_hint_shapes(value), InputError)


# ------------------------------------------------------------------------------ CSV manifests
(WORK / "scans").mkdir()
for _name in ("a.nii.gz", "b.nrrd"):
    (WORK / "scans" / _name).write_bytes(b"")  # a scan by its name: the manifest reader does not open it
_CELLS = ["image", "scribbles", "corrections", "Image ", "weight", "", " ", ",", ",", '"', "\n", "\n", "\r\n", "a.nii.gz",
          "b.nrrd", "missing.nii.gz", "notes.txt", "\x00", "\ufeff", "../scans/a.nii.gz", '"a,b.nii.gz"']


@settings(**FUZZ)
@given(st.lists(st.sampled_from(_CELLS), max_size=30).map("".join))
def test_csv_manifests(text):
    path = WORK / "scans" / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    refused_or_read(lambda: expand_inputs([path]), InputError)


# ------------------------------------------------------------------------------ a batch's summary
ROW = {"voxels": 10, "volume_ml": 0.5, "components": 1, "mean_uncertainty": 0.1, "p95_uncertainty": 0.3}
SUMMARY = {"format": "napari-sparseseg batch summary", "format_version": 1, "model": "m", "model_id": "abc",
           "class_names": ["background", "liver"], "modality": "ct", "settings": {"workers": None},
           "counts": {"done": 1, "failed": 1},
           "scans": [{"name": "a", "status": "done", "reason": None, "seconds": 1.5, "worker": "tcp://w:1",
                      "classes": {"liver": ROW}, "fine_tuned": False, "steps": 0, "image": "/a.nii.gz",
                      "mask": "/o/a_mask.nii.gz", "probabilities": None, "inputs_id": "i", "model_id": "abc",
                      "settings_id": "s", "review_rank": 1, "finished": "2026-01-01T00:00:00"},
                     {"name": "b", "status": "failed", "reason": "bad"}]}


def test_the_valid_summary_reads():
    (WORK / "summary").mkdir(exist_ok=True)
    _write(WORK / "summary" / SUMMARY_JSON, SUMMARY)
    assert [s["name"] for s in read_summary(WORK / "summary")["scans"]] == ["a", "b"]


@settings(**FUZZ)
@given(st.one_of(mutated(SUMMARY), JSONISH))
def test_batch_summaries(value):
    folder = WORK / "summary"
    folder.mkdir(exist_ok=True)
    _write(folder / SUMMARY_JSON, value)
    refused_or_read(lambda: read_summary(folder), SummaryError)


# ------------------------------------------------------------------------------ cohort.json
COHORT = {"format": "napari-sparseseg cohort", "format_version": 1, "saved": "2026-01-01T00:00:00",
          "scans": [{"image": "/data/a.nii.gz", "name": "a", "reviewed": False},
                    {"image": "/data/b.nrrd", "name": "b", "reviewed": True}],
          "history": [{"refined": "2026", "steps": 3}]}


@settings(**FUZZ)
@given(st.one_of(mutated(COHORT), JSONISH))
def test_cohort_files(value):
    folder = WORK / "cohort"
    folder.mkdir(exist_ok=True)
    _write(folder / COHORT_FILE, value)
    refused_or_read(lambda: Cohort.open(folder), InputError)


# ------------------------------------------------------------------------------ session.json and model.json
SESSION = {"format_version": 1, "package": "napari-sparseseg", "package_version": "0", "image_path": "/a.nii.gz",
           "image_stored": False, "shape": [4, 5, 6], "spacing": [1.0, 1.0, 2.0], "geometry": None,
           "class_names": ["background", "liver"], "colors": [None, "#ff0000"], "has_model": False,
           "history": [{"round": 1}], "settings": {"time_budget": 10}, "hints": {"boxes": [], "clicks": []}}


@settings(**FUZZ)
@given(st.one_of(mutated(SESSION), JSONISH))
def test_session_files(value):
    folder = WORK / "session"
    folder.mkdir(exist_ok=True)
    _write(folder / "session.json", value)
    refused_or_read(lambda: read_session_info(folder), CheckpointError)


@pytest.fixture(scope="module")
def model_folder():
    from tests.conftest import tiny_model

    folder = WORK / "model"
    save_model(tiny_model(), folder)
    return folder


def test_model_files(model_folder):
    valid = json.loads((model_folder / "model.json").read_text())
    target = WORK / "forged_model"
    shutil.copytree(model_folder, target)

    @settings(**FUZZ)
    @given(st.one_of(mutated(valid), JSONISH))
    def check(value):
        _write(target / "model.json", value)
        refused_or_read(lambda: load_model(target), CheckpointError)

    check()


# ------------------------------------------------------------------------------ raw bytes
_RAW = st.one_of(st.binary(max_size=40), st.sampled_from([b"[" * 5000 + b"]" * 5000, b"{\"a\":" * 3000, b"1" * 5000,
                                                          b"\xef\xbb\xbf[]", b"\xff\xfe[", b"[1e999]", b"NaN", b""]))


@settings(**FUZZ)
@given(_RAW)
def test_raw_bytes_as_json(data):
    path = WORK / "raw.json"
    path.write_bytes(data)
    refused_or_read(lambda: read_json(path, "boxes file"), InputError)


# ------------------------------------------------------------------------------ scheduler addresses
_ADDRESS = st.builds(
    lambda scheme, host, port: scheme + host + port,
    st.sampled_from(["", "tcp://", "tls://", "TCP://", "http://", "https://", "ucx://", "inproc://", "ws://", "tcp:/",
                     "://", "tcp://tcp://"]),
    st.one_of(st.sampled_from(["localhost", "10.0.0.5", "[::1]", "::1", "[fe80::1%eth0]", "[::g]", "[::1", "a..b",
                               "-a", "h_x.example.com", "999.1.1.1", "", "user@host", "h/p", "x" * 300, "é"]),
              st.text(max_size=12)),
    st.one_of(st.sampled_from([":8786", ":0", ":65535", ":65536", ":", "", ":-1", ":８７", ":8786/", ":1?x=1"]),
              st.text(max_size=6)),
)


@settings(**{**FUZZ, "max_examples": 4 * N})
@given(st.one_of(_ADDRESS, st.text(max_size=30), JSONISH))
def test_scheduler_addresses(address):
    try:
        got = check_address(address)
    except InputError as exc:
        line = exc.one_line()
        assert "\n" not in line and "tcp://HOST:PORT" in line, line  # says what is accepted
        event("refused")
        return
    event("accepted")
    assert got.startswith(("tcp://", "tls://")) and check_address(got) == got


# ------------------------------------------------------------------------------ bounded work
def test_a_hundred_thousand_boxes_are_refused_at_once():
    path = _write(WORK / "many.json", [{"class": 1, "corners_mm": [[0, 0, 0], [1, 1, 1]]}] * 100_000)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=f"boxes must be a list of at most {MAX_BOXES} boxes, got a list of 100000"):
        read_boxes(path, GEOM)
    assert time.perf_counter() - t0 < 10


def test_nesting_a_million_deep_is_refused_in_linear_time():
    path = WORK / "deep.json"
    path.write_text("[" * 1_000_000 + "]" * 1_000_000)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="deeper than"):
        read_json(path, "boxes file")
    assert time.perf_counter() - t0 < 10
