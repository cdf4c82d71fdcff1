"""Atomic writes: a file, a multi-file format, or a whole folder appears complete or not at all.

Everything is first written under a hidden temporary name in the target's own folder (same
file system), flushed to disk, then renamed into place:

* :func:`atomic_file` - one file, written through a file object.
* :func:`atomic_output` - a writer that needs a path (nibabel, SimpleITK). What the writer
  left is *verified before anything is renamed*: every file it wrote exists and is not empty,
  and the caller's ``verify`` reads it back (:mod:`.volumes` reads the header and counts the
  voxel bytes, compressed ones through :func:`payload_bytes`), because a library writer may
  fail without saying so (SimpleITK on a full disk leaves a 0-byte or truncated file and
  returns normally). Multi-file formats (``.mhd`` + ``.zraw``, ``.nhdr`` + ``.raw.gz``) are
  written whole under temporary names, verified, then the data file is moved first and the
  header that points at it last. If anything fails or is interrupted before the header is in
  place, the previous data file is put back, so the old header never points at new data, and
  every temporary file of the write (found by its unique temporary prefix) is removed.
* :func:`replace_folder` - a model, session, DICOM or demo folder built in a temporary folder
  and put in place in one rename. On Linux an existing folder is swapped atomically with the
  new one (``renameat2(RENAME_EXCHANGE)``), so a crash at any moment leaves either the old or
  the new folder under its own name; the old one is then removed. Elsewhere the old folder is
  first moved aside under a hidden name and moved back if the second rename fails;
  :func:`recover_folder` puts it back after a hard crash between the two renames.

New files and folders get the usual permissions (``0o666``/``0o777`` minus the umask); a
replaced file keeps the permissions of the one it replaces. Temporary names start with ``.``
and contain :data:`TMP_MARK`; nothing else is ever deleted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import sys
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io.schema import read_json

__all__ = ["TMP_MARK", "atomic_file", "atomic_output", "check_ours", "check_written", "data_file_of", "file_identity",
           "payload_bytes", "recover_folder", "replace_folder"]

TMP_MARK = ".sparseseg-tmp"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _tmp_name(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}-{uuid.uuid4().hex[:8]}{suffix}")


def _cannot(exc: OSError, what: str = "file") -> str:
    return (f"cannot write the {what} ({exc.strerror or exc}); the previous {what}, if any, is unchanged. Free some space "
            "or choose a writable folder.")


def _fsync(path: Path) -> None:
    """Flush a file written by a library, or a rename in a folder, to the disk.

    Best effort: not every platform can open a folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _keep_mode(old: Path, new: Path) -> None:
    """Give ``new`` the permissions of the file it is about to replace."""
    try:
        mode = stat.S_IMODE(os.stat(old).st_mode)
    except OSError:
        return
    try:
        os.chmod(new, mode)
    except OSError:
        pass


def atomic_file(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb",
                exclusive: bool = False) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, then rename it into place.

    Args:
        path: the file to write.
        write: called with the open temporary file.
        mode: ``"wb"`` or ``"w"``.
        exclusive: never replace an existing ``path`` (a file the user did not name): the
            temporary file is hard-linked to ``path``, which fails if anything is there, even
            a file that appeared a moment before (checked, then renamed, where the file system
            has no hard links).

    Returns:
        ``path``.

    Raises:
        OutputError: the folder is missing or not writable, the disk is full (an existing
            ``path`` is then unchanged), or ``exclusive`` and ``path`` exists.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise OutputError(f"cannot write in {path.parent} ({exc.strerror or exc}); choose a writable folder.",
                          path=path) from exc
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _link_new(tmp, path)
        else:
            _keep_mode(path, tmp)
            os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(_cannot(exc), path=path) from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def _link_new(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a hard link fails on an existing name)."""
    exists = OutputError(f"{path.name} exists and was not named to be replaced; move it, or name it as the output "
                         "to replace it (nothing was replaced).", path=path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # no hard links on this file system
            raise exists from None
        os.replace(tmp, path)


def _header_sep(header: Path) -> str:
    return "=" if header.name.lower().endswith(".mhd") else ":"


def data_file_of(header: str | os.PathLike) -> Path | None:
    """The data file a ``.mhd``/``.nhdr`` header points at (``None`` when inline or unreadable).

    Args:
        header: a MetaImage (``.mhd``) or detached NRRD (``.nhdr``) header.

    Returns:
        The data file's path (it may not exist), or ``None``.
    """
    header = Path(header)
    try:
        with open(header, "rb") as f:
            text = f.read(65536).decode("latin-1")
    except OSError:
        return None
    sep = _header_sep(header)
    for ln in text.splitlines():
        key, found, value = ln.partition(sep)
        if not found:
            continue
        key = key.strip().lower()
        if key in ("elementdatafile", "data file", "datafile"):
            value = value.strip()
            if not value or value.upper() in ("LOCAL", "LIST") or value.upper().startswith("LIST "):
                return None
            return header.parent / value
    return None


def _point_header_at(header: Path, data_name: str) -> bool:
    """Rewrite ``header``'s data file line to ``data_name``; whether the header was written whole."""
    lines = header.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    out = []
    sep = _header_sep(header)
    for ln in lines:
        key = ln.partition(sep)[0].strip().lower()
        if key in ("elementdatafile", "data file", "datafile"):
            name = ln.partition(sep)[0].strip()
            # MetaImage: "ElementDataFile = x"; NRRD needs "data file: x" (no space before the colon)
            ln = f"{name} = {data_name}" if sep == "=" else f"{name}: {data_name}"
        out.append(ln)
    text = ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")
    with open(header, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return os.path.getsize(header) == len(text)


def _full_suffix(path: Path) -> str:
    name = path.name
    return "".join(path.suffixes[-2:]) if name.lower().endswith(".nii.gz") else path.suffix


def check_written(path: str | os.PathLike, what: str = "file", target: str | os.PathLike | None = None) -> int:
    """Check that a writer left a non-empty regular file at ``path``; return its size.

    Args:
        path: the (temporary) file just written.
        what: the file's name in the message.
        target: the path the user named (for the message), default ``path``.

    Raises:
        OutputError: the file is missing, not a regular file, or empty (a writer that failed
            without saying so, typically on a full disk).
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise OutputError(f"the {what} was not written ({exc.strerror or exc}); the previous file, if any, is "
                          "unchanged. Free some space or choose a writable folder.", path=target or path) from exc
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise OutputError(f"the {what} was written empty (is the disk full?); the previous file, if any, is unchanged. "
                          "Free some space or choose a writable folder.", path=target or path)
    return st.st_size


def payload_bytes(path: str | os.PathLike, offset: int = 0, compressed: bool = False) -> int:
    """The bytes a file holds from ``offset`` on, decompressed (zlib or gzip, several members too) if ``compressed``.

    Streams in chunks, so verifying a large file needs no memory.

    Raises:
        OutputError: the compressed stream is damaged or ends early (a truncated write).
    """
    with open(path, "rb") as f:
        f.seek(offset)
        if not compressed:
            return sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))
        total, d = 0, zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header, detected
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                while chunk:
                    total += len(d.decompress(chunk))
                    chunk = b""
                    if d.eof:  # another gzip member may follow
                        chunk = d.unused_data
                        d = zlib.decompressobj(wbits=47) if chunk else d
            total += len(d.flush())
        except zlib.error as exc:
            raise OutputError(f"the compressed data is damaged ({exc}); the write failed.", path=path) from exc
        if not d.eof:
            raise OutputError("the compressed data ends early; the write failed (is the disk full?).", path=path)
        return total


def _temp_files(tmp: Path, suffix: str) -> list[Path]:
    """Every file a writer created next to ``tmp`` (``tmp`` and its data file): they share its unique prefix."""
    prefix = tmp.name[: -len(suffix)] if suffix else tmp.name
    try:
        with os.scandir(tmp.parent) as it:
            return [tmp.parent / e.name for e in it if e.name.startswith(prefix) and TMP_MARK in e.name]
    except OSError:
        return [tmp]


def atomic_output(path: str | os.PathLike, write: Callable[[Path], None],
                  verify: Callable[[Path], None] | None = None) -> Path:
    """Call ``write(tmp_path)`` with a temporary name in ``path``'s folder, verify, then move into place.

    The temporary name ends like ``path`` (``.nii.gz``, ``.mhd``...), so format-guessing
    writers write the right format. Before anything is renamed, the written file (and the data
    file of a header) must exist and not be empty (:func:`check_written`), and ``verify(tmp)``
    reads it back; a writer that failed without raising (SimpleITK on a full disk) thus never
    replaces the old file. For a header + data pair (``.mhd``, ``.nhdr``) the data file is
    moved to ``<stem><data suffix>`` (``out.zraw``, ``out.raw.gz``) first and the header,
    rewritten to point at it, last. Should the header's rename fail or be interrupted, the
    previous data file is restored, so the old pair stays readable. Every temporary file of the
    write is removed whatever happens (a data file whose header was never written included).

    Args:
        path: the file to write.
        write: writes the file at the path it is given.
        verify: reads the written file back at the temporary path it is given (a header still
            pointing at its temporary data file); raises :class:`OutputError` if it is not
            complete.

    Returns:
        ``path``.

    Raises:
        OutputError: the write failed or its result did not verify (nothing is left behind;
            an old file stays as it was).
    """
    path = Path(path)
    suffix = _full_suffix(path)
    pair = suffix.lower() in (".mhd", ".nhdr")
    tmp = _tmp_name(path, suffix)
    created: list[Path] = [tmp]
    data = final_data = backup = None
    try:
        write(tmp)
        check_written(tmp, target=path)
        if pair:
            data = data_file_of(tmp)
            if data is None:
                raise OutputError("the header was written without its data file line (is the disk full?); the previous "
                                  "file, if any, is unchanged.", path=path)
            created.append(data)
            check_written(data, "data file", target=path)
        if verify is not None:
            verify(tmp)
        if data is not None:
            tmp_stem = tmp.name[: -len(suffix)]
            data_suffix = data.name[len(tmp_stem):] if data.name.startswith(tmp_stem) else "".join(data.suffixes[-1:])
            final_data = path.with_name(path.name[: -len(suffix)] + data_suffix)
            if not _point_header_at(tmp, final_data.name) or data_file_of(tmp) != final_data:
                raise OutputError("the header could not be pointed at its data file (is the disk full?); the previous "
                                  "file, if any, is unchanged.", path=path)
            _fsync(data)
            if os.path.lexists(final_data):
                backup = _tmp_name(final_data, ".old")
                created.append(backup)
                try:
                    os.link(final_data, backup)
                except OSError:
                    shutil.copy2(final_data, backup)
        _fsync(tmp)
        _keep_mode(path, tmp)
        if data is not None:
            os.replace(data, final_data)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        # The data file was moved but the header was not: put the previous data back.
        if data is not None and final_data is not None and not os.path.lexists(data) and os.path.lexists(tmp):
            if backup is not None and os.path.lexists(backup):
                os.replace(backup, final_data)
            elif os.path.lexists(final_data):
                os.unlink(final_data)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(_cannot(exc), path=path) from exc
        raise
    finally:
        if pair:
            created += _temp_files(tmp, suffix)
        for f in created:
            if os.path.lexists(f) and TMP_MARK in f.name:
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
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def _refuse_file(folder: Path) -> None:
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError("a file exists where the folder should go; choose another path (nothing was replaced).",
                          path=folder)


def replace_folder(folder: str | os.PathLike, build: Callable[[Path], None],
                   check: Callable[[Path], object] | None = None) -> Path:
    """Build a folder with ``build(tmp_folder)``, then put it at ``folder`` in one rename.

    The caller has already checked that an existing ``folder`` may be replaced (it is empty or
    holds only files this package writes): its contents are removed after the swap. ``check``
    (e.g. :func:`~napari_sparseseg.core.model.checkpoint.check_model_folder`) is called again right
    before the swap, so a file put there meanwhile is never deleted. A symbolic link to a
    folder is followed: the folder it points at is replaced.

    Args:
        folder: the folder to create or replace.
        build: fills the (empty) temporary folder it is given.
        check: raises if ``folder`` may no longer be replaced.

    Returns:
        ``folder`` (the link's target if ``folder`` was a link).

    Raises:
        OutputError: the parent folder is missing or not writable, a file is where the folder
            should go, or the build failed (``folder`` is then left exactly as it was).
    """
    folder = Path(folder)
    if folder.is_symlink() and folder.is_dir():
        folder = Path(os.path.realpath(folder))
    parent = folder.parent
    if not parent.is_dir():
        raise OutputError(f"the folder {parent} does not exist; create it first.", path=folder)
    _refuse_file(folder)
    tmp = _tmp_name(folder)
    try:
        os.mkdir(tmp, 0o777)
    except OSError as exc:
        raise OutputError(f"cannot write in {parent} ({exc.strerror or exc}); choose a writable folder.",
                          path=folder) from exc
    try:
        build(tmp)
        _fsync_tree(tmp)
        _refuse_file(folder)
        if check is not None:
            check(folder)
        if os.path.lexists(folder):
            if _exchange(tmp, folder):
                _fsync(parent)
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
                return folder
            aside = _tmp_name(folder, ".old")
            try:
                os.replace(folder, aside)
                os.replace(tmp, folder)
            except BaseException:  # failed or interrupted between the renames: put the old folder back
                if not os.path.lexists(folder) and os.path.lexists(aside):
                    os.replace(aside, folder)
                raise
            _fsync(parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, folder)
            _fsync(parent)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(_cannot(exc, "folder"), path=folder) from exc
    finally:
        if os.path.lexists(tmp) and TMP_MARK in tmp.name:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def recover_folder(folder: str | os.PathLike) -> bool:
    """Put back a folder that a hard crash left moved aside (the non-Linux path of :func:`replace_folder`).

    Args:
        folder: the folder that should exist.

    Returns:
        whether a folder was restored.
    """
    folder = Path(folder)
    if os.path.lexists(folder) or not folder.parent.is_dir():
        return False
    try:
        aside = sorted(folder.parent.glob(f".{folder.name}{TMP_MARK}-*.old"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return False
    aside = [p for p in aside if p.is_dir()]
    if not aside:
        return False
    os.replace(aside[-1], folder)
    return True


def check_ours(folder: str | os.PathLike, allowed: frozenset[str] | set[str], marker: str, what: str,
               remedy: str, dirs: frozenset[str] | set[str] = frozenset(),
               magic: dict[str, bytes] | None = None) -> set[str]:
    """Check that ``folder`` may be replaced as a whole: new, empty, or one of ours.

    One of ours holds only ``allowed`` names, among them ``marker``, a JSON file written by
    napari-sparseseg (its ``package`` tag), or a folder when ``marker`` names one. Names alone
    do not make a folder ours: each entry must also be of the kind napari-sparseseg writes
    there (a real folder for the names in ``dirs``, a regular file for the others; never a
    symbolic link or a special file), and a file named in ``magic`` must start with those
    bytes (a zip, a NumPy array, a gzip stream). So a ``model.json/`` or ``annotations.npz/``
    folder of the user's, or a link, is never deleted by a save. Used for model, session, demo
    and cache folders, so replacing one never deletes a file of the user's.

    Args:
        folder: the folder to be written.
        allowed: the names such a folder may hold.
        marker: the name that must be there (a tagged JSON file, or a sub-folder if in ``dirs``).
        what: the folder's name in messages ("model folder", "session folder"...).
        remedy: what the user should give instead, ending the message.
        dirs: the allowed names that are folders.
        magic: name -> the bytes such a file of ours starts with.

    Returns:
        The names the folder holds (empty when it is new or empty).

    Raises:
        OutputError: a file is there, the folder holds other files (a few are named), an entry
            of another kind or content than ours, or its marker was not written by napari-sparseseg.
    """
    folder = Path(folder)
    if not os.path.lexists(folder):
        return set()
    if not folder.is_dir():
        raise OutputError(f"a file exists where the {what} should go; choose another path.", path=folder)
    names = {p.name for p in folder.iterdir()}
    if not names:
        return names
    others = sorted(names - set(allowed))
    if others or marker not in names:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise OutputError(f"the {what} already holds other files ({shown or f'no {marker}'}); {remedy} "
                          "(nothing here is deleted).", path=folder)
    for name in sorted(names):
        try:
            mode = os.lstat(folder / name).st_mode
        except OSError as exc:
            raise OutputError(f"the {what}'s {name} cannot be examined ({exc.strerror or exc}); {remedy} (nothing here is "
                              "deleted).", path=folder) from exc
        want_dir = name in dirs
        if stat.S_ISLNK(mode):
            kind = "a symbolic link"
        elif want_dir and not stat.S_ISDIR(mode):
            kind = "a file, where napari-sparseseg writes a folder"
        elif not want_dir and not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a special file") + ", where napari-sparseseg writes a file"
        else:
            kind = None
        if kind is None and magic and name in magic:
            try:
                with open(folder / name, "rb") as f:
                    head = f.read(len(magic[name]))
            except OSError:
                head = b""
            if head != magic[name]:
                kind = "a file napari-sparseseg did not write (not the format it writes there)"
        if kind is not None:
            raise OutputError(f"the {what} holds {name} as {kind}; {remedy} (nothing here is deleted).", path=folder)
    if marker in dirs:
        return names
    try:  # within the size and depth limits of every JSON file read
        meta = read_json(folder / marker, marker, error=OutputError)
    except OutputError:
        meta = None
    if not isinstance(meta, dict) or meta.get("package") != "napari-sparseseg":
        raise OutputError(f"the {what} holds a {marker} that napari-sparseseg did not write; {remedy} "
                          "(nothing here is deleted).", path=folder)
    return names


def file_identity(path: str | os.PathLike, follow_links: bool = True):
    """What changes when a file is replaced or rewritten: device, inode, mtime, size (``None`` if missing).

    Args:
        path: the file.
        follow_links: describe the file a symbolic link points at (else the link itself).
    """
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size
