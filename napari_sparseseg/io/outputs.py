"""The output side of the safety contract: check every output before any work, log what was written.

The safety contract (docs/safety.md): every output path is checked before any work starts; no output may equal an input
or another output; model and session folders are written only when new, empty or already
holding one of ours, and replaced atomically; nothing the user did not name is deleted.

:func:`check_outputs` does the checks for a set of named outputs against a set of named
inputs; the command line and the napari widget call it before reading, training or
predicting. :func:`check_format_limits` checks, once the image's size is known, that each
output's format can hold it. :class:`OutputLog` records which outputs a command has written,
so an interruption can say exactly what is on disk.

Output kinds (the keys of ``outputs``):

========================  =======================================================================
``"mask"``                a label file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
                          ``.mhd``) or a new or empty folder (DICOM series)
``"corrections"``         like ``"mask"``
``"probabilities"``       a file only (NIfTI 4-D or a vector image)
``"model"``               a folder: new, empty, or a model of ours (replaced as a whole)
``"session"``             a folder: new, empty, or a session of ours (replaced as a whole)
``"demo output"``         a folder: new, empty, or an earlier ``sparseseg demo`` output
``"summary"``             a text file of any suffix (a batch's CSV/JSON summary)
``"suggestions"``         a text file of any suffix (``segment --suggest``'s JSON)
========================  =======================================================================

A ``.dcm`` mask, corrections or probabilities output is a DICOM SEG
(:mod:`~napari_sparseseg.io.dicom_seg`): it references the DICOM series it was made on, so it
is refused unless the image (``"image"`` or ``"scan"`` among the inputs) is a DICOM series
folder and highdicom is installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io.atomic import TMP_MARK, check_ours, data_file_of, file_identity
from napari_sparseseg.io.dicom_seg import SEG_SUFFIX, is_seg_path, require_highdicom
from napari_sparseseg.io.models import check_model_folder
from napari_sparseseg.io.paths import NIFTI_SUFFIXES, SUPPORTED_SUFFIXES, file_suffix
from napari_sparseseg.io.sessions import check_session_folder
from napari_sparseseg.io.volumes import check_writable

__all__ = [
    "DEMO_FILES",
    "NIFTI_MAX_SIDE",
    "OUTPUT_KINDS",
    "OutputLog",
    "check_format_limits",
    "check_outputs",
    "files_of_input",
    "files_of_output",
]

_FILE, _LABELS, _MODEL, _SESSION, _DEMO, _TEXT = "file", "labels", "model", "session", "demo", "text"
OUTPUT_KINDS = {"mask": _LABELS, "corrections": _LABELS, "probabilities": _FILE, "model": _MODEL,
                "session": _SESSION, "demo output": _DEMO, "summary": _TEXT, "suggestions": _TEXT}
_FOLDER_KINDS = (_MODEL, _SESSION, _DEMO)
_SEG_KINDS = ("mask", "corrections", "probabilities")  # a .dcm among these is a DICOM SEG
#: What ``sparseseg demo`` writes into its folder.
DEMO_FILES = ("mask.nii.gz", "corrections.nii.gz", "model")
#: NIfTI-1 stores each dimension as a signed 16-bit integer.
NIFTI_MAX_SIDE = 32767
_DICOM_MAX_SIDE = 65535  # Rows and Columns are unsigned 16-bit
_FORMATS = ".nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd"
#: The data file our SimpleITK writers put next to a header (always compressed).
_DATA_SUFFIX = {".mhd": ".zraw", ".nhdr": ".raw.gz"}


def _real(path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    """The same file or folder, through any link or spelling of the path."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _real(a) == _real(b)


def _inside(path: Path, folder: Path) -> bool:
    return _real(path).startswith(_real(folder).rstrip(os.sep) + os.sep)


def _is_dicom_mask(path: Path) -> bool:
    return file_suffix(path) not in SUPPORTED_SUFFIXES and (path.suffix == "" or path.is_dir())


def _companion(path: Path) -> Path | None:
    """The data file a header output of ours is written with (``out.mhd`` -> ``out.zraw``)."""
    suffix = file_suffix(path)
    if suffix not in _DATA_SUFFIX:
        return None
    return path.with_name(path.name[: -len(suffix)] + _DATA_SUFFIX[suffix])


def files_of_output(kind: str, path: str | os.PathLike) -> list[Path]:
    """The paths an output of this kind creates or replaces: the file, its data file, or the folder.

    Args:
        kind: a key of :data:`OUTPUT_KINDS`.
        path: the output path.

    Returns:
        ``[path]``, plus the data file of a ``.mhd``/``.nhdr`` header.
    """
    path = Path(path)
    companion = None if OUTPUT_KINDS[kind] in _FOLDER_KINDS else _companion(path)
    return [path] + ([companion] if companion is not None else [])


def files_of_input(path: str | os.PathLike) -> list[Path]:
    """The paths an input occupies: the file and the data file its header names, or the folder.

    Args:
        path: an input file or folder (missing inputs give ``[]``: reading them reports it).

    Returns:
        The existing paths.
    """
    path = Path(path)
    if not os.path.exists(path):
        return []
    files = [path]
    if path.is_file() and file_suffix(path) in (".mhd", ".nhdr"):
        data = data_file_of(path)
        if data is not None and os.path.exists(data):
            files.append(data)
    return files


def _check_file(kind: str, name: str, path: Path) -> None:
    """A file output: a supported format, not a folder, a data file that is ours to replace."""
    suffix = file_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        formats = _FORMATS.replace(" or ", ", ") + " or a new folder (DICOM series)" if OUTPUT_KINDS[kind] == _LABELS \
            else _FORMATS
        raise OutputError(f"unsupported {name} format '{path.suffix or path.name}'; use {formats}.", path=path)
    if len(path.name) <= len(suffix):
        raise OutputError(f"the {name} file name is only a suffix; give a name such as {name}{suffix}.", path=path)
    if path.is_dir():
        raise OutputError(f"a folder exists where the {name} file should go; give a file name ({_FORMATS}).", path=path)
    companion = _companion(path)
    if companion is not None and os.path.lexists(companion):
        current = data_file_of(path) if path.is_file() else None
        if current is None or not _same(current, companion):
            raise OutputError(
                f"{companion.name} exists and is not the data file of {path.name}; writing the {name} would replace "
                "it. Move it or choose another name.", path=path)


def _check_dicom_folder(name: str, path: Path) -> None:
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"a file exists where the {name} folder (DICOM series) should go; choose another path.",
                          path=path)
    if path.is_dir() and any(path.iterdir()):
        raise OutputError(f"the {name} folder (DICOM series) is not empty; give a new or empty folder, or a file name "
                          f"({_FORMATS}).", path=path)


def check_demo_folder(folder: str | os.PathLike) -> Path:
    """The ``sparseseg demo`` output folder: new, empty, or an earlier demo output with its model.

    Args:
        folder: the demo's ``-o`` folder.

    Returns:
        ``folder``.

    Raises:
        OutputError: a file is there, or the folder holds anything an earlier demo did not write.
    """
    folder = Path(folder)
    names = check_ours(folder, DEMO_FILES, "model", "demo output folder",
                       "give a new or empty folder, or an earlier demo output", dirs={"model"},
                       magic={"mask.nii.gz": b"\x1f\x8b", "corrections.nii.gz": b"\x1f\x8b"})
    if not names:
        return folder
    try:
        check_model_folder(folder / "model", "demo's model folder")
        ours = (folder / "model" / "model.json").is_file()
    except OutputError:
        ours = False
    if not ours:
        raise OutputError("the demo output folder holds a model folder that the demo did not write; give a new or "
                          "empty folder, or an earlier demo output (nothing here is deleted).", path=folder)
    return folder


def _check_name(name: str, path: Path) -> None:
    if TMP_MARK in path.name:
        raise OutputError(f"names containing '{TMP_MARK}' are reserved for temporary files; choose another name.",
                          path=path)


def _check_seg(kind: str, path: Path, image: Path | None) -> None:
    """A ``.dcm`` output: a DICOM SEG, only of a DICOM series, only with highdicom installed."""
    if len(path.name) <= len(SEG_SUFFIX):
        raise OutputError(f"the {kind} file name is only a suffix; give a name such as {kind}{SEG_SUFFIX}.", path=path)
    if image is None or not image.is_dir():
        what = f"the image {image} is a file" if image is not None else "there is no image"
        raise OutputError(f"a .dcm {kind} is a DICOM SEG, which references the DICOM series it was made on, and {what}, "
                          "not a DICOM series folder; write .nii.gz, .nrrd or .mha instead, or give the series folder as "
                          "the image.", path=path)
    require_highdicom(f"a .dcm {kind} (a DICOM SEG)", path=path)


def _check_one(kind: str, path: Path, image: Path | None = None) -> None:
    check_writable(path, kind)
    k = OUTPUT_KINDS[kind]
    if kind in _SEG_KINDS and is_seg_path(path):
        _check_seg(kind, path, image)
    elif k == _MODEL:
        check_model_folder(path, "model folder")
    elif k == _SESSION:
        check_session_folder(path)
    elif k == _DEMO:
        check_demo_folder(path)
    elif k == _TEXT:
        if path.is_dir():
            raise OutputError(f"a folder exists where the {kind} file should go; move it or choose another path.",
                              path=path)
    elif k == _LABELS and _is_dicom_mask(path):
        _check_dicom_folder(kind, path)
    else:
        _check_file(kind, kind, path)


def _is_folder(kind: str, path: Path) -> bool:
    return OUTPUT_KINDS[kind] in _FOLDER_KINDS or (OUTPUT_KINDS[kind] == _LABELS and _is_dicom_mask(path))


def _collision(a: list[Path], a_folder: bool, b: list[Path], b_folder: bool):
    """``(x, y, how)``: the path ``x`` of ``a`` that would overwrite, replace or enter ``y`` of ``b``; or ``None``."""
    for x in a:
        for y in b:
            if _same(x, y):
                return x, y, "overwrite"
            if a_folder and _inside(y, x):
                return x, y, "replace"
            if b_folder and _inside(x, y):
                return x, y, "enter"
    return None


def _describe(kind: str, files: list[Path], x: Path) -> str:
    return f"the {kind}" if x is files[0] else f"the {kind}'s data file {x.name}"


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, Path]:
    """Check every output before any work starts (see the module docstring for the kinds).

    No output (nor the data file of a ``.mhd``/``.nhdr`` output) may be, contain or lie
    inside an input (or an input's data file) or another output, whatever path, symbolic link
    or hard link reaches it. Each output must have a supported format for its kind, an
    existing writable parent folder, no folder where a file goes (and no file where a folder
    goes); a folder output must be new, empty or one of ours. A ``.dcm`` mask, corrections or
    probabilities output (a DICOM SEG) needs a DICOM series folder as the ``"image"`` (or
    ``"scan"``) input.

    Args:
        outputs: kind -> path; ``None`` entries are skipped. Kinds: :data:`OUTPUT_KINDS`.
        inputs: a name used in messages (``"image"``, ``"scribbles"``, ``"--init-model folder"``)
            -> path; ``None`` entries and missing paths are skipped.

    Returns:
        The outputs that were given, as paths.

    Raises:
        OutputError: one line naming the output and what to do.
    """
    for kind, value in outputs.items():
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {kind!r}; expected one of {sorted(OUTPUT_KINDS)}.")
        if value is not None and not str(value).strip():
            raise OutputError(f"no {kind} path given (an empty name); give a file or folder name.", path=repr(str(value)))
    outs = {k: Path(v) for k, v in outputs.items() if v is not None}
    ins = {k: Path(v) for k, v in (inputs or {}).items() if v is not None}
    for kind, path in outs.items():
        _check_name(kind, path)
    for kind, path in outs.items():
        mine = files_of_output(kind, path)
        for name, inp in ins.items():
            theirs = files_of_input(inp)
            hit = _collision(mine, _is_folder(kind, path), theirs, inp.is_dir())
            if hit is None:
                continue
            x, y, how = hit
            target = _describe(name, theirs, y)
            if how == "overwrite":
                text = f"{_describe(kind, mine, x)} would overwrite {target}"
            elif how == "replace":
                text = f"the {kind} folder would replace {target} inside it"
            else:
                text = f"the {kind} would be written inside {target}"
            raise OutputError(f"{text} ({inp}); choose another path for the {kind}.", path=path)
    kinds = list(outs)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            fa, fb = files_of_output(a, outs[a]), files_of_output(b, outs[b])
            hit = _collision(fa, _is_folder(a, outs[a]), fb, _is_folder(b, outs[b]))
            if hit is not None:
                x, y, how = hit
                where = {"overwrite": "would be written to the same place as", "replace": "folder would hold",
                         "enter": "would be written inside"}[how]
                raise OutputError(f"{_describe(a, fa, x)} {where} {_describe(b, fb, y)} ({outs[b]}); give them "
                                  "different paths.", path=outs[a])
    image = next((ins[k] for k in ("image", "scan") if k in ins), None)
    for kind, path in outs.items():
        _check_one(kind, path, image)
    return outs


def check_format_limits(outputs: Mapping[str, str | os.PathLike | None], shape, num_classes: int | None = None) -> None:
    """Check that each output's format can hold a volume of ``shape`` (array order) and be read back.

    NIfTI-1 stores each dimension in 16 bits (at most 32767 voxels per axis, and at most 32767
    classes in a probability map); a DICOM slice has at most 65535 rows and columns.

    Args:
        outputs: kind -> path, as for :func:`check_outputs`.
        shape: the image's shape, array order ``(k, j, i)``.
        num_classes: classes of the probability map, if known.

    Raises:
        OutputError: the format cannot hold the data; says which format can.
    """
    shape = tuple(int(s) for s in shape)
    for kind, path in outputs.items():
        if path is None or OUTPUT_KINDS.get(kind) in _FOLDER_KINDS:
            continue
        path = Path(path)
        dims = shape + ((int(num_classes),) if kind == "probabilities" and num_classes else ())
        if file_suffix(path) in NIFTI_SUFFIXES and max(dims) > NIFTI_MAX_SIDE:
            raise OutputError(f"the {kind} would be {'x'.join(map(str, dims))} voxels, more than NIfTI-1's "
                              f"{NIFTI_MAX_SIDE} per axis, and could not be read back; write .nrrd or .mha instead.",
                              path=path)
        if OUTPUT_KINDS.get(kind) == _LABELS and _is_dicom_mask(path) and max(shape[1:]) > _DICOM_MAX_SIDE:
            raise OutputError(f"DICOM slices hold at most {_DICOM_MAX_SIDE} rows and columns, the {kind} has "
                              f"{shape[1]}x{shape[2]}; write .nrrd or .mha instead.", path=path)


class OutputLog:
    """Which of a command's outputs are on disk, for an exact message when it stops early.

    ``plan`` the outputs once checked, then do each write through :meth:`write`. An output
    counts as written when its write returned, or when the write was interrupted after the
    final rename (the path then holds the new, complete output).

    Args:
        guard: a context-manager factory wrapped around each write (the CLI holds back
            Ctrl-C/SIGTERM there, so an output is either wholly written or not at all).
    """

    def __init__(self, guard: Callable[[], AbstractContextManager] | None = None):
        self.guard = guard or nullcontext
        self.planned: dict[str, Path] = {}
        self.attempted: list[str] = []
        self.written: list[str] = []

    def plan(self, outputs: Mapping[str, str | os.PathLike | None]) -> None:
        """Record the outputs a command will write (``None`` entries are skipped)."""
        self.planned.update({k: Path(v) for k, v in outputs.items() if v is not None})

    def write(self, kind: str, fn: Callable[[], object]):
        """Run ``fn`` (which writes the output ``kind``) and record it; returns what ``fn`` returns."""
        path = self.planned[kind]
        self.attempted.append(kind)
        before = file_identity(path, follow_links=False)
        with self.guard():
            try:
                result = fn()
            except BaseException:
                if file_identity(path, follow_links=False) != before and os.path.lexists(path):
                    self.written.append(kind)
                raise
            self.written.append(kind)
        return result

    def summary(self) -> str:
        """``wrote mask m.nii.gz; the probabilities and model were not written`` or ``nothing was written``."""
        if not self.written:
            return "nothing was written"
        done = [f"{k} {self.planned[k]}" for k in self.written]
        text = "wrote " + (", ".join(done[:-1]) + " and " + done[-1] if len(done) > 1 else done[0])
        missing = [k for k in self.planned if k not in self.written]
        if missing:
            names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
            verb = "were" if len(missing) > 1 or missing[0] in ("probabilities", "suggestions") else "was"
            text += f"; the {names} {verb} not written"
        return text
