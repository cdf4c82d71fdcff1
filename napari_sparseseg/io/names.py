r"""Names of a cohort's outputs, and the folders they are confined to: checked before any work.

Every output of ``sparseseg batch`` and of a cohort folder is ``FOLDER/NAME<suffix>``, with
``NAME`` derived from a scan (:mod:`.cohort`) or read from ``cohort.json``. A name is a plain
file-name part: not empty, no ``/`` or ``\\``, no NUL, not ``.`` or ``..``, and short enough for
the longest suffix to fit in a file name. Names are unique per folder without regard to case
(``CT`` and ``ct`` are one file on macOS and Windows). An output that is a symbolic link, and a
cohort's ``model/`` or ``strokes/`` that is one, is refused: what is written through them would
land outside the folder the user named.

Also :func:`remove_stale_temps`, which removes the hidden temporary files that an atomic write
of an output leaves behind when its process is killed mid-write (:data:`.atomic.TMP_MARK`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from napari_sparseseg.core.base.errors import InputError, OutputError
from napari_sparseseg.io.atomic import TMP_MARK

__all__ = ["MAX_NAME_BYTES", "check_name", "check_unique", "confined", "remove_stale_temps", "refuse_link"]

# NAME + the longest suffix ("_probabilities.nii.gz", 21 bytes) must fit a file name (255 bytes), with room
# for an atomic write's hidden temporary name around it (".NAME....sparseseg-tmp-xxxxxxxx").
MAX_NAME_BYTES = 255 - len("_probabilities.nii.gz") - len("." + TMP_MARK + "-12345678")


def check_name(name, what: str = "scan name", path=None) -> str:
    """``name`` if it is a plain part of a file name (see the module docstring).

    Raises:
        InputError: it would name a file elsewhere (``..``, ``/``, an absolute path), is empty or too long.
    """
    if not isinstance(name, str):
        raise InputError(f"the {what} {name!r} is not text; give every scan a plain name.", path=path)
    if not name.strip():
        raise InputError(f"the {what} {name!r} is empty; every scan needs a name its outputs are called by.", path=path)
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")) or os.path.isabs(name):
        raise InputError(f"the {what} {name!r} is not a plain name (it holds a path, '..' or a separator) and would "
                         "put outputs outside their folder; give it a plain name.", path=path)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise InputError(f"the {what} {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes: its outputs' file names "
                         "would be too long; rename the scan (or give it a shorter name in a CSV manifest's folder).",
                         path=path)
    return name


def check_unique(names: Iterable[str], path=None) -> None:
    """Raise unless the names differ also without regard to case.

    Raises:
        InputError: two scans would write the same outputs (names both).
    """
    seen: dict[str, str] = {}
    for n in names:
        key = n.casefold()
        if key in seen:
            raise InputError(f"two scans have the output name {seen[key]!r}" + (f" / {n!r}" if n != seen[key] else "")
                             + " and would write the same files; rename one (names are compared without regard to "
                             "case).", path=path)
        seen[key] = n


def refuse_link(path: Path, what: str) -> None:
    """Raise if ``path`` is a symbolic link (what is written through it lands elsewhere).

    Raises:
        OutputError: names the link and where it points.
    """
    if os.path.islink(path):
        raise OutputError(f"the {what} is a symbolic link (to {os.readlink(path)}); writing through it would change "
                          "files outside the folder. Replace the link with a real folder or file, or choose another "
                          "folder.", path=path)


def confined(folder: Path, filename: str, what: str) -> Path:
    """``folder / filename``, checked to be a file directly inside ``folder`` that is not a symbolic link.

    Raises:
        InputError: ``filename`` is not a plain name.
        OutputError: the file is a symbolic link, or resolves outside ``folder``.
    """
    check_name(filename, f"{what}'s file name")
    path = Path(folder) / filename
    refuse_link(path, what)
    if os.path.realpath(path.parent) != os.path.realpath(folder):  # cannot happen for a plain name; kept as a guard
        raise OutputError(f"the {what} would be written outside {folder}.", path=path)
    return path


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the hidden temporary files an interrupted atomic write of ``path`` left beside it; return them."""
    folder, prefix = Path(path).parent, f".{Path(path).name}{TMP_MARK}-"
    removed = []
    try:
        found = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in found:
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:
            pass
    return removed
