"""A full disk while a volume is written: the old file (or .mhd/.nhdr pair) stays byte-identical, nothing is left.

SimpleITK's writers may fail without raising on a full disk: they leave a 0-byte file, a
header without its data, or a header whose data file is empty, and return normally. Before
the fix the empty temporary file then replaced the user's old mask. Every write now reads its
result back (:func:`napari_sparseseg.io.volumes.verify_volume`) before it renames anything.

Two ways to fill the disk: a real 64 KiB tmpfs (needs root and a ``mount`` that works; the
tests skip cleanly otherwise) and, always, writers monkeypatched to leave exactly what a full
disk leaves.
"""

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io import Geometry, read_labels, volumes, write_labels, write_probabilities
from napari_sparseseg.io.atomic import TMP_MARK, payload_bytes
from tests.conftest import tiny_model

FORMATS = [".nrrd", ".mha", ".mhd", ".nhdr", ".nii.gz", ".nii"]
SITK_FORMATS = [".nrrd", ".mha", ".mhd", ".nhdr"]
FILLER = "filler"


def snapshot(folder: Path) -> dict:
    """Every file in ``folder`` (but the filler) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != FILLER}


def old_and_new():
    """A small old mask and a larger, less compressible new one."""
    old = np.zeros((8, 8, 8), np.uint8)
    old[2:5] = 1
    new = np.zeros((40, 40, 40), np.uint8)
    new[5:12] = np.random.default_rng(0).integers(0, 3, new[5:12].shape)
    return old, new


def write_old(folder: Path, suffix: str) -> Path:
    old, _ = old_and_new()
    path = folder / f"mask{suffix}"
    write_labels(path, old, Geometry(np.eye(4), old.shape))
    (folder / "notes.txt").write_text("the user's notes")  # a sentinel
    return path


# ------------------------------------------------------------------------------ a real full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=20)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder``, then free ``leave`` bytes."""
    fd = os.open(folder / FILLER, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(folder / FILLER, max(0, os.path.getsize(folder / FILLER) - leave))


CASES = [(s, 0) for s in FORMATS] + [(".mhd", 4096), (".nhdr", 4096)]


@pytest.mark.parametrize("suffix, leave", CASES, ids=[f"{s}-{'full' if not n else 'one page left'}" for s, n in CASES])
def test_a_real_full_disk_keeps_the_old_mask(small_disk, suffix, leave):
    if leave and os.sysconf("SC_PAGE_SIZE") != 4096:
        pytest.skip("the one-page case is sized for 4 KiB pages")
    path = write_old(small_disk, suffix)
    before = snapshot(small_disk)
    fill(small_disk, leave)  # one page: a pair's data file fits, its header does not (it was left empty)
    _, new = old_and_new()
    with pytest.raises(OutputError, match="Free some space"):
        write_labels(path, new, Geometry(np.eye(4), new.shape))
    assert snapshot(small_disk) == before  # byte-identical, no temporary file left
    os.unlink(small_disk / FILLER)
    assert read_labels(path)[0].shape == (8, 8, 8)


# ------------------------------------------------------------------------------ the same, simulated
def _damage(kind: str):
    """A SimpleITK WriteImage that writes, then leaves what a full disk leaves, and returns normally."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def write(img, fname, *a, **k):
        real(img, fname, *a, **k)
        head = Path(fname)
        data = volumes.data_file_of(head) if head.suffix in (".mhd", ".nhdr") else head
        if kind == "empty file":
            head.write_bytes(b"")
        elif kind == "empty data":
            data.write_bytes(b"")
        elif kind == "truncated data":
            raw = data.read_bytes()
            data.write_bytes(raw[: len(raw) // 2])
        elif kind == "data file missing":
            if data != head:
                data.unlink()
            else:
                head.write_bytes(head.read_bytes()[:40])
        elif kind == "header cut short":
            text = head.read_bytes()
            head.write_bytes(text[: text.lower().find(b"dim") + 2])

    return write


DAMAGE = ["empty file", "empty data", "truncated data", "data file missing", "header cut short"]


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("suffix", SITK_FORMATS)
def test_a_writer_that_fails_silently_replaces_nothing(tmp_path, monkeypatch, suffix, kind):
    import SimpleITK as sitk

    path = write_old(tmp_path, suffix)
    before = snapshot(tmp_path)
    monkeypatch.setattr(sitk, "WriteImage", _damage(kind))
    _, new = old_and_new()
    with pytest.raises(OutputError, match="previous file, if any, is unchanged"):
        write_labels(path, new, Geometry(np.eye(4), new.shape))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("suffix", SITK_FORMATS + [".nii.gz"])
def test_probabilities_are_verified_too(tmp_path, monkeypatch, suffix):
    import nibabel as nib
    import SimpleITK as sitk

    path = tmp_path / f"p{suffix}"
    probs = np.zeros((3, 6, 7, 8), np.uint8)
    probs[1] = 200
    write_probabilities(path, probs, Geometry(np.eye(4), probs.shape[1:]))
    before = snapshot(tmp_path)
    monkeypatch.setattr(sitk, "WriteImage", _damage("truncated data"))
    real = nib.save

    def save(img, fname):  # nibabel's own write succeeds, then the file is cut (a silent short write)
        real(img, fname)
        raw = Path(fname).read_bytes()
        Path(fname).write_bytes(raw[: len(raw) // 2])

    monkeypatch.setattr(nib, "save", save)
    with pytest.raises(OutputError, match="did not verify"):
        write_probabilities(path, probs, Geometry(np.eye(4), probs.shape[1:]))
    assert snapshot(tmp_path) == before


def test_a_pair_whose_header_never_came_leaves_no_data_file(tmp_path, monkeypatch):
    """SimpleITK raised after writing the data file but before the header named it: the data file goes too."""
    import SimpleITK as sitk

    path = write_old(tmp_path, ".mhd")
    before = snapshot(tmp_path)

    def write(img, fname, *a, **k):
        stem = Path(fname).name[: -len(".mhd")]
        (Path(fname).parent / f"{stem}.zraw").write_bytes(b"half the data")
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: itk::ERROR: File cannot be written")

    monkeypatch.setattr(sitk, "WriteImage", write)
    _, new = old_and_new()
    with pytest.raises(OutputError, match="File cannot be written"):
        write_labels(path, new, Geometry(np.eye(4), new.shape))
    assert snapshot(tmp_path) == before
    assert not any(TMP_MARK in p.name for p in tmp_path.iterdir())


def test_every_format_verifies_when_the_write_is_good(tmp_path):
    lab = np.zeros((5, 6, 7), np.uint16)
    lab[1:3] = 700
    g = Geometry(np.diag([2.0, 1.0, 3.0, 1.0]), lab.shape)
    for suffix in FORMATS:
        for name in (f"m{suffix}", f"with space{suffix}"):
            write_labels(tmp_path / name, lab, g)
            write_labels(tmp_path / name, lab, g)  # replaced after verifying
            volumes.verify_volume(tmp_path / name, lab.shape)
            assert np.array_equal(read_labels(tmp_path / name)[0], lab)
    with pytest.raises(OutputError, match=r"size \(7, 6, 5\) x 1, not \(5, 6, 7\) x 1"):
        volumes.verify_volume(tmp_path / "m.nrrd", (7, 6, 5))


def test_payload_bytes_reads_gzip_and_zlib_streams(tmp_path):
    import gzip
    import zlib

    raw = bytes(range(256)) * 100
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw) + gzip.compress(raw))  # two members
    (tmp_path / "a.z").write_bytes(b"HEAD" + zlib.compress(raw))
    assert payload_bytes(tmp_path / "a.gz", compressed=True) == 2 * len(raw)
    assert payload_bytes(tmp_path / "a.z", 4, compressed=True) == len(raw)
    assert payload_bytes(tmp_path / "a.z", 4) == len(zlib.compress(raw))
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:100])
    with pytest.raises(OutputError, match="ends early"):
        payload_bytes(tmp_path / "cut.gz", compressed=True)


# ------------------------------------------------------------------------------ model folders (torch)
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                          "file write failed")



def tree_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*")) if p.name != FILLER}


def test_a_real_full_disk_during_a_model_save_keeps_the_old_model(small_disk):
    from napari_sparseseg.io.models import load_model, save_model

    save_model(tiny_model(), small_disk / "model")
    (small_disk / "notes.txt").write_text("the user's notes")
    before = tree_bytes(small_disk)
    fill(small_disk)
    with pytest.raises(OutputError, match="Free some space"):
        save_model(tiny_model(), small_disk / "model")
    assert tree_bytes(small_disk) == before
    os.unlink(small_disk / FILLER)
    assert load_model(small_disk / "model").num_classes == 2


@pytest.mark.parametrize("how", ["torch raises", "file cut short"])
def test_torch_reporting_a_full_disk_is_one_line_and_keeps_the_old_model(tmp_path, monkeypatch, how):
    import torch

    from napari_sparseseg.io import models
    from napari_sparseseg.io.models import save_model

    save_model(tiny_model(), tmp_path / "model")
    before = tree_bytes(tmp_path)
    real = torch.save

    def save(obj, f, *a, **k):
        real(obj, f, *a, **k)
        if how == "torch raises":
            raise TORCH_FULL
        Path(f).write_bytes(Path(f).read_bytes()[:300])  # returned normally, but the zip is cut

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(models, "_FULL_BYTES", 2**62)  # the disk counts as full
    with pytest.raises(OutputError) as info:
        save_model(tiny_model(), tmp_path / "model")
    assert info.value.one_line() == (f"{tmp_path / 'model'}: cannot write model.pt (the disk is full); the previous files, "
                                     "if any, are unchanged. Free some space or choose a folder on another disk.")
    assert tree_bytes(tmp_path) == before
