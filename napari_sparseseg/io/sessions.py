"""Session folders on disk: the storage format of a :class:`~napari_sparseseg.core.session.state.Session`.

A saved session is a folder: ``session.json`` (format version, image reference, geometry,
class names/colours, settings, history, the boxes and clicks drawn), ``annotations.npz``
(scribbles, correction mask, last prediction), ``model/`` (:mod:`napari_sparseseg.io.models`)
and ``image.npy`` only when the image has no file to refer to. :func:`save_session` builds the
whole folder next to the target and swaps it in with one rename, so an interrupted save leaves
the previous session readable; it writes only into a new or empty folder or a session of ours
(:func:`check_session_folder`), so it never deletes a file of the user's. Unchanged model and
image files are hard-linked from the previous save (the session's :attr:`~Session.saved`
record), so an autosave after every stroke stays cheap. :func:`load_session` checks every
field and array it reads back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.annotations.hints import checked_hint_shapes
from napari_sparseseg.core.annotations.labels import MAX_CLASSES, validate_class_names, validate_labels
from napari_sparseseg.core.base.config import MAX_SCAN_VOXELS, RoundSettings
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError, InputError, OutputError, ScribbleError, brief
from napari_sparseseg.core.base.grid import validate_geometry, validate_spacing
from napari_sparseseg.core.model.checkpoint import CONFIG_NAME, MODEL_FILES, WEIGHTS_NAME
from napari_sparseseg.core.model.intensity import validate_image
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io.atomic import check_ours, file_identity, recover_folder, replace_folder
from napari_sparseseg.io.cache import cache_folder
from napari_sparseseg.io.models import check_model_folder, load_model, npy_shapes, read_tagged_json, save_model

__all__ = ["SESSION_FILES", "autosave_folder", "check_session_folder", "find_autosave", "load_session",
           "read_session_info", "save_session"]

SESSION_FORMAT = 1
SESSION_JSON, ANNOTATIONS, IMAGE_NPY, MODEL_DIR = "session.json", "annotations.npz", "image.npy", "model"


def save_session(session: Session, folder, include_image: bool | None = None) -> Path:
    """Write the session to ``folder`` in one rename (see :func:`~napari_sparseseg.io.atomic.replace_folder`).

    ``folder`` must be new, empty, or a session of ours (:func:`check_session_folder`); its
    parent folders are created. The whole folder is built next to it and swapped in, so an
    interrupted save leaves the previous session as it was. The model and image files are
    written only when they changed since the last save to this folder; otherwise they are
    hard-linked (or copied) from it, so an autosave stays cheap. The image is stored
    (``image.npy``) when it has no :attr:`image_path` or ``include_image`` is true.
    Thread-safe.

    Args:
        session: the session to write.
        folder: the session folder.
        include_image: store the image even if it has a file (default: only if it has none).

    Returns:
        ``folder`` (a link's target if ``folder`` is a link to a folder).

    Raises:
        OutputError: the folder holds files that are not a session of ours, or it cannot
            be written (the previous session is then unchanged).

    Examples:
        ```python
        import napari_sparseseg as ss
        ss.save_session(session, "liver_session")   # the widget's Save session... does the same
        ```
    """
    folder = Path(folder)
    with session.lock:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder {folder.parent} ({exc.strerror or exc}); choose a writable "
                              "folder.", path=folder) from exc
        check_session_folder(folder)
        key = str(folder.resolve())
        done = session.saved.get(key, {})
        arrays = {"scribbles": session.scribbles, "corrected": np.packbits(session.corrected)}
        if session.prediction is not None:
            arrays["prediction"] = session.prediction
        store_image = bool((include_image if include_image is not None else not session.image_path)
                           and session.image is not None)
        old_image, old_model = folder / IMAGE_NPY, folder / MODEL_DIR
        reuse_image = store_image and old_image.is_file() and (
            done.get("image") == file_identity(old_image) or _same_image_on_disk(old_image, session.image))
        reuse_model = (session.model is not None and done.get("revision") == session.model_revision
                       and all((old_model / n).is_file() for n in (CONFIG_NAME, WEIGHTS_NAME))
                       and done.get("model", file_identity(old_model / WEIGHTS_NAME)) == file_identity(old_model / WEIGHTS_NAME))
        meta = {
            "format_version": SESSION_FORMAT,
            "package": "napari-sparseseg",
            "package_version": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "image_path": session.image_path,
            "image_stored": store_image,
            "shape": list(session.scribbles.shape),
            "spacing": list(session.spacing),
            "geometry": session.geometry,
            "class_names": list(session.class_names),
            "colors": session.colors,
            "has_model": session.model is not None,
            "history": session.history,
            "settings": session.settings.to_dict(),
            "hints": session.hint_shapes,
        }

        def build(tmp: Path) -> None:
            with open(tmp / ANNOTATIONS, "wb") as f:
                np.savez_compressed(f, **arrays)
            if store_image:
                if reuse_image:
                    _link_or_copy(old_image, tmp / IMAGE_NPY)
                else:
                    with open(tmp / IMAGE_NPY, "wb") as f:
                        np.save(f, session.image)
            if session.model is not None:
                if reuse_model:
                    (tmp / MODEL_DIR).mkdir()
                    for name in MODEL_FILES:  # the forest is optional
                        if (old_model / name).is_file():
                            _link_or_copy(old_model / name, tmp / MODEL_DIR / name)
                else:
                    save_model(session.model, tmp / MODEL_DIR)
            (tmp / SESSION_JSON).write_text(json.dumps(meta, indent=1))  # last: a complete folder is a session

        try:
            out = replace_folder(folder, build, check=check_session_folder)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot save the session ({exc.strerror or exc}); choose a writable folder.",
                              path=folder) from exc
        session.saved[key] = {"image": file_identity(out / IMAGE_NPY), "model": file_identity(out / MODEL_DIR / WEIGHTS_NAME),
                              "revision": session.model_revision if session.model is not None else None}
    return out


def _same_image_on_disk(path: Path, image: np.ndarray) -> bool:
    """Whether ``path`` (an ``image.npy``) holds exactly ``image``."""
    try:
        arr = np.load(path, mmap_mode="r")
        return arr.shape == image.shape and arr.dtype == image.dtype and bool(np.array_equal(arr, image))
    except (OSError, ValueError):
        return False


def load_session(folder, image: np.ndarray | None = None, device: str = "cpu") -> Session:
    """Read a session folder written by :func:`save_session`.

    The image comes from ``image`` if given, else from ``image.npy`` if the session stored
    it; otherwise :attr:`Session.image` is ``None`` and the caller reads :attr:`Session.image_path`.

    Raises:
        CheckpointError: not a session folder, another format version, or a damaged file,
            named: ``session.json`` with a field of the wrong type (see
            :func:`read_session_info`), ``annotations.npz`` truncated or not a zip, an
            array missing or of the wrong shape/type/values, ``image.npy`` unreadable or
            not a usable image, the saved model missing or damaged.
        InputError: ``image`` is not a usable image (not 3-D, NaN/inf...).
        ScribbleError: ``image`` does not match the session's shape.

    Examples:
        ```python
        import napari_sparseseg as ss
        session = ss.load_session("liver_session")
        if session.image is None:                    # the scan was not stored in the folder
            session.image, _ = ss.read_image(session.image_path)
        ```
    """
    folder = Path(folder)
    meta = read_session_info(folder)
    shape = tuple(meta["shape"])
    if image is not None:
        image = validate_image(image)
        if tuple(image.shape) != shape:
            raise ScribbleError(f"the image has shape {tuple(image.shape)} but the session was drawn on {shape}; "
                                "open the session's own scan.", path=folder)
    scribbles, corrected, prediction = _read_annotations(folder, shape)
    if image is None and ((folder / IMAGE_NPY).is_file() or meta.get("image_stored")):
        image = _read_stored_image(folder, shape)
    model = None
    if meta.get("has_model"):
        if not (folder / MODEL_DIR).is_dir():
            raise CheckpointError(f"corrupt session: {SESSION_JSON} says a model was saved but the {MODEL_DIR}/ folder "
                                  "is missing; copy the whole session folder again.", path=folder)
        model = load_model(folder / MODEL_DIR, device=device)
    try:
        s = Session(image, scribbles, list(meta["class_names"]), tuple(meta.get("spacing", (1, 1, 1))), meta.get("geometry"),
                meta.get("image_path"), meta.get("colors"), corrected, model, prediction, list(meta.get("history", [])),
                RoundSettings.from_dict(meta.get("settings"), lenient=True), hint_shapes=meta.get("hints"))
    except (InputError, ConfigError) as exc:
        raise CheckpointError(f"corrupt session: {exc.message}", path=folder) from exc
    s.saved[str(folder.resolve())] = {"revision": s.model_revision}
    return s


def _read_annotations(folder: Path, shape: tuple) -> tuple:
    """``(scribbles, corrected, prediction)`` from ``annotations.npz``, every array checked."""
    path = folder / ANNOTATIONS
    if not path.is_file():
        raise CheckpointError(f"corrupt session: {ANNOTATIONS} is missing; copy the whole session folder again.", path=folder)
    n = int(np.prod(shape))
    _refuse_oversized(path, folder, {"scribbles": n, "prediction": n, "corrected": (n + 7) // 8}, n)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("scribbles", "corrected") if k not in z.files]
            if missing:
                raise CheckpointError(f"corrupt session: {ANNOTATIONS} lacks the array(s) {', '.join(missing)}.", path=folder)
            scribbles, packed = z["scribbles"], z["corrected"]
            prediction = z["prediction"] if "prediction" in z.files else None
    except CheckpointError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError, OSError...: a damaged file
        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"corrupt session: {ANNOTATIONS} cannot be read ({type(exc).__name__}: {text}); the file is "
                              "truncated or damaged.", path=folder) from exc
    try:
        scribbles = validate_labels(scribbles, "scribbles", shape=shape)
        if prediction is not None:
            prediction = validate_labels(prediction, "prediction", shape=shape, max_value=MAX_CLASSES - 1)
    except InputError as exc:
        raise CheckpointError(f"corrupt session: in {ANNOTATIONS}, {exc.message}", path=folder) from exc
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
        raise CheckpointError(f"corrupt session: in {ANNOTATIONS}, the correction mask is {packed.dtype} {packed.shape}, "
                              f"expected {(n + 7) // 8} packed bytes for shape {shape}.", path=folder)
    corrected = np.unpackbits(packed, count=n).reshape(shape).astype(bool)
    return scribbles, corrected, prediction


def _refuse_oversized(path: Path, folder: Path, most: dict[str, int], other: int) -> None:
    """Refuse an array file whose headers claim more values than the session's shape allows, before loading it.

    Args:
        path: the ``.npz`` or ``.npy``.
        folder: the session folder (for the message).
        most: array name -> the most values it may hold (``""``: the one array of a ``.npy``).
        other: the most values of any other array in the file.
    """
    try:
        shapes = npy_shapes(path)
    except (OSError, ValueError):
        return  # damaged: reading it reports that
    for name, shp in shapes.items():
        size = int(np.prod(shp, dtype=object))
        if size > most.get(name, other):
            what = f"the array {name!r} of {path.name}" if name else path.name
            raise CheckpointError(f"corrupt session: {what} claims shape {shp}, more than the session's "
                                  f"{SESSION_JSON} allows; copy the whole session folder again.", path=folder)


def _read_stored_image(folder: Path, shape: tuple) -> np.ndarray:
    """The image the session stored (``image.npy``), checked like any image."""
    path = folder / IMAGE_NPY
    if not path.is_file():
        raise CheckpointError(f"corrupt session: {SESSION_JSON} says the image was stored but {IMAGE_NPY} is missing; open "
                              "the scan and load the session again, or copy the whole session folder.", path=folder)
    _refuse_oversized(path, folder, {"": int(np.prod(shape))}, int(np.prod(shape)))
    try:
        image = np.load(path, allow_pickle=False)
    except Exception as exc:  # truncated or damaged .npy
        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"corrupt session: {IMAGE_NPY} cannot be read ({type(exc).__name__}: {text}); open the scan "
                              "and load the session again.", path=folder) from exc
    try:
        image = validate_image(image)
    except InputError as exc:
        raise CheckpointError(f"corrupt session: {IMAGE_NPY}: {exc.message}", path=folder) from exc
    if tuple(image.shape) != shape:
        raise CheckpointError(f"corrupt session: {IMAGE_NPY} has shape {tuple(image.shape)}, the session {shape}.", path=folder)
    return image


def read_session_info(folder) -> dict:
    """The ``session.json`` of a session folder (saved time, image path, shape, classes...), checked.

    Raises:
        CheckpointError: not a session folder, unparsable, another format version, or a field
            of the wrong type: ``shape`` not 3 positive ints, ``class_names`` not a list of
            2..MAX_CLASSES names, ``spacing`` not 3 positive numbers, ``geometry`` not a finite
            invertible 4x4 affine on ``shape``, ``history`` not a list of dicts, ``image_path``
            not text, ``colors`` not a list of text, flags not true/false, ``hints`` (the
            boxes and clicks drawn) not as :func:`~napari_sparseseg.core.annotations.hints.checked_hint_shapes` reads them.
    """
    folder = Path(folder)
    meta_path = folder / SESSION_JSON
    if not meta_path.is_file():
        raise CheckpointError(f"not a napari-sparseseg session ({SESSION_JSON} is missing); choose a folder saved by the widget.", path=folder)
    meta = read_tagged_json(meta_path, folder, "session", SESSION_FORMAT, "use a matching version")

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"corrupt session: in {SESSION_JSON}, {what}", path=folder)

    shape = meta.get("shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise bad(f"shape is {brief(shape)}; it must be 3 positive whole numbers.")
    if shape[0] * shape[1] * shape[2] > MAX_SCAN_VOXELS:
        raise bad(f"shape is {brief(shape)}, more than the {MAX_SCAN_VOXELS} voxels of any scan this package reads.")
    try:
        validate_class_names(meta.get("class_names"))
        validate_spacing(meta.get("spacing", (1.0, 1.0, 1.0)))
        if meta.get("geometry") is not None:
            validate_geometry(meta["geometry"], tuple(shape))
    except (InputError, ConfigError) as exc:
        raise bad(exc.message) from exc
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad(f"history is {type(history).__name__}; it must be a list of rounds.")
    if meta.get("image_path") is not None and not isinstance(meta["image_path"], str):
        raise bad(f"image_path is {brief(meta['image_path'])}; it must be a path.")
    colors = meta.get("colors")
    if colors is not None and (not isinstance(colors, list) or not all(c is None or isinstance(c, str) for c in colors)):
        raise bad(f"colors is {brief(colors)}; it must be a list of colours.")
    for flag in ("has_model", "image_stored"):
        if flag in meta and not isinstance(meta[flag], bool):
            raise bad(f"{flag} is {brief(meta[flag])}; it must be true or false.")
    if meta.get("settings") is not None and not isinstance(meta["settings"], dict):
        raise bad(f"settings is {type(meta['settings']).__name__}; it must be a mapping.")
    try:
        checked_hint_shapes(meta.get("hints"))
    except InputError as exc:
        raise bad(exc.message) from exc
    return meta


SESSION_FILES = frozenset({SESSION_JSON, ANNOTATIONS, IMAGE_NPY, MODEL_DIR})


def check_session_folder(folder) -> Path:
    """Check that a session may be saved at ``folder`` (before any work, and again before the swap).

    Allowed: a path that does not exist yet, an empty folder, or a session folder of ours
    (``session.json`` written by napari-sparseseg, plus only the files a session holds). Anything
    else is refused, so saving a session never deletes a file of the user's.

    Args:
        folder: the session folder.

    Returns:
        ``folder``.

    Raises:
        OutputError: a file is there, or the folder holds other files (names a few of them).
    """
    folder = Path(folder)
    recover_folder(folder)  # a save that crashed between its two renames (not on Linux)
    names = check_ours(folder, SESSION_FILES, SESSION_JSON, "session folder",
                       "save the session into a new or empty folder, or one saved by napari-sparseseg",
                       dirs={MODEL_DIR}, magic={ANNOTATIONS: b"PK\x03\x04", IMAGE_NPY: b"\x93NUMPY"})
    if MODEL_DIR in names:
        check_model_folder(folder / MODEL_DIR, "session's model folder")
    return folder


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def autosave_folder(name: str, shape, image_path: str | None = None) -> Path:
    """The autosave folder of one image: readable name + a hash of its path (or name) and shape."""
    key = f"{os.path.abspath(image_path) if image_path else name}|{tuple(int(s) for s in shape)}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image_path).name if image_path else name)[:40] or "image"
    return cache_folder("autosave") / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def find_autosave(name: str, shape, image_path: str | None = None) -> Path | None:
    """The autosave folder of this image if a session was saved there."""
    folder = autosave_folder(name, shape, image_path)
    return folder if (folder / SESSION_JSON).is_file() else None
