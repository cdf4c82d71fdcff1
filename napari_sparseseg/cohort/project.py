"""A cohort on disk: its scans, the shared model, each scan's correction strokes, the batch outputs.

The Cohort widget is a view of this; everything is saved in one folder and resumes from it::
    FOLDER/cohort.json            scan list, reviewed flags, format tag
    FOLDER/model/                 the cohort's own copy of the shared model (Refine replaces it)
    FOLDER/strokes/NAME_strokes.nii.gz   corrections painted on scan NAME (scribble convention,
                                  on the scan's grid)
    FOLDER/NAME_mask.nii.gz, sparseseg_summary.json/.csv   the batch outputs (:mod:`.batch`)

The model the user picks is copied in, never modified. Corrections are the voxels where the
user's edit of a predicted mask differs from the prediction: they become that scan's strokes
with the edited class (scribble value ``class + 1``). Refine trains the shared model on the
scans with corrections (:class:`~napari_sparseseg.core.training.train.Trainer` with ``more_scans``),
warm-started from the current one: on each, the corrections weigh as corrections
(``w_correction``) and the rest of that scan's mask as ordinary strokes, since the reader
left it standing; corrections alone (often one class, no background) would teach the model
that the corrected class is everywhere. The re-run then segments every scan not marked
reviewed.
A reviewed scan's mask is the one the user accepted and is not run again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_sparseseg.cohort.batch import BatchPlan, plan_batch, read_summary
from napari_sparseseg.core.annotations.labels import corrections_from_edit
from napari_sparseseg.core.base.config import MAX_COHORT_SCANS, BatchConfig, TrainConfig
from napari_sparseseg.core.base.errors import InputError, OutputError, ScribbleError
from napari_sparseseg.core.model.checkpoint import MODEL_FILES
from napari_sparseseg.core.model.intensity import check_model_modality
from napari_sparseseg.core.training.train import Trainer, TrainingScan
from napari_sparseseg.io import read_image, read_labels, write_labels
from napari_sparseseg.io.atomic import atomic_file, replace_folder
from napari_sparseseg.io.cohort import ScanEntry, expand_inputs, free_name
from napari_sparseseg.io.models import check_model_folder, load_model, save_model
from napari_sparseseg.io.names import check_name, check_unique, confined, refuse_link
from napari_sparseseg.io.schema import Anything, Flag, ListOf, MapOf, Record, Text, parse, read_json, show, spec

__all__ = ["COHORT_FILE", "Cohort", "CohortScan"]

COHORT_FILE = "cohort.json"
_FORMAT, _VERSION = "napari-sparseseg cohort", 1


@dataclass
class CohortScan:
    """One scan of a cohort: where it is, its name, whether the user accepted its mask.

    Each field's ``spec`` is how a scan of ``cohort.json`` is read back (:meth:`Cohort.open`).
    """

    image: str = spec(Text(nonempty=True, what="the path of the scan (text)"))
    name: str = spec(Text(nonempty=True, check=check_name, what="a plain name (text) for the scan's outputs"))
    reviewed: bool = spec(Flag(), default=False)


@dataclass(frozen=True)
class _CohortFile:
    """What ``cohort.json`` holds besides its format tag."""

    scans: list = spec(ListOf(Record(CohortScan, "a scan {image, name, reviewed}"), max_items=MAX_COHORT_SCANS,
                              what=f"a list of at most {MAX_COHORT_SCANS} scans"))
    history: list = spec(ListOf(MapOf(Anything()), max_items=MAX_COHORT_SCANS, what="a list of refine records"),
                         factory=list)


@dataclass
class Cohort:
    """A cohort folder (see the module docstring). Use :meth:`create` or :meth:`open`."""

    folder: Path
    scans: list[CohortScan] = field(default_factory=list)
    history: list = field(default_factory=list)

    # ------------------------------------------------------------------ files
    @property
    def model_dir(self) -> Path:
        """The cohort's shared model."""
        return self.folder / "model"

    def strokes_path(self, name: str) -> Path:
        """Where scan ``name``'s correction strokes are kept."""
        return self.folder / "strokes" / f"{check_name(name)}_strokes.nii.gz"

    def mask_path(self, name: str) -> Path:
        """Scan ``name``'s mask (written by the batch, or accepted by the user)."""
        return self.folder / f"{check_name(name)}_mask.nii.gz"

    @classmethod
    def create(cls, folder: str | os.PathLike, model_dir: str | os.PathLike) -> Cohort:
        """A new cohort in ``folder`` (new or empty) with a copy of the model in ``model_dir``.

        Raises:
            OutputError: the folder is not new or empty (an existing cohort: use :meth:`open`).
            CheckpointError: ``model_dir`` does not hold a model that loads.
        """
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            what = "an existing cohort; open it instead" if (folder / COHORT_FILE).is_file() else "not empty"
            raise OutputError(f"the cohort folder is {what} (a new cohort needs a new or empty folder).", path=folder)
        load_model(model_dir)  # fails here, naming the folder, if it does not load
        folder.mkdir(exist_ok=True)
        cohort = cls(folder)
        cohort.set_model(model_dir)
        cohort.save()
        return cohort

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Cohort:
        """The cohort saved in ``folder``.

        ``cohort.json`` is read through :mod:`napari_sparseseg.io.schema` (``MAX_JSON_BYTES``,
        ``MAX_COHORT_SCANS`` scans, each a :class:`CohortScan`).

        Raises:
            InputError: no cohort there, or its file is not ours or damaged (names the field and
                says what to do); nothing is changed.
        """
        folder = Path(folder)
        path = folder / COHORT_FILE
        if not os.path.lexists(path):
            raise InputError("no cohort here (no cohort.json); create one in a new or empty folder.", path=folder)
        fresh = ("so it is not trusted and nothing was changed; create a new cohort in a new or empty folder (or "
                 "restore this folder's cohort.json from a copy)")
        try:
            data = read_json(path, "cohort file")
        except InputError as exc:
            raise InputError(f"not a napari-sparseseg cohort file ({exc.message.rstrip('.')}), {fresh}.",
                             path=path) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise InputError(f"not a napari-sparseseg cohort file (no \"format\": \"{_FORMAT}\"), {fresh}.", path=path)
        if data.get("format_version") != _VERSION:
            raise InputError(f"a cohort file of format_version {show(data.get('format_version'))}; this version of "
                             f"napari-sparseseg reads {_VERSION} only, {fresh}.", path=path)
        try:
            content = parse(Record(_CohortFile), data, "cohort file", path=path)
        except InputError as exc:
            raise InputError(f"the cohort file is damaged ({exc.message.removeprefix('in the cohort file, ').rstrip('.')}), "
                             f"{fresh}.", path=path) from None
        scans = content.scans
        for s in scans:  # a name is a plain file-name part: its mask and strokes stay in the cohort folder
            check_name(s.name, "scan name in the cohort file", path=path)
        check_unique([s.name for s in scans], path=path)
        cohort = cls(folder, scans, content.history)
        cohort.check_layout()
        return cohort

    def check_layout(self) -> None:
        """Refuse a ``model/`` or ``strokes/`` that is a symbolic link (Refine and corrections would write outside).

        Checked on :meth:`open` and before every write.

        Raises:
            OutputError: names the link.
        """
        refuse_link(self.model_dir, "cohort's model folder")
        refuse_link(self.folder / "strokes", "cohort's strokes folder")
        if (self.folder / "strokes").exists() and not (self.folder / "strokes").is_dir():
            raise OutputError("the cohort's strokes folder is a file; move it away.", path=self.folder / "strokes")

    def save(self) -> Path:
        """Write ``cohort.json`` atomically (the widget calls this after every change)."""
        data = {"format": _FORMAT, "format_version": _VERSION, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "scans": [vars(s) for s in self.scans], "history": self.history}
        return atomic_file(self.folder / COHORT_FILE, lambda f: f.write(json.dumps(data, indent=1)), mode="w")

    def set_model(self, model_dir: str | os.PathLike) -> None:
        """Copy the model in ``model_dir`` into the cohort (replacing the cohort's own copy atomically)."""
        src = Path(model_dir)
        self.check_layout()
        if src.resolve() == self.model_dir.resolve():
            return
        check_model_folder(self.model_dir, "cohort model folder")

        def build(tmp: Path) -> None:
            for name in MODEL_FILES:
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)

        replace_folder(self.model_dir, build, check=lambda f: check_model_folder(f, "cohort model folder"))

    # ------------------------------------------------------------------ scans
    def add(self, inputs) -> list[CohortScan]:
        """Add the scans ``inputs`` names (files, folders, globs, a manifest); return the new ones.

        A scan already in the cohort is not added twice; a new scan whose name is taken gets
        its parent folder's name in front.
        """
        have = {os.path.realpath(s.image) for s in self.scans}
        entries = [e for e in expand_inputs(inputs) if os.path.realpath(e.image) not in have]
        names = {s.name.casefold() for s in self.scans}
        new = []
        for e in entries:
            name = check_name(free_name(e.image, e.name, names), path=e.image)
            names.add(name.casefold())
            new.append(CohortScan(str(Path(e.image).resolve()), name))
        self.scans += new
        if new:
            self.save()
        return new

    def scan(self, name: str) -> CohortScan:
        """The scan called ``name``."""
        for s in self.scans:
            if s.name == name:
                return s
        raise KeyError(name)

    def entries(self, only_unreviewed: bool = False) -> list[ScanEntry]:
        """The scans as batch entries (with their strokes, when they have some)."""
        return [ScanEntry(Path(s.image), s.name, self.strokes_path(s.name) if self.strokes_path(s.name).is_file() else None)
                for s in self.scans if not (only_unreviewed and s.reviewed)]

    def plan(self, cfg: BatchConfig | None = None, names=None) -> BatchPlan:
        """The batch over the scans not reviewed (or ``names``): the cohort's own masks are replaced.

        The per-scan strokes are not used to fine-tune here (Refine puts them into the shared model).
        """
        self.check_layout()
        entries = [ScanEntry(Path(s.image), s.name) for s in self.scans
                   if not s.reviewed and (names is None or s.name in names)]
        return plan_batch(entries, self.model_dir, self.folder, replace(cfg or BatchConfig(), overwrite=True))

    def summary(self) -> dict:
        """The batch summary by scan name (``{}`` before the first run)."""
        data = read_summary(self.folder) or {}
        return {s["name"]: s for s in data.get("scans", [])}

    # ------------------------------------------------------------------ corrections and review
    def add_corrections(self, name: str, predicted: np.ndarray, edited: np.ndarray, geometry) -> int:
        """Record the voxels where ``edited`` differs from ``predicted`` as scan ``name``'s strokes.

        They are merged into its earlier strokes (the newest edit wins) and saved atomically.

        Returns:
            The number of stroke voxels the scan now has.
        """
        self.check_layout()
        new = corrections_from_edit(predicted, edited)
        path = confined(self.folder / "strokes", self.strokes_path(name).name, f"strokes of scan '{name}'")
        if path.is_file():
            old, _ = read_labels(path, like=geometry, what="strokes")
            new = np.where(new > 0, new, old).astype(np.promote_types(new.dtype, old.dtype))
        path.parent.mkdir(exist_ok=True)
        write_labels(path, new, geometry)
        return int((new > 0).sum())

    def mark_reviewed(self, name: str, labels: np.ndarray | None = None, geometry=None) -> None:
        """Accept scan ``name``'s mask (``labels``, if given, replaces it); later runs leave it alone."""
        if labels is not None:
            self.check_layout()
            write_labels(confined(self.folder, self.mask_path(name).name, f"mask of scan '{name}'"), labels, geometry)
        self.scan(name).reviewed = True
        self.save()

    # ------------------------------------------------------------------ refine
    def refine_trainer(self, cfg: TrainConfig | None = None):
        """A :class:`~napari_sparseseg.core.training.train.Trainer` on the strokes of every scan, from the shared model.

        Raises:
            ScribbleError: no scan has strokes yet (paint corrections first).
        """
        scans, model = [], load_model(self.model_dir)
        for s in self.scans:
            path = self.strokes_path(s.name)
            if not path.is_file():
                continue
            image, geom = read_image(s.image)
            check_model_modality(image, model.normalization.modality, s.image)
            strokes, _ = read_labels(path, like=geom, what="strokes")
            mask_path = self.mask_path(s.name)
            if mask_path.is_file():  # the mask the reader corrected: the rest of it stands
                mask, _ = read_labels(mask_path, like=geom, what="mask")
                scans.append(TrainingScan(image, mask.astype(np.uint16) + 1, strokes, geom.spacing, s.image))
            else:
                scans.append(TrainingScan(image, strokes, None, geom.spacing, s.image))
        if not scans:
            raise ScribbleError("no scan has corrections yet; open a scan, correct its mask, then Refine.")
        first = scans[0]
        return Trainer(first.image, first.scribbles, cfg or TrainConfig(), corrections=first.corrections,
                       init=model, spacing=first.spacing, more_scans=scans[1:])

    def save_refined(self, model, steps: int, seconds: float) -> None:
        """Replace the cohort's model with the refined one and note it in the history."""
        self.check_layout()
        save_model(model, self.model_dir)
        self.history.append({"refined": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": int(steps),
                             "seconds": round(float(seconds), 1),
                             "scans_with_strokes": [s.name for s in self.scans if self.strokes_path(s.name).is_file()]})
        self.save()

