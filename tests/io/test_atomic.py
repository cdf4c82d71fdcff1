"""io/atomic.py: a file, a header + data pair or a folder appears complete or not at all.

Crashes are injected at every step (an OSError such as a full disk, or a KeyboardInterrupt);
afterwards the target holds the complete old or the complete new content, and no temporary
file is left behind.
"""

import errno
import os
import stat
from pathlib import Path

import pytest

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io import atomic
from napari_sparseseg.io.atomic import (
    TMP_MARK,
    atomic_file,
    atomic_output,
    data_file_of,
    recover_folder,
    replace_folder,
)


def tree(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (folders map to None)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = None
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = Path(p).read_bytes()
    return out


def no_temp(folder: Path) -> bool:
    return not any(TMP_MARK in name for name in tree(folder))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class Boom(Exception):
    pass


def fail_on_call(monkeypatch, target, name, n, exc):
    """Make ``target.name`` raise ``exc`` on its n-th call (1-based); earlier calls run normally."""
    real = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(target, name, wrapper)
    return calls


# ---------------------------------------------------------------- atomic_file
def test_atomic_file_writes_and_keeps_mode(tmp_path):
    p = tmp_path / "a.json"
    atomic_file(p, lambda f: f.write("new"), mode="w")
    assert p.read_text() == "new"
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0o600
    os.chmod(p, 0o640)
    atomic_file(p, lambda f: f.write(b"newer"))
    assert p.read_bytes() == b"newer" and stat.S_IMODE(p.stat().st_mode) == 0o640
    assert no_temp(tmp_path)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(), Boom()])
def test_atomic_file_failure_in_the_writer_keeps_the_old_file(tmp_path, exc):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")

    def write(f):
        f.write(b"half")
        raise exc

    with pytest.raises(OutputError if isinstance(exc, OSError) else type(exc)):
        atomic_file(p, write)
    assert p.read_bytes() == b"old" and no_temp(tmp_path)


def test_atomic_file_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    fail_on_call(monkeypatch, atomic.os, "replace", 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OutputError, match="No space left on device.*previous file, if any, is unchanged"):
        atomic_file(p, lambda f: f.write(b"new"))
    assert p.read_bytes() == b"old" and no_temp(tmp_path)


def test_atomic_file_exclusive_never_replaces(tmp_path, monkeypatch):
    p = tmp_path / "a_suggestions.json"
    atomic_file(p, lambda f: f.write("new"), mode="w", exclusive=True)
    assert p.read_text() == "new"
    with pytest.raises(OutputError, match="exists and was not named to be replaced"):
        atomic_file(p, lambda f: f.write("newer"), mode="w", exclusive=True)
    assert p.read_text() == "new" and no_temp(tmp_path)
    # A file system without hard links: checked, then renamed.
    monkeypatch.setattr(atomic.os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    with pytest.raises(OutputError, match="exists and was not named to be replaced"):
        atomic_file(p, lambda f: f.write("newer"), mode="w", exclusive=True)
    atomic_file(tmp_path / "b.json", lambda f: f.write("b"), mode="w", exclusive=True)
    assert p.read_text() == "new" and (tmp_path / "b.json").read_text() == "b" and no_temp(tmp_path)


def test_atomic_file_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="choose a writable folder"):
        atomic_file(tmp_path / "nope" / "a.bin", lambda f: f.write(b"x"))


# ---------------------------------------------------------------- atomic_output
def _pair_writer(content: bytes, data_suffix: str = ".zraw"):
    """A writer like SimpleITK's for .mhd: a header naming a data file next to it."""

    def write(tmp: Path):
        stem = tmp.name[: -len(tmp.suffix)]
        (tmp.parent / (stem + data_suffix)).write_bytes(content)
        sep = "=" if tmp.suffix == ".mhd" else ":"
        key = "ElementDataFile" if tmp.suffix == ".mhd" else "data file"
        tmp.write_text(f"NDims {sep} 3\n{key} {sep} {stem + data_suffix}\n")

    return write


def test_atomic_output_pair_is_renamed_and_repointed(tmp_path):
    out = tmp_path / "mask.mhd"
    atomic_output(out, _pair_writer(b"v1"))
    assert data_file_of(out) == tmp_path / "mask.zraw" and (tmp_path / "mask.zraw").read_bytes() == b"v1"
    nh = tmp_path / "probs.nhdr"
    atomic_output(nh, _pair_writer(b"p", ".raw.gz"))
    assert data_file_of(nh) == tmp_path / "probs.raw.gz"  # the whole data suffix, not ".gz"
    assert sorted(tree(tmp_path)) == ["mask.mhd", "mask.zraw", "probs.nhdr", "probs.raw.gz"]


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("step", [1, 2], ids=["data rename", "header rename"])
def test_atomic_output_pair_crash_at_each_rename_keeps_the_old_pair(tmp_path, monkeypatch, exc, step):
    out = tmp_path / "mask.mhd"
    atomic_output(out, _pair_writer(b"old data"))
    before = tree(tmp_path)
    fail_on_call(monkeypatch, atomic.os, "replace", step, exc)
    with pytest.raises(OutputError if isinstance(exc, OSError) else KeyboardInterrupt):
        atomic_output(out, _pair_writer(b"new data"))
    assert tree(tmp_path) == before  # old header still points at the old data, nothing left over


def test_atomic_output_writer_failure_leaves_nothing(tmp_path):
    out = tmp_path / "m.nii.gz"
    out.write_bytes(b"old")

    def write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        atomic_output(out, write)
    assert tree(tmp_path) == {"m.nii.gz": b"old"}


def test_atomic_output_real_mhd_and_nhdr_round_trip(tmp_path):
    import numpy as np

    from napari_sparseseg.io import Geometry, read_labels, write_labels

    lab = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    g = Geometry(np.diag([2.0, 1.0, 3.0, 1.0]), lab.shape)
    for name, data in (("m.mhd", "m.zraw"), ("m.nhdr", "m.raw.gz")):
        write_labels(tmp_path / name, lab, g)
        write_labels(tmp_path / name, lab + 1, g)  # replaced in place
        assert (tmp_path / data).is_file()
        assert np.array_equal(read_labels(tmp_path / name)[0], lab + 1)
    assert no_temp(tmp_path)


# ---------------------------------------------------------------- replace_folder
def _build(content: bytes):
    def build(tmp: Path):
        (tmp / "model.json").write_bytes(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.pt").write_bytes(content * 2)

    return build


def test_replace_folder_new_and_replaced(tmp_path):
    f = tmp_path / "model"
    assert replace_folder(f, _build(b"a")) == f
    assert stat.S_IMODE(f.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's 0o700
    (f / "old-only.txt").write_bytes(b"x")
    replace_folder(f, _build(b"b"))
    assert tree(f) == {"model.json": b"b", "sub": None, os.path.join("sub", "w.pt"): b"bb"}
    assert no_temp(tmp_path)


def test_replace_folder_uses_the_atomic_exchange_on_linux(tmp_path, monkeypatch):
    if not atomic._exchange(*(lambda a, b: (a.mkdir() or a, b.mkdir() or b))(tmp_path / "x", tmp_path / "y")):
        pytest.skip("this file system cannot exchange two paths")
    calls = fail_on_call(monkeypatch, atomic.os, "replace", 99, OSError())  # count os.replace calls
    f = tmp_path / "model"
    f.mkdir()
    replace_folder(f, _build(b"a"))
    assert calls["n"] == 0 and (f / "model.json").read_bytes() == b"a"  # swapped, never moved aside


CRASHES = {
    "build fails": ("build", OSError(errno.ENOSPC, "No space left on device")),
    "build interrupted": ("build", KeyboardInterrupt()),
    "re-check refuses": ("check", OutputError("a new file appeared")),
    "exchange fails": ("_exchange", OSError(errno.EIO, "I/O error")),
    "exchange interrupted": ("_exchange", KeyboardInterrupt()),
}


@pytest.mark.parametrize("where", CRASHES, ids=list(CRASHES))
def test_replace_folder_crash_before_the_swap_keeps_the_old_folder(tmp_path, monkeypatch, where):
    f = tmp_path / "model"
    replace_folder(f, _build(b"old"))
    before = tree(tmp_path)
    step, exc = CRASHES[where]
    build, check = _build(b"new"), None
    if step == "build":
        def build(tmp):
            (tmp / "model.json").write_bytes(b"half")
            raise exc
    elif step == "check":
        def check(folder):
            raise exc
    else:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: (_ for _ in ()).throw(exc))
    with pytest.raises((OutputError, KeyboardInterrupt)):
        replace_folder(f, build, check=check)
    assert tree(tmp_path) == before


def test_replace_folder_interrupted_after_the_swap_leaves_the_new_folder(tmp_path, monkeypatch):
    f = tmp_path / "model"
    replace_folder(f, _build(b"old"))
    fail_on_call(monkeypatch, atomic.shutil, "rmtree", 1, KeyboardInterrupt())  # removing the old one
    with pytest.raises(KeyboardInterrupt):
        replace_folder(f, _build(b"new"))
    assert (f / "model.json").read_bytes() == b"new" and no_temp(tmp_path)


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "I/O error"), KeyboardInterrupt()])
@pytest.mark.parametrize("step", [1, 2], ids=["move old aside", "move new in"])
def test_fallback_without_exchange_rolls_back_at_each_rename(tmp_path, monkeypatch, exc, step):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    f = tmp_path / "model"
    replace_folder(f, _build(b"old"))
    before = tree(tmp_path)
    fail_on_call(monkeypatch, atomic.os, "replace", step, exc)
    with pytest.raises((OutputError, KeyboardInterrupt)):
        replace_folder(f, _build(b"new"))
    assert tree(tmp_path) == before


def test_fallback_success_and_recover_after_a_hard_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    f = tmp_path / "model"
    replace_folder(f, _build(b"old"))
    replace_folder(f, _build(b"new"))
    assert (f / "model.json").read_bytes() == b"new" and no_temp(tmp_path)
    # A hard crash (power loss) between the two renames: the old folder is only moved aside.
    aside = atomic._tmp_name(f, ".old")
    os.replace(f, aside)
    assert not f.exists()
    assert recover_folder(f) is True
    assert (f / "model.json").read_bytes() == b"new" and no_temp(tmp_path)
    assert recover_folder(f) is False  # nothing to do when the folder is there


def test_replace_folder_refuses_a_file_and_a_missing_parent(tmp_path):
    (tmp_path / "model").write_bytes(b"a file")
    with pytest.raises(OutputError, match="a file exists where the folder should go"):
        replace_folder(tmp_path / "model", _build(b"new"))
    assert (tmp_path / "model").read_bytes() == b"a file"
    with pytest.raises(OutputError, match="does not exist"):
        replace_folder(tmp_path / "no" / "model", _build(b"new"))
    assert sorted(tree(tmp_path)) == ["model"]


def test_replace_folder_follows_a_link_to_a_folder(tmp_path):
    real = tmp_path / "real"
    replace_folder(real, _build(b"old"))
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert replace_folder(link, _build(b"new")) == real
    assert link.is_symlink() and (real / "model.json").read_bytes() == b"new" and no_temp(tmp_path)
