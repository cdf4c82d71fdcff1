"""Atomic writes: a file, a multi-file format, or a whole folder appears complete or not at all.

Everything is first written under a hidden temporary name in the target's own folder (same
file system), then renamed into place:

* :func:`atomic_file` - one file, written through a file object.
* :func:`atomic_output` - a writer that needs a path (nibabel, SimpleITK); multi-file formats
  (``.mhd`` + ``.raw``/``.zraw``, ``.nhdr`` + data) move their data file first, then the
  header that points at it, so a reader never finds a header without its data.
* :func:`replace_folder` - a model or session folder built in a temporary folder and put in
  place in one rename. On Linux the old and new folders are swapped atomically
  (``renameat2(RENAME_EXCHANGE)``), so a crash at any moment leaves either the old or the new
  folder under its own name; the old one is then removed. Elsewhere the old folder is first
  moved aside under a hidden name, which :func:`recover_folder` puts back.

Temporary names start with ``.`` and contain ``.sparseseg-tmp``; nothing else is ever deleted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from napari_sparseseg.core.errors import OutputError

__all__ = ["TMP_MARK", "atomic_file", "atomic_output", "recover_folder", "replace_folder"]

TMP_MARK = ".sparseseg-tmp"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _tmp_name(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}-{uuid.uuid4().hex[:8]}{suffix}")


def atomic_file(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, then rename it into place.

    Raises:
        OutputError: the folder is missing or not writable, or the disk is full.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}-", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write in {path.parent} ({exc.strerror or exc}).", path=path) from exc
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write ({exc.strerror or exc}).", path=path) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _header_data_pair(header: Path) -> Path | None:
    """The data file a ``.mhd``/``.nhdr`` header points at (``None`` when it is inline)."""
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for ln in lines:
        key, _, value = ln.partition("=") if header.suffix.lower() == ".mhd" else ln.partition(":")
        key = key.strip().lower()
        if key in ("elementdatafile", "data file", "datafile"):
            value = value.strip()
            if value.upper() == "LOCAL" or not value:
                return None
            return header.parent / value
    return None


def _point_header_at(header: Path, data_name: str) -> None:
    lines = header.read_text(errors="replace").splitlines()
    out = []
    for ln in lines:
        sep = "=" if header.suffix.lower() == ".mhd" else ":"
        key = ln.partition(sep)[0].strip().lower()
        if key in ("elementdatafile", "data file", "datafile"):
            ln = f"{ln.partition(sep)[0].rstrip()} {sep} {data_name}"
        out.append(ln)
    header.write_text("\n".join(out) + "\n")


def atomic_output(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` with a temporary name in ``path``'s folder, then move into place.

    The temporary name ends like ``path`` (``.nii.gz``, ``.mhd``...), so format-guessing
    writers write the right format. For a header + data pair (``.mhd``, ``.nhdr``) the data
    file is moved to ``<stem><data suffix>`` first and the header rewritten to point at it.

    Raises:
        OutputError: the write failed (nothing is left behind; an old file stays as it was).
    """
    path = Path(path)
    name = path.name
    suffix = "".join(path.suffixes[-2:]) if name.lower().endswith(".nii.gz") else path.suffix
    tmp = _tmp_name(path, suffix)
    created: list[Path] = [tmp]
    try:
        write(tmp)
        data = _header_data_pair(tmp) if suffix.lower() in (".mhd", ".nhdr") else None
        if data is not None:
            created.append(data)
            stem = name[: -len(suffix)] if suffix else name
            final_data = path.with_name(stem + "".join(data.suffixes[-1:]))
            _point_header_at(tmp, final_data.name)
            os.replace(data, final_data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write ({exc.strerror or exc}).", path=path) from exc
    finally:
        for f in created:
            if f.exists() and TMP_MARK in f.name:
                f.unlink()
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(folder: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a folder with ``build(tmp_folder)``, then put it at ``folder`` in one rename.

    The caller has already checked that an existing ``folder`` may be replaced (it is empty or
    holds only files this package writes): its contents are removed after the swap.

    Raises:
        OutputError: the parent folder is missing or not writable, or the build failed
            (``folder`` is then left exactly as it was).
    """
    folder = Path(folder)
    parent = folder.parent
    if not parent.is_dir():
        raise OutputError(f"the folder {parent} does not exist; create it first.", path=folder)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TMP_MARK}-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {parent} ({exc.strerror or exc}).", path=folder) from exc
    try:
        build(tmp)
        if folder.exists() and _exchange(tmp, folder):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
            return folder
        if folder.exists():
            aside = _tmp_name(folder, ".old")
            os.replace(folder, aside)
            os.replace(tmp, folder)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError as exc:
        raise OutputError(f"cannot write the folder ({exc.strerror or exc}).", path=folder) from exc
    finally:
        if tmp.exists() and TMP_MARK in tmp.name:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def recover_folder(folder: str | os.PathLike) -> bool:
    """Put back a folder that a crash left moved aside (the non-Linux path of :func:`replace_folder`).

    Returns:
        whether a folder was restored.
    """
    folder = Path(folder)
    if folder.exists() or not folder.parent.is_dir():
        return False
    aside = sorted(folder.parent.glob(f".{folder.name}{TMP_MARK}-*.old"), key=lambda p: p.stat().st_mtime)
    if not aside:
        return False
    os.replace(aside[-1], folder)
    return True
