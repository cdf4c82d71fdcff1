"""One annotation session: image, scribbles, corrections, model, last prediction, history.

The napari widget keeps one :class:`Session` per image. Everything the user draws lives in
:attr:`Session.scribbles` (scribble convention, corrections included, the very array the
widget shows); :attr:`Session.corrected` marks the voxels that are corrections, i.e. painted
after a prediction was shown (in the scribbles) or repainted directly in the prediction.
:meth:`Session.absorb_edits` folds both kinds of edit into ``y`` and ``w(y)`` before training
or saving, so a stroke is never lost whichever layer it was drawn in.

:meth:`Session.run_round` is the interactive loop's work unit, a generator like
:func:`~napari_sparseseg.core.training.train.Trainer.run`: it trains (warm-starting from the current
model), then predicts, yielding :class:`Progress`; it never mutates the session, so it can run
in a worker thread while the user keeps painting; :meth:`Session.accept` applies the result.

A saved session is a folder: ``session.json`` (format version, image reference, geometry,
class names/colours, settings, history, the boxes and clicks drawn), ``annotations.npz``
(scribbles, correction mask, last prediction), ``model/``
(:mod:`~napari_sparseseg.core.model.checkpoint`) and ``image.npy`` only when the image has no file
to refer to. :meth:`Session.save` builds the whole folder
next to the target and swaps it in with one rename, so an interrupted save leaves the
previous session readable; it writes only into a new or empty folder or a session of ours
(:func:`check_session_folder`), so it never deletes a file of the user's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.annotations.fill import fill_between
from napari_sparseseg.core.annotations.guide import suggest_slices
from napari_sparseseg.core.annotations.hints import checked_hint_shapes, hint_labels, hints_from_shapes
from napari_sparseseg.core.annotations.holdout import holdout_dice
from napari_sparseseg.core.annotations.labels import (
    MAX_CLASSES,
    combine_hints,
    corrections_from_edit,
    label_dtype,
    merge_annotations,
    validate_class_names,
    validate_labels,
)
from napari_sparseseg.core.base.config import PredictConfig, RoundSettings, TrainConfig
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError, InputError, OutputError, ScribbleError, SparseSegError
from napari_sparseseg.core.base.grid import validate_affine, validate_spacing
from napari_sparseseg.core.base.progress import Progress, until_stopped
from napari_sparseseg.core.inference.predict import Prediction, predict
from napari_sparseseg.core.model.checkpoint import (
    CONFIG_NAME,
    MODEL_FILES,
    WEIGHTS_NAME,
    SegModel,
    check_model_folder,
    default_class_names,
    load_model,
    read_tagged_json,
    save_model,
)
from napari_sparseseg.core.model.intensity import validate_image
from napari_sparseseg.core.training.train import Trainer, TrainResult
from napari_sparseseg.io.atomic import check_ours, file_identity, recover_folder, replace_folder

SESSION_FORMAT = 1
SESSION_JSON, ANNOTATIONS, IMAGE_NPY, MODEL_DIR = "session.json", "annotations.npz", "image.npy", "model"


@dataclass
class RoundResult:
    """What one :meth:`Session.run_round` produced (applied with :meth:`Session.accept`).

    Args:
        train: the training result, or ``None`` for a prediction-only round.
        prediction: the dense prediction, or ``None`` if it was cancelled.
        model: the model the prediction came from.
        stopped: ``"training"`` if Stop ended training early, ``"prediction"`` if a second
            Stop cancelled the prediction, else ``None``.
        class_names: the names the round trained with.
        suggestions: where to paint next (:func:`~napari_sparseseg.core.annotations.guide.suggest_slices`
            on the prediction's uncertainty and the strokes), best first; empty without a
            prediction or its uncertainty.
        estimate: with ``settings.estimate``, the Dice per class on the strokes held out of this
            round (:func:`~napari_sparseseg.core.annotations.holdout.holdout_dice`; class index ->
            ``ClassEstimate``); empty otherwise.
    """

    train: TrainResult | None
    prediction: Prediction | None
    model: SegModel
    stopped: str | None
    class_names: list
    suggestions: list = field(default_factory=list)
    estimate: dict = field(default_factory=dict)


@dataclass
class Session:
    """State of one annotation session (see the module docstring).

    Args:
        image: raw intensities (``None`` only while a loaded session waits for its image).
        scribbles: 0 = unlabelled, c + 1 = class c; corrections included.
        class_names: background first.
        spacing: voxel size in mm, array order.
        geometry: the scan's geometry as a plain dict (``io.Geometry.to_dict``), kept for writing.
        image_path: the file or DICOM folder the image came from, if any.
        colors: one colour per class (hex strings), for the viewer.
        corrected: bool mask of correction voxels (``None``: none yet).
        model: the current model.
        prediction: the last prediction as shown (class indices), for detecting edits.
        history: one dict per finished round.
        settings: the round settings (device, model size, time budget...), restored on load.
        hints: pseudo-labels from boxes and clicks (scribble convention,
            :func:`~napari_sparseseg.core.annotations.hints.hint_labels`), or ``None``; rounds train on them
            at low weight under the strokes. Computed when a round starts, not stored.
        hint_shapes: the boxes and clicks the user drew, on the file's grid
            (:func:`~napari_sparseseg.core.annotations.hints.checked_hint_shapes`); stored in
            ``session.json``, so a resumed session shows them again.
    """

    image: np.ndarray | None
    scribbles: np.ndarray
    class_names: list = field(default_factory=lambda: default_class_names(2))
    spacing: tuple = (1.0, 1.0, 1.0)
    geometry: dict | None = None
    image_path: str | None = None
    colors: list | None = None
    corrected: np.ndarray | None = None
    model: SegModel | None = None
    prediction: np.ndarray | None = None
    history: list = field(default_factory=list)
    settings: RoundSettings = field(default_factory=RoundSettings)
    hints: np.ndarray | None = None
    hint_shapes: dict | None = None

    def __post_init__(self):
        # Every field is checked here, so a session built by the widget, the API or load()
        # holds what the rest of the code expects (the checks the command line makes).
        if self.image is not None:
            self.image = validate_image(self.image)
        self.scribbles = validate_labels(self.scribbles, "scribbles", shape=None if self.image is None else self.image.shape)
        shape = self.scribbles.shape
        self.class_names = validate_class_names(self.class_names)
        self.spacing = validate_spacing(self.spacing)
        if self.geometry is not None:
            self.geometry = _checked_geometry(self.geometry, shape)
        if self.image_path is not None:
            if not isinstance(self.image_path, (str, os.PathLike)):
                raise ConfigError(f"image_path must be a path, got {self.image_path!r}.")
            self.image_path = str(self.image_path)
        if self.colors is not None and (not isinstance(self.colors, (list, tuple))
                                        or not all(c is None or isinstance(c, str) for c in self.colors)):
            raise ConfigError(f"colors must be a list of colour names or hex strings, got {self.colors!r}.")
        if not isinstance(self.history, list) or not all(isinstance(h, dict) for h in self.history):
            raise ConfigError(f"history must be a list of dicts (one per round), got {type(self.history).__name__}.")
        if self.model is not None and not isinstance(self.model, SegModel):
            raise CheckpointError(f"model must be a model (load_model or a training result), got {type(self.model).__name__}.")
        if not isinstance(self.settings, RoundSettings):
            self.settings = RoundSettings.from_dict(self.settings)
        if self.hints is not None:
            self.hints = validate_labels(self.hints, "hints", shape=shape)
        self.hint_shapes = checked_hint_shapes(self.hint_shapes)
        if self.corrected is None:
            self.corrected = np.zeros(shape, dtype=bool)
        else:
            self.corrected = np.asarray(self.corrected)
            if self.corrected.shape != shape or self.corrected.dtype != bool:
                raise ScribbleError(f"the correction mask must be boolean with the scribbles' shape {shape}, got "
                                    f"{self.corrected.dtype} {self.corrected.shape}.")
        if self.prediction is not None:
            self.prediction = validate_labels(self.prediction, "prediction", shape=shape, max_value=MAX_CLASSES - 1)
        # The scribbles as they were when the current prediction was shown: voxels painted
        # since then are corrections.
        self._snapshot = None if self.prediction is None else self.scribbles.copy()
        self._model_rev, self._saved_model = 0, {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------- annotations
    @property
    def corrections(self) -> np.ndarray:
        """Corrections in scribble convention (0 elsewhere), as ``Trainer`` takes them."""
        return np.where(self.corrected, self.scribbles, 0).astype(self.scribbles.dtype)

    def absorb_edits(self, edited_prediction: np.ndarray | None = None) -> int:
        """Fold edits made since the last prediction into ``y`` and ``w(y)``.

        * Scribble voxels painted since the prediction was shown become corrections; erased
          ones become unlabelled (and stop being corrections).
        * Voxels whose class the user changed in the prediction layer (``edited_prediction``)
          are written into :attr:`scribbles` as corrections, and the edited prediction becomes
          the reference for the next edit.

        Returns the number of voxels newly marked as corrections.
        """
        before = int(self.corrected.sum())
        if self._snapshot is not None:
            painted = self.scribbles != self._snapshot
            self.corrected |= painted
            self._snapshot[painted] = self.scribbles[painted]  # in place: no new volume per stroke
        if edited_prediction is not None and self.prediction is not None:
            edits = corrections_from_edit(self.prediction, edited_prediction)
            changed = edits > 0
            if changed.any():
                if edits.max() > np.iinfo(self.scribbles.dtype).max:
                    wide = label_dtype(edits.max())
                    self.scribbles = self.scribbles.astype(wide)
                    if self._snapshot is not None:
                        self._snapshot = self._snapshot.astype(wide)
                self.scribbles[changed] = edits[changed]
                self.corrected |= changed
                self.prediction = np.array(edited_prediction, copy=True)
                if self._snapshot is not None:
                    self._snapshot[changed] = self.scribbles[changed]
        self.corrected &= self.scribbles > 0
        return int(self.corrected.sum()) - before

    def labelled_counts(self) -> dict:
        """Labelled voxels per class name, and the number of corrections."""
        values, counts = np.unique(self.scribbles[self.scribbles > 0], return_counts=True)
        names = {int(v): (self.class_names[v - 1] if v - 1 < len(self.class_names) else f"class {v - 1}") for v in values}
        return {"per_class": {names[int(v)]: int(c) for v, c in zip(values, counts, strict=True)}, "corrections": int(self.corrected.sum())}

    # ------------------------------------------------------------- the loop
    def _init_model(self) -> SegModel | None:
        """The model to warm-start from; ``None`` (a fresh one) if the classes changed."""
        if self.model is not None and self.model.num_classes == len(self.class_names):
            return self.model
        return None

    def drawn_hints(self, scribbles: np.ndarray | None = None) -> np.ndarray | None:
        """Pseudo-labels from :attr:`hint_shapes` (``None`` when nothing is drawn).

        The strokes (``scribbles``, corrections included; :attr:`scribbles` if ``None``) retire
        box cores where they contradict or replace them
        (:func:`~napari_sparseseg.core.annotations.hints.hint_labels`).

        Raises:
            InputError: a box corner or click outside the scan.
        """
        boxes, clicks = hints_from_shapes(self.hint_shapes)
        if not boxes and not clicks:
            return None
        painted = self.scribbles if scribbles is None else scribbles
        return hint_labels(self.image, boxes, clicks, self.spacing, painted=painted, num_classes=len(self.class_names))

    def run_round(self, train_cfg: TrainConfig | None = None, predict_cfg: PredictConfig | None = None,
                  stop: threading.Event | None = None, train: bool = True,
                  pretrained=None, preview: bool = False) -> Generator[Progress, None, RoundResult]:
        """Train from the current annotations (warm start), then predict the whole image.

        A new model (no model yet, or the classes changed) starts from ``pretrained``, a
        :class:`~napari_sparseseg.core.training.pretrain.Pretrained` state of this scan, when given.

        Safe to run in a worker thread: works on copies of the annotations and does not change
        the session. ``stop`` set during training ends training within one step (the averaged
        weights so far are kept) and the prediction still runs; set again during prediction, it
        cancels the prediction. ``train=False`` only predicts with the current model.
        ``preview``: a few seconds in, one progress carries the forest's mask
        (:attr:`Progress.preview <napari_sparseseg.core.base.progress.Progress.preview>`) to show
        while the network trains on.

        Raises:
            ScribbleError: no scribbles, one class only, or a class outside the class table.
            SparseSegError: out of GPU memory or a diverging loss, with what to do.
        """
        if self.image is None:
            raise SparseSegError("the session has no image; open the scan first.")
        stop = stop or threading.Event()
        names = list(self.class_names)
        result, stopped = None, None
        scribbles = self.scribbles.copy()  # the user may paint on while this runs
        corrections = self.corrections if self.corrected.any() else None
        hints = self.hints if self.hints is not None else self.drawn_hints(scribbles)
        if train:
            top = int(scribbles.max(initial=0))
            if top > len(names):
                raise ScribbleError(f"the scribbles use value {top} (class {top - 1}) but the class table has only {len(names)} classes; add the class or erase those strokes.")
            if self.settings.fill_between:

                hints = combine_hints(fill_between(scribbles), hints)
            trainer = Trainer(self.image, scribbles, train_cfg, corrections=corrections, init=self._init_model(),
                              spacing=self.spacing, class_names=names, pretrained=pretrained, preview=preview,
                              hints=hints)
            try:
                result, halted = yield from until_stopped(trainer.run(), stop)  # Stop keeps the averaged weights
            except Exception as exc:
                raise _explain(exc) from exc
            stopped = "training" if halted else None
            model = result.model if result is not None else trainer.model
            if result is None:
                hist = model.history[-1] if model.history else {}
                result = TrainResult(model, int(hist.get("steps", 0)), float(hist.get("seconds", 0.0)), "cancelled", [])
            model.class_names = names
            stop.clear()
        else:
            if self.model is None:
                raise SparseSegError("there is no model yet; train one first (or load a model).")
            model = self.model
        # Pseudo-labels anchor their regions (and the CRF) like strokes: a box alone keeps its structure.
        if train:
            annotations = trainer.y
        else:
            annotations = scribbles if hints is None else merge_annotations(scribbles, None, hints)[0]
        try:
            prediction, halted = yield from until_stopped(predict(model, self.image, predict_cfg, annotations, self.spacing),
                                                          stop)
        except Exception as exc:
            raise _explain(exc) from exc
        stopped = "prediction" if halted else stopped
        estimate = {}
        if train and prediction is not None and trainer.heldout is not None:

            estimate = holdout_dice(prediction.labels, trainer.y_all, trainer.heldout, model.num_classes)
        suggestions = []
        if prediction is not None and prediction.uncertainty is not None:

            suggestions = suggest_slices(prediction.labels, prediction.uncertainty, scribbles, self.spacing)  # corrections included
        return RoundResult(result, prediction, model, stopped, names, suggestions, estimate)

    def accept(self, result: RoundResult) -> None:
        """Apply a finished round: new model, new prediction (if any), a history entry."""
        if result.train is not None:
            self.model = result.model
            self._model_rev += 1
            counts = self.labelled_counts()
            self.history.append({
                "round": len(self.history) + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "steps": result.train.steps,
                "seconds": round(result.train.elapsed, 2),
                "stopped_by": result.train.stopped_by,
                "final_loss": result.train.losses[-1] if result.train.losses else None,
                "losses": [round(float(v), 5) for v in result.train.losses],
                "labelled": counts["per_class"],
                "corrections": counts["corrections"],
            })
            if result.estimate:  # Dice on the strokes held out of this round
                self.history[-1]["held_out_dice"] = {
                    (result.class_names[c] if c < len(result.class_names) else str(c)):
                        [round(e.dice, 4), None if np.isnan(e.spread) else round(e.spread, 4), e.pieces]
                    for c, e in result.estimate.items()}
        if result.prediction is not None:
            self.set_prediction(result.prediction.labels)

    def set_prediction(self, labels: np.ndarray) -> None:
        """The prediction now shown: edits to it, and strokes painted from now on, are corrections."""
        self.prediction = np.array(labels, copy=True)
        self._snapshot = self.scribbles.copy()

    def set_model(self, model: SegModel) -> None:
        """Use a loaded model; its class names become the session's if the counts agree."""
        if len(self.class_names) != model.num_classes:
            raise CheckpointError(
                f"the model has {model.num_classes} classes ({', '.join(model.class_names)}) but the session has "
                f"{len(self.class_names)}; edit the class table to match or train a new model."
            )
        self.model = model
        self._model_rev += 1

    # ------------------------------------------------------------- save/load
    def save(self, folder, include_image: bool | None = None) -> Path:
        """Write the session to ``folder`` in one rename (see :func:`~napari_sparseseg.io.atomic.replace_folder`).

        ``folder`` must be new, empty, or a session of ours (:func:`check_session_folder`); its
        parent folders are created. The whole folder is built next to it and swapped in, so an
        interrupted save leaves the previous session as it was. The model and image files are
        written only when they changed since the last save to this folder; otherwise they are
        hard-linked (or copied) from it, so an autosave stays cheap. The image is stored
        (``image.npy``) when it has no :attr:`image_path` or ``include_image`` is true.
        Thread-safe.

        Args:
            folder: the session folder.
            include_image: store the image even if it has a file (default: only if it has none).

        Returns:
            ``folder`` (a link's target if ``folder`` is a link to a folder).

        Raises:
            OutputError: the folder holds files that are not a session of ours, or it cannot
                be written (the previous session is then unchanged).
        """
        folder = Path(folder)
        with self._lock:
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the folder {folder.parent} ({exc.strerror or exc}); choose a writable "
                                  "folder.", path=folder) from exc
            check_session_folder(folder)
            key = str(folder.resolve())
            done = vars(self).setdefault("_saved_files", {}).get(key, {})
            arrays = {"scribbles": self.scribbles, "corrected": np.packbits(self.corrected)}
            if self.prediction is not None:
                arrays["prediction"] = self.prediction
            store_image = bool((include_image if include_image is not None else not self.image_path)
                               and self.image is not None)
            old_image, old_model = folder / IMAGE_NPY, folder / MODEL_DIR
            reuse_image = store_image and old_image.is_file() and (
                done.get("image") == file_identity(old_image) or self._same_image_on_disk(old_image))
            reuse_model = (self.model is not None and self._saved_model.get(key) == self._model_rev
                           and all((old_model / n).is_file() for n in (CONFIG_NAME, WEIGHTS_NAME))
                           and done.get("model", file_identity(old_model / WEIGHTS_NAME)) == file_identity(old_model / WEIGHTS_NAME))
            meta = {
                "format_version": SESSION_FORMAT,
                "package": "napari-sparseseg",
                "package_version": __version__,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "image_path": self.image_path,
                "image_stored": store_image,
                "shape": list(self.scribbles.shape),
                "spacing": list(self.spacing),
                "geometry": self.geometry,
                "class_names": list(self.class_names),
                "colors": self.colors,
                "has_model": self.model is not None,
                "history": self.history,
                "settings": self.settings.to_dict(),
                "hints": self.hint_shapes,
            }

            def build(tmp: Path) -> None:
                with open(tmp / ANNOTATIONS, "wb") as f:
                    np.savez_compressed(f, **arrays)
                if store_image:
                    if reuse_image:
                        _link_or_copy(old_image, tmp / IMAGE_NPY)
                    else:
                        with open(tmp / IMAGE_NPY, "wb") as f:
                            np.save(f, self.image)
                if self.model is not None:
                    if reuse_model:
                        (tmp / MODEL_DIR).mkdir()
                        for name in MODEL_FILES:  # the forest is optional
                            if (old_model / name).is_file():
                                _link_or_copy(old_model / name, tmp / MODEL_DIR / name)
                    else:
                        save_model(self.model, tmp / MODEL_DIR)
                (tmp / SESSION_JSON).write_text(json.dumps(meta, indent=1))  # last: a complete folder is a session

            try:
                out = replace_folder(folder, build, check=check_session_folder)
            except OutputError:
                raise
            except OSError as exc:
                raise OutputError(f"cannot save the session ({exc.strerror or exc}); choose a writable folder.",
                                  path=folder) from exc
            if self.model is not None:
                self._saved_model[key] = self._model_rev
            vars(self)["_saved_files"][key] = {"image": file_identity(out / IMAGE_NPY),
                                               "model": file_identity(out / MODEL_DIR / WEIGHTS_NAME)}
        return out

    def _same_image_on_disk(self, path: Path) -> bool:
        """Whether ``path`` (an ``image.npy``) holds exactly :attr:`image`."""
        try:
            arr = np.load(path, mmap_mode="r")
            return arr.shape == self.image.shape and arr.dtype == self.image.dtype and bool(np.array_equal(arr, self.image))
        except (OSError, ValueError):
            return False

    @classmethod
    def load(cls, folder, image: np.ndarray | None = None, device: str = "cpu") -> Session:
        """Read a session folder written by :meth:`save`.

        The image comes from ``image`` if given, else from ``image.npy`` if the session stored
        it; otherwise :attr:`image` is ``None`` and the caller reads :attr:`image_path`.

        Raises:
            CheckpointError: not a session folder, another format version, or a damaged file,
                named: ``session.json`` with a field of the wrong type (see
                :func:`read_session_info`), ``annotations.npz`` truncated or not a zip, an
                array missing or of the wrong shape/type/values, ``image.npy`` unreadable or
                not a usable image, the saved model missing or damaged.
            InputError: ``image`` is not a usable image (not 3-D, NaN/inf...).
            ScribbleError: ``image`` does not match the session's shape.
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
            s = cls(image, scribbles, list(meta["class_names"]), tuple(meta.get("spacing", (1, 1, 1))), meta.get("geometry"),
                    meta.get("image_path"), meta.get("colors"), corrected, model, prediction, list(meta.get("history", [])),
                    RoundSettings.from_dict(meta.get("settings"), lenient=True), hint_shapes=meta.get("hints"))
        except (InputError, ConfigError) as exc:
            raise CheckpointError(f"corrupt session: {exc.message}", path=folder) from exc
        s._saved_model[str(folder.resolve())] = s._model_rev
        return s


def _read_annotations(folder: Path, shape: tuple) -> tuple:
    """``(scribbles, corrected, prediction)`` from ``annotations.npz``, every array checked."""
    path = folder / ANNOTATIONS
    if not path.is_file():
        raise CheckpointError(f"corrupt session: {ANNOTATIONS} is missing; copy the whole session folder again.", path=folder)
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
    n = int(np.prod(shape))
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


def _read_stored_image(folder: Path, shape: tuple) -> np.ndarray:
    """The image the session stored (``image.npy``), checked like any image."""
    path = folder / IMAGE_NPY
    if not path.is_file():
        raise CheckpointError(f"corrupt session: {SESSION_JSON} says the image was stored but {IMAGE_NPY} is missing; open "
                              "the scan and load the session again, or copy the whole session folder.", path=folder)
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


def _checked_geometry(geometry, shape: tuple) -> dict:
    """A geometry dict (``io.Geometry.to_dict``): a finite, invertible 4x4 affine and the session's shape.

    Raises:
        InputError: another structure, an unusable affine, or another shape.
    """
    if not isinstance(geometry, dict) or "affine" not in geometry:
        raise InputError(f"the geometry must be a dict with an 'affine' (4x4) and a 'shape', got {type(geometry).__name__}.")
    affine = validate_affine(geometry["affine"])
    gshape = geometry.get("shape", list(shape))
    if not isinstance(gshape, (list, tuple)) or tuple(gshape) != tuple(shape):
        raise InputError(f"the geometry is for shape {gshape}, the scribbles have {tuple(shape)}.")
    return {**geometry, "affine": affine.tolist(), "shape": list(shape)}


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
        raise bad(f"shape is {shape!r}; it must be 3 positive whole numbers.")
    try:
        validate_class_names(meta.get("class_names"))
        validate_spacing(meta.get("spacing", (1.0, 1.0, 1.0)))
        if meta.get("geometry") is not None:
            _checked_geometry(meta["geometry"], tuple(shape))
    except (InputError, ConfigError) as exc:
        raise bad(exc.message) from exc
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad(f"history is {type(history).__name__}; it must be a list of rounds.")
    if meta.get("image_path") is not None and not isinstance(meta["image_path"], str):
        raise bad(f"image_path is {meta['image_path']!r}; it must be a path.")
    colors = meta.get("colors")
    if colors is not None and (not isinstance(colors, list) or not all(c is None or isinstance(c, str) for c in colors)):
        raise bad(f"colors is {colors!r}; it must be a list of colours.")
    for flag in ("has_model", "image_stored"):
        if flag in meta and not isinstance(meta[flag], bool):
            raise bad(f"{flag} is {meta[flag]!r}; it must be true or false.")
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
                       "save the session into a new or empty folder, or one saved by napari-sparseseg")
    if MODEL_DIR in names:
        check_model_folder(folder / MODEL_DIR, "session's model folder")
    return folder


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _explain(exc: BaseException) -> BaseException:
    """Turn low-level failures into errors that say what to do."""
    if isinstance(exc, SparseSegError):
        return exc
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return SparseSegError("out of GPU memory; choose a smaller model size, a shorter time budget or the CPU device, then train again.")
    return SparseSegError(f"training failed ({type(exc).__name__}: {text}); your annotations are kept. Try again, or report this with the session folder.")


# ----------------------------------------------------------------- autosave
def autosave_root() -> Path:
    """``$SPARSESEG_AUTOSAVE_DIR``, else ``$XDG_CACHE_HOME/napari-sparseseg/autosave`` (``~/.cache``)."""
    env = os.environ.get("SPARSESEG_AUTOSAVE_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "napari-sparseseg" / "autosave"


def autosave_folder(name: str, shape, image_path: str | None = None) -> Path:
    """The autosave folder of one image: readable name + a hash of its path (or name) and shape."""
    key = f"{os.path.abspath(image_path) if image_path else name}|{tuple(int(s) for s in shape)}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image_path).name if image_path else name)[:40] or "image"
    return autosave_root() / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def find_autosave(name: str, shape, image_path: str | None = None) -> Path | None:
    """The autosave folder of this image if a session was saved there."""
    folder = autosave_folder(name, shape, image_path)
    return folder if (folder / SESSION_JSON).is_file() else None
