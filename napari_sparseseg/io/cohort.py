"""A cohort's scans from what the user names: files, folders, globs or a CSV manifest.

``sparseseg batch INPUT...`` (and the Cohort widget) accept, in any mix:

* a scan file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) or a DICOM
  series folder;
* a folder of scans: every scan file directly inside it and every DICOM series subfolder,
  in name order;
* a glob (``data/**/*.nii.gz``; ``**`` recurses), each match treated as above;
* a CSV manifest (``.csv``) with a header row: an ``image`` column and optional ``scribbles``
  and ``corrections`` columns (relative paths are relative to the CSV's folder), one scan per
  row; the same for training on strokes from several scans. Read as :class:`ManifestRow`
  records (``io/schema.py``): at most ``MAX_MANIFEST_BYTES`` and ``MAX_COHORT_SCANS`` rows, the
  known columns each once, no blank image cell, no row longer than the header.

Each scan gets a unique output ``name`` (the file name without its suffix, or the folder's
name; two scans with the same name, compared without regard to case, are told apart by their
parent folders, never the root folder, then by their format, ``ct_nii_gz`` and ``ct_nrrd``,
then by a number; deterministically). The name is a plain file-name part, never a path. A scan named twice
is kept once. Anything that names no scan is a clear error before any work starts.
"""

from __future__ import annotations

import collections
import csv
import glob
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_sparseseg.core.base.config import MAX_COHORT_SCANS, MAX_MANIFEST_BYTES, MAX_TEXT_CHARS
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io.paths import SUPPORTED_SUFFIXES, file_suffix, looks_like_dicom_folder
from napari_sparseseg.io.schema import Record, SchemaError, Text, spec

__all__ = ["ManifestRow", "ScanEntry", "expand_inputs", "free_name", "match_scribbles", "scan_name"]

_GLOB_CHARS = frozenset("*?[")
_MANIFEST_COLUMNS = ("image", "scribbles", "corrections")
_STROKE_WORDS = ("scribbles", "scribble", "strokes", "labels", "corrections")


@dataclass(frozen=True)
class ScanEntry:
    """One scan of a cohort.

    Args:
        image: the scan file or DICOM series folder.
        name: unique within the cohort; the stem of its outputs.
        scribbles: its strokes (scribble convention, on the scan's grid), if any.
        corrections: its correction strokes, if any.
    """

    image: Path
    name: str = ""
    scribbles: Path | None = None
    corrections: Path | None = None


def scan_name(path: str | os.PathLike) -> str:
    """The file name without its scan suffix (``ct.nii.gz`` -> ``ct``), or a folder's name."""
    p = Path(path)
    if p.is_dir():
        return p.name if p.name not in ("", ".", "..") else (p.resolve().name or "scan")  # "series/..", "/"
    suffix = file_suffix(p)
    name = p.name[: -len(suffix)] if suffix and p.name.lower().endswith(suffix) else p.stem
    return name if name not in ("", ".", "..") else (p.name.replace(".", "_").strip("_") or "scan")  # ".nii.gz"


def _is_scan(path: Path) -> bool:
    return looks_like_dicom_folder(path) if path.is_dir() else (path.is_file() and file_suffix(path) in SUPPORTED_SUFFIXES)


def _scans_in_folder(folder: Path) -> list[Path]:
    children = sorted(folder.iterdir(), key=lambda p: p.name)
    return [c for c in children if not c.name.startswith(".") and _is_scan(c)]


def _from_path(p: Path, given: str) -> list[ScanEntry]:
    if p.is_file() and p.suffix.lower() == ".csv":
        return _read_manifest(p)
    if _is_scan(p):
        return [ScanEntry(p)]
    if p.is_dir():
        found = _scans_in_folder(p)
        if not found:
            raise InputError(f"no scans in this folder (looked for {', '.join(SUPPORTED_SUFFIXES)} files and DICOM "
                             "series folders directly inside it); name the scans or their folder.", path=given)
        return [ScanEntry(f) for f in found]
    if not p.exists():
        raise InputError("not found; check the path (a file, a folder, a glob or a CSV manifest).", path=given)
    raise InputError(f"not a scan ({', '.join(SUPPORTED_SUFFIXES)} or a DICOM series folder), a folder of scans or a "
                     "CSV manifest.", path=given)


@dataclass(frozen=True)
class ManifestRow:
    """One row of a CSV manifest, as written (paths relative to the manifest's folder, or absolute)."""

    image: str = spec(Text(nonempty=True, max_chars=MAX_TEXT_CHARS, what="the path of a scan file or DICOM series "
                                                                        "folder (not blank)"))
    scribbles: str = spec(Text(max_chars=MAX_TEXT_CHARS), default="")
    corrections: str = spec(Text(max_chars=MAX_TEXT_CHARS), default="")


def _manifest_rows(path: Path) -> list[tuple[int, ManifestRow]]:
    """``(line, row)`` of each scan row of a manifest, every cell checked (see :func:`_read_manifest`)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the manifest ({exc.strerror or exc}).", path=path) from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"the manifest is more than {MAX_MANIFEST_BYTES} bytes; split it into several manifests.",
                         path=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"the manifest is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV.", path=path) from None
    if "\0" in text:
        raise InputError("the manifest holds a NUL byte: it is not a CSV text file.", path=path)
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        if "image" not in header:
            raise InputError("a manifest needs a header row with an 'image' column (and optionally 'scribbles' and "
                             "'corrections'), one scan per row.", path=path)
        unknown = sorted({h for h in header if h and h not in _MANIFEST_COLUMNS})
        if unknown:
            raise InputError(f"unknown column(s) {', '.join(unknown)}; use {', '.join(_MANIFEST_COLUMNS)}.", path=path)
        twice = sorted(h for h, n in collections.Counter(header).items() if h and n > 1)
        if twice:
            raise InputError(f"the column(s) {', '.join(twice)} appear more than once in the header; keep one of each.",
                             path=path)
        for cells in reader:
            if not cells:
                continue  # a blank line
            line = reader.line_num
            if len(rows) >= MAX_COHORT_SCANS:
                raise InputError(f"the manifest lists more than {MAX_COHORT_SCANS} scans; split it into several "
                                 "manifests.", path=path)
            if len(cells) > len(header):
                raise InputError(f"row {line} has {len(cells)} cells but the header {len(header)} columns; quote a "
                                 "path that holds a comma.", path=path)
            values = {h: c.strip() for h, c in zip(header, cells, strict=False) if h}  # a short row: the rest blank
            try:
                rows.append((line, Record(ManifestRow)(values, "")))
            except SchemaError as exc:
                raise InputError(f"row {line}: {exc.text('column')}.", path=path) from None
    except csv.Error as exc:
        raise InputError(f"cannot read the manifest as CSV ({exc}).", path=path) from exc
    return rows


def _read_manifest(path: Path) -> list[ScanEntry]:
    """The scans of a CSV manifest (see the module docstring), read through :class:`ManifestRow`.

    At most :data:`~napari_sparseseg.core.base.config.MAX_MANIFEST_BYTES` and
    :data:`~napari_sparseseg.core.base.config.MAX_COHORT_SCANS` rows; a header with the known
    columns only, each once; no row with more cells than the header; no blank image cell.
    """
    out = []
    for i, row in _manifest_rows(path):
        files = {}
        for column in _MANIFEST_COLUMNS:
            value = getattr(row, column)
            if value:
                p = Path(value) if Path(value).is_absolute() else path.parent / value
                if not p.exists():
                    raise InputError(f"row {i}: the {column} '{value}' does not exist (relative paths are relative to "
                                     "the manifest's folder).", path=path)
                if not _is_scan(p):
                    raise InputError(f"row {i}: the {column} '{value}' is not a scan file or DICOM series folder.", path=path)
                files[column] = p
        out.append(ScanEntry(files["image"], scribbles=files.get("scribbles"), corrections=files.get("corrections")))
    if not out:
        raise InputError("the manifest lists no scans.", path=path)
    return out


def _suffix_tag(path: Path) -> str:
    """``nrrd`` for ``ct.nrrd``, ``nii_gz`` for ``ct.nii.gz``; ``""`` for a folder."""
    return "" if path.is_dir() else file_suffix(path).lstrip(".").replace(".", "_")


def _candidates(image: Path, base: str):
    """The names a scan may take, in order.

    Its own, with more and more parent folders in front (never the root folder, so a name never
    becomes a path), then with its format added, then numbered.
    """
    parents = list(image.resolve().parent.parts[1:])
    yield base
    for depth in range(1, len(parents) + 1):
        yield "_".join([*parents[-depth:], base])
    tag = _suffix_tag(image)
    last = "_".join([*parents, base, tag] if tag else [*parents, base])
    if tag:
        yield last
    for k in range(2, 100_000):
        yield f"{last}_{k}"


def free_name(image: str | os.PathLike, base: str, taken: set[str]) -> str:
    """The first of a scan's candidate names (as :func:`expand_inputs` tries them) not in ``taken``.

    ``taken`` holds case-folded names: names are compared without regard to case.
    """
    for name in _candidates(Path(image), base):
        if name.casefold() not in taken:
            return name
    raise InputError("cannot give this scan a name of its own; rename it.", path=image)


def _unique_names(entries: list[ScanEntry]) -> list[ScanEntry]:
    """Name each scan; scans with the same name (without regard to case) are told apart deterministically.

    Scans in different folders get their parent folders' names in front, as many as it takes
    (never the root folder); scans in one folder (``ct.nii.gz`` and ``ct.nrrd``) get their
    format added (``ct_nii_gz``, ``ct_nrrd``); any still alike are numbered in the order of
    their full paths. The names do not depend on the order the scans were named in.
    """
    base = {i: scan_name(e.image) for i, e in enumerate(entries)}
    parents = {i: list(e.image.resolve().parent.parts[1:]) for i, e in enumerate(entries)}
    depth, tagged = dict.fromkeys(base, 0), dict.fromkeys(base, False)

    def name(i: int) -> str:
        tag = _suffix_tag(entries[i].image) if tagged[i] else ""
        return "_".join([*parents[i][len(parents[i]) - depth[i]:], base[i], *([tag] if tag else [])])

    names = dict(base)
    while True:
        clash: dict[str, list[int]] = {}
        for i, n in names.items():
            clash.setdefault(n.casefold(), []).append(i)
        changed = set()
        for ids in (ids for ids in clash.values() if len(ids) > 1):
            for i in ids:
                same_folder = any(parents[j] == parents[i] for j in ids if j != i)
                if same_folder:
                    if not tagged[i] and _suffix_tag(entries[i].image):
                        tagged[i] = True
                        changed.add(i)
                elif depth[i] < len(parents[i]):
                    depth[i] += 1
                    changed.add(i)
        if not changed:
            break
        for i in changed:
            names[i] = name(i)
    every = {n.casefold() for n in names.values()}
    taken: set[str] = set()
    for i in sorted(names, key=lambda i: str(entries[i].image.resolve())):  # still alike: numbered in path order
        if names[i].casefold() in taken:
            k = 2
            while f"{names[i]}_{k}".casefold() in every:
                k += 1
            names[i] = f"{names[i]}_{k}"
            every.add(names[i].casefold())
        taken.add(names[i].casefold())
    return [ScanEntry(e.image, names[i], e.scribbles, e.corrections) for i, e in enumerate(entries)]


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[ScanEntry]:
    """The cohort's scans, in the order named, each once, with unique names.

    Raises:
        InputError: an input names no scan (missing file, empty folder or glob, a file of
            another kind, a malformed manifest); the message names the input.
    """
    if not inputs:
        raise InputError("no scans given; name scan files, folders, globs or a CSV manifest.")
    entries: list[ScanEntry] = []
    for given in inputs:
        text = str(given)
        if any(c in text for c in _GLOB_CHARS) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            found = [e for m in matches if _is_scan(Path(m)) or m.lower().endswith(".csv") for e in _from_path(Path(m), m)]
            if not found:
                raise InputError("the pattern matches no scans; check it (quote it so the shell does not expand it).",
                                 path=text)
            entries += found
        else:
            entries += _from_path(Path(text), text)
    seen, unique = set(), []
    for e in entries:
        key = os.path.realpath(e.image)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    return _unique_names(unique)


def _stroke_stem(path: Path) -> tuple[str, str]:
    """``("ct", "scribbles")`` for ``ct_scribbles.nii.gz``; ``(stem, "")`` without a stroke word."""
    stem = scan_name(path)
    for word in _STROKE_WORDS:
        for sep in ("_", "-", "."):
            if stem.lower().endswith(sep + word):
                return stem[: -len(word) - 1], word
    return stem, ""


def match_scribbles(entries: Iterable[ScanEntry], pattern: str) -> list[ScanEntry]:
    """Attach strokes found by ``pattern`` (``--fine-tune-scribbles``) to their scans.

    ``pattern`` is a glob. With ``{name}`` in it, each scan's pattern is that glob with the
    scan's name filled in; it must match at most one file. Without it, a file belongs to the
    scan whose name is the file's name without its suffix, optionally followed by
    ``_scribbles`` (or ``-strokes``, ``.labels``...). Scans without strokes are kept as they are.

    Raises:
        InputError: a scan matches more than one stroke file, or the pattern matches nothing.
    """
    entries = list(entries)
    out = []
    if "{name}" in pattern:
        for e in entries:
            found = sorted(glob.glob(pattern.replace("{name}", glob.escape(e.name)), recursive=True))
            if len(found) > 1:
                raise InputError(f"{len(found)} stroke files match scan '{e.name}' ({', '.join(found[:3])}...); make the "
                                 "pattern match one.", path=pattern)
            out.append(ScanEntry(e.image, e.name, Path(found[0]) if found else e.scribbles, e.corrections))
        if all(a.scribbles == b.scribbles for a, b in zip(entries, out, strict=True)):
            raise InputError("the pattern matches no stroke file of any scan.", path=pattern)
        return out
    files = [Path(f) for f in sorted(glob.glob(pattern, recursive=True)) if _is_scan(Path(f))]
    if not files:
        raise InputError("the pattern matches no stroke files; check it (quote it so the shell does not expand it).",
                         path=pattern)
    images = {os.path.realpath(e.image) for e in entries}
    by_name: dict[str, list[Path]] = {}
    for f in files:
        if os.path.realpath(f) in images:
            continue  # the scan itself, when scans and strokes share a folder
        stem, _ = _stroke_stem(f)
        by_name.setdefault(stem, []).append(f)
    matched = False
    for e in entries:
        found = by_name.get(e.name, [])
        if len(found) > 1:
            raise InputError(f"{len(found)} stroke files match scan '{e.name}' ({', '.join(map(str, found[:3]))}); "
                             "keep one or use a pattern with {name}.", path=pattern)
        matched |= bool(found)
        out.append(ScanEntry(e.image, e.name, found[0] if found else e.scribbles, e.corrections))
    if not matched:
        raise InputError("no stroke file matches a scan's name (expected e.g. NAME_scribbles.nii.gz for scan NAME).",
                         path=pattern)
    return out
