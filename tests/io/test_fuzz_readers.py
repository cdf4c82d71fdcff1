"""Property-based fuzzing of the readers: a damaged header is read correctly or refused, never a crash.

Small valid NIfTI, NRRD and MHA files (written by the package's own writer) get their headers
corrupted: bytes replaced, the file truncated, a header field set to a random value (NaN, inf,
0, negative, huge, nonsense text) or a header line dropped. Whatever the damage, ``read_image``
and ``read_labels`` must either return a 3-D array on a finite, invertible grid or raise
``InputError``, and ``sparseseg predict`` on the file must exit 2 with one line on stderr.

Deterministic (``derandomize=True``, no example database) so CI is stable.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_sparseseg.cli import main
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io import Geometry, read_image, read_labels, write_labels

SHAPE = (6, 7, 8)
FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="sparseseg-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def _labels() -> np.ndarray:
    k, j, i = np.indices(SHAPE)
    return ((k + 2 * j + 3 * i) % 4).astype(np.uint8)  # no axis can be flipped unnoticed


def _valid_bytes(suffix: str) -> bytes:
    # A rotated, anisotropic grid so the direction matrix and spacing fields are all in play.
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[2.0 * c, -1.0 * s, 0, 10], [2.0 * s, 1.0 * c, 0, -20], [0, 0, 1.5, 30], [0, 0, 0, 1]])
    labels = _labels()
    path = write_labels(WORK / f"valid{suffix}", labels, Geometry(affine, SHAPE))
    return path.read_bytes()


VALID = {suffix: _valid_bytes(suffix) for suffix in (".nii", ".nii.gz", ".nrrd", ".mha")}


def _header_end(suffix: str, data: bytes) -> int:
    if suffix == ".nii":
        return 352
    if suffix == ".nrrd":
        return data.index(b"\n\n") + 2
    return data.index(b"ElementDataFile = LOCAL\n") + len("ElementDataFile = LOCAL\n")


# ------------------------------------------------------------------------------ mutations
_NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 4, 7, 255, 256, 32767, -32768, 65535, 2**31 - 1, 2**31, 10**9, 10**15]),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-30, -2.5, 1e30, 1e300]),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
_TOKEN = st.one_of(
    _NUMBERS.map(lambda v: f"{v}"),
    st.text(alphabet="0123456789-+.eE naNifI(),:\\/", max_size=12),
    st.sampled_from(["", "none", "gzip", "raw", "ascii", "hex", "bzip2", "float", "double", "short", "uint8",
                     "MET_FLOAT", "MET_DOUBLE", "MET_UCHAR", "MET_SHORT", "True", "False", "LOCAL", "LIST", "4", "2",
                     "(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "(1,0,0) (1,0,0) (0,0,1)",
                     "left-posterior-superior", "RAI", "1 0 0 1 0 0 0 0 1", "0 0 0 0 0 0 0 0 0",
                     "nan nan nan", "inf 1 1", "0 1 1", "-1 1 1", "8 7", "8 7 6 2", "100000 100000 100000"]),
)
_NIFTI_FIELDS = ["sizeof_hdr", "dim", "datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter",
                 "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                 "qoffset_z", "srow_x", "srow_y", "srow_z", "magic", "xyzt_units", "dim_info", "intent_code"]


def _set_nifti_field(header: bytearray, name: str, index: int, value) -> None:
    import nibabel as nib

    dtype, offset = nib.nifti1.header_dtype.fields[name][:2]
    base = dtype.base if dtype.shape else dtype
    count = int(np.prod(dtype.shape)) if dtype.shape else 1
    i = index % count
    if base.kind == "S":
        raw = str(value).encode()[: base.itemsize].ljust(base.itemsize, b"\0")
    else:
        try:
            with np.errstate(all="ignore"):
                raw = np.array([value]).astype(base.newbyteorder("<")).tobytes()
        except (OverflowError, ValueError):  # e.g. inf into an integer field
            raw = np.zeros(1, base.newbyteorder("<")).tobytes()
    start = offset + i * base.itemsize
    header[start : start + len(raw)] = raw


@st.composite
def damaged(draw, suffix: str) -> bytes:
    """The valid file of ``suffix`` with its header damaged one of several ways."""
    data = VALID[suffix]
    if suffix == ".nii.gz":
        data = gzip.decompress(data)
    end = _header_end(".nii" if suffix == ".nii.gz" else suffix, data)
    kind = draw(st.sampled_from(["bytes", "truncate", "field", "field", "drop"]))
    out = bytearray(data)
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 6))):
            out[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        out = out[: draw(st.integers(0, len(out) - 1))]
    elif suffix in (".nii", ".nii.gz"):
        for _ in range(draw(st.integers(1, 3))):
            _set_nifti_field(out, draw(st.sampled_from(_NIFTI_FIELDS)), draw(st.integers(0, 7)), draw(_NUMBERS))
    else:
        sep = b": " if suffix == ".nrrd" else b" = "
        lines = bytes(out[:end]).split(b"\n")
        fields = [i for i, line in enumerate(lines) if sep in line and not line.startswith(b"ElementDataFile")]
        i = draw(st.sampled_from(fields))
        if kind == "drop":
            del lines[i]
        else:
            key = lines[i].split(sep)[0]
            lines[i] = key + sep + draw(_TOKEN).encode("latin1", "replace")
        out = bytearray(b"\n".join(lines)) + out[end:]
    out = bytes(out)
    return gzip.compress(out) if suffix == ".nii.gz" else out


# ------------------------------------------------------------------------------ checks
@contextlib.contextmanager
def _stderr_captured():
    """Everything written to stderr, by Python or by C++ (ITK/GDCM write to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    buf = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stderr(buf):
                yield buf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.write(tmp.read().decode("utf-8", "replace"))


def _assert_valid(arr: np.ndarray, geom: Geometry) -> None:
    assert arr.ndim == 3 and min(arr.shape) >= 1
    assert tuple(arr.shape) == tuple(geom.shape)
    m = geom.affine
    assert np.all(np.isfinite(m)) and abs(np.linalg.det(m[:3, :3])) > 0
    assert np.all(np.asarray(geom.spacing) > 0)


def _check(path: Path) -> None:
    name = path.name
    try:
        arr, geom = read_image(path)
    except InputError as exc:
        image_error = exc
        assert name in exc.one_line()
        event("refused")
    else:
        image_error = None
        _assert_valid(arr, geom)
        event("read")
    try:
        lab, lgeom = read_labels(path, what="scribbles")
    except InputError as exc:
        assert name in exc.one_line()
    else:
        assert image_error is None
        _assert_valid(lab, lgeom)
        assert np.issubdtype(lab.dtype, np.integer) and lab.min() >= 0
    out = path.parent / "mask.nii.gz"
    with _stderr_captured() as err:
        code = main(["predict", str(path), "--model", str(path.parent / "no_model"), "-o", str(out), "--device", "cpu"])
    lines = err.getvalue().strip().splitlines()
    assert code == 2, err.getvalue()
    assert len(lines) == 1 and lines[0].startswith("sparseseg: error: "), err.getvalue()
    # A damaged file is refused by name; one that reads is refused for its voxels (by name) or
    # for the missing model.
    assert name in lines[0] or (image_error is None and "model folder not found" in lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_valid_files_read_back(suffix):
    path = WORK / f"ok{suffix}"
    path.write_bytes(VALID[suffix])
    arr, geom = read_labels(path)
    assert arr.shape == SHAPE and np.array_equal(arr, _labels())
    assert np.allclose(geom.spacing, (2.0, 1.0, 1.5), atol=1e-5)


def _fuzz(suffix: str, examples: int = 300):
    @settings(max_examples=examples, **FUZZ)
    @given(data=damaged(suffix))
    def run(data):
        path = WORK / f"fuzz{suffix}"
        path.write_bytes(data)
        _check(path)

    return run


test_fuzz_nifti = _fuzz(".nii")
test_fuzz_nifti_gz = _fuzz(".nii.gz", examples=150)
test_fuzz_nrrd = _fuzz(".nrrd")
test_fuzz_mha = _fuzz(".mha")


def test_the_mutations_really_damage_the_files():
    # The strategy is not vacuous: some examples are refused, some still read.
    from hypothesis import find

    for suffix in (".nii", ".nrrd", ".mha"):
        def refused(data, suffix=suffix):
            path = WORK / f"probe{suffix}"
            path.write_bytes(data)
            try:
                read_image(path)
            except InputError:
                return True
            return False

        find(damaged(suffix), refused, settings=settings(database=None, derandomize=True, max_examples=200))
        find(damaged(suffix), lambda d, r=refused: not r(d), settings=settings(database=None, derandomize=True, max_examples=200))

