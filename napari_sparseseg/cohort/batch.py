"""One model over a cohort: plan the outputs, skip what is done, run on Dask, write the summary.

:func:`plan_batch` does every check before any work: the model folder loads, the out-dir is
writable, no output is an input, and no existing file is replaced unless ``overwrite`` is
set. A scan whose mask exists from an earlier run with the same model, settings and
unchanged inputs (sizes and modification times of its files) is skipped. :func:`run_batch`
is a generator over the scans as they finish (:class:`ScanResult`); it writes the summary
(``sparseseg_summary.json`` and ``.csv`` in the out-dir) atomically before the first scan and
after every scan, so an interrupted run resumes where it stopped: on Ctrl-C the running scans
are recorded ``"interrupted"`` (not done; the rerun replaces what their workers wrote).

With ``cfg.dicom_seg`` a scan that is a DICOM series folder also gets ``NAME_mask.dcm`` (and,
with ``cfg.probabilities``, ``NAME_probabilities.dcm``): DICOM SEGs that reference its series,
their segments labelled with the model's class names. A scan that is not a DICOM series gets
its NIfTI outputs only, and its record a ``note`` saying why it has no SEG.

Dask does the scheduling (:mod:`.cluster`): at most one scan per worker is in flight, so
Stop (``stop`` event) lets the running scans finish and leaves the rest queued.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_sparseseg.cohort.cluster import DaskRunner
from napari_sparseseg.cohort.summary import CLASS_ROWS, review_ranks
from napari_sparseseg.cohort.work import ModelPayload, ScanTask, process_scan
from napari_sparseseg.core.annotations.labels import MAX_CLASSES
from napari_sparseseg.core.base.config import MAX_COHORT_SCANS, MAX_STEPS, BatchConfig
from napari_sparseseg.core.base.errors import CheckpointError, InputError, OutputError
from napari_sparseseg.io.atomic import atomic_file
from napari_sparseseg.io.cohort import ScanEntry
from napari_sparseseg.io.csvsafe import csv_text
from napari_sparseseg.io.dicom_seg import require_highdicom
from napari_sparseseg.io.models import load_model
from napari_sparseseg.io.names import check_name, check_unique, confined, remove_stale_temps
from napari_sparseseg.io.outputs import check_outputs, files_of_input
from napari_sparseseg.io.schema import (
    Anything,
    Choice,
    Flag,
    ListOf,
    MapOf,
    Maybe,
    Number,
    Record,
    Text,
    parse,
    read_json,
    show,
    spec,
)

__all__ = ["NO_SEG_NOTE", "SUMMARY_CSV", "SUMMARY_JSON", "BatchPlan", "ScanJob", "ScanResult", "SummaryError", "plan_batch",
           "run_batch",
           "read_summary"]

SUMMARY_JSON, SUMMARY_CSV = "sparseseg_summary.json", "sparseseg_summary.csv"
_STATUSES = ("done", "skipped", "failed", "queued", "interrupted")
_FORMAT, _FORMAT_VERSION = "napari-sparseseg batch summary", 1
_CSV_COLUMNS = ("scan", "status", "review_rank", "class", "volume_ml", "voxels", "components", "mean_uncertainty",
                "p95_uncertainty", "fine_tuned", "seconds", "mask", "dicom_seg", "image", "reason", "note")
#: The ``note`` of a ``--dicom-seg`` batch's scan that is not a DICOM series.
NO_SEG_NOTE = "no DICOM SEG written: the scan is not a DICOM series (a SEG must reference one); NIfTI mask only"


@dataclass
class ScanJob:
    """A scan of the plan: its entry, its outputs, and whether an earlier run already did it."""

    entry: ScanEntry
    mask: Path
    probabilities: Path | None
    inputs_id: str
    done_before: dict | None = None  # the earlier run's record when the scan is skipped
    dicom_seg: Path | None = None  # NAME_mask.dcm (a --dicom-seg batch's DICOM series scan)
    dicom_seg_probabilities: Path | None = None  # NAME_probabilities.dcm (the same, with probabilities)
    note: str | None = None  # e.g. why a --dicom-seg batch writes no SEG for this scan

    @property
    def outputs(self) -> list[Path]:
        """Every file this scan's run writes."""
        return [p for p in (self.mask, self.probabilities, self.dicom_seg, self.dicom_seg_probabilities) if p is not None]

    def task(self) -> ScanTask:
        """What travels to the worker: absolute paths only."""
        e = self.entry

        def absolute(path) -> str | None:
            return None if path is None else str(Path(path).resolve())

        return ScanTask(e.name, absolute(e.image), absolute(self.mask), absolute(self.probabilities),
                        absolute(e.scribbles), absolute(e.corrections), absolute(self.dicom_seg),
                        absolute(self.dicom_seg_probabilities))


_TEXT = Maybe(Text())
_SCAN_NAME = Text(nonempty=True, check=check_name, what="a scan name (a plain part of a file name)")


@dataclass
class ScanResult:
    """A scan's outcome.

    ``"done"``, ``"skipped"`` (done by an earlier run), ``"failed"``, ``"queued"`` (not
    started) or ``"interrupted"`` (it was running when the batch was stopped by Ctrl-C: not done).
    Each field's ``spec`` is how a record of ``sparseseg_summary.json`` is read back
    (:func:`read_summary`, through :mod:`napari_sparseseg.io.schema`).
    """

    name: str = spec(_SCAN_NAME)
    status: str = spec(Choice(_STATUSES))
    reason: str | None = spec(Maybe(Text(max_chars=None)), default=None)
    seconds: float | None = spec(Maybe(Number(ge=0)), default=None)
    worker: str | None = spec(_TEXT, default=None)
    classes: dict | None = spec(Maybe(CLASS_ROWS), default=None)
    fine_tuned: bool = spec(Flag(), default=False)
    steps: int = spec(Number(ge=0, le=MAX_STEPS, whole=True), default=0)
    image: str = spec(Text(), default="")
    mask: str | None = spec(_TEXT, default=None)
    probabilities: str | None = spec(_TEXT, default=None)
    dicom_seg: str | None = spec(_TEXT, default=None)
    dicom_seg_probabilities: str | None = spec(_TEXT, default=None)
    note: str | None = spec(Maybe(Text(max_chars=None)), default=None)
    inputs_id: str = spec(Text(max_chars=128), default="")
    model_id: str = spec(Text(max_chars=128), default="")
    settings_id: str = spec(Text(max_chars=128), default="")
    review_rank: int | None = spec(Maybe(Number(ge=1, whole=True)), default=None)
    finished: str | None = spec(_TEXT, default=None)


@dataclass(frozen=True)
class _Summary:
    """What of a summary is read back: the scans (checked one by one) and the class names."""

    scans: list = spec(ListOf(Record(ScanResult, "a scan record {name, status, ...}"), max_items=MAX_COHORT_SCANS,
                              what=f"a list of at most {MAX_COHORT_SCANS} scan records"))
    class_names: list | None = spec(Maybe(ListOf(Text(max_chars=256), max_items=MAX_CLASSES)), default=None)
    model: str | None = spec(_TEXT, default=None)
    model_id: str | None = spec(_TEXT, default=None)
    modality: str | None = spec(_TEXT, default=None)
    settings: dict | None = spec(Maybe(MapOf(Anything(), max_items=256)), default=None)
    counts: dict | None = spec(Maybe(MapOf(Number(ge=0, whole=True), max_items=16)), default=None)


class SummaryError(OutputError):
    """An earlier ``sparseseg_summary.json`` that is not trusted.

    ``foreign``: not ours at all (not JSON within the limits, no format tag, another format
    version): never replaced, not even with ``overwrite``. Otherwise ours but damaged: replaced
    only with ``overwrite``.
    """

    def __init__(self, message: str, path, foreign: bool):
        super().__init__(message, path=path)
        self.foreign = foreign


@dataclass
class BatchPlan:
    """Everything checked before a batch starts."""

    out_dir: Path
    model_dir: Path
    cfg: BatchConfig
    payload: ModelPayload
    class_names: list
    modality: str
    jobs: list[ScanJob] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)  # earlier records of scans not in this batch, kept in the summary
    created: bool = False  # plan_batch made the out-dir (removed again, if still empty, when the cluster cannot be reached)

    @property
    def to_run(self) -> list[ScanJob]:
        """The scans this run segments."""
        return [j for j in self.jobs if j.done_before is None]

    @property
    def skipped(self) -> list[ScanJob]:
        """The scans an earlier run already did (same model, settings and inputs)."""
        return [j for j in self.jobs if j.done_before is not None]

    @property
    def without_seg(self) -> list[ScanJob]:
        """With ``cfg.dicom_seg``: the scans that get no DICOM SEG because they are not DICOM series."""
        return [j for j in self.jobs if self.cfg.dicom_seg and j.dicom_seg is None]


def _model_payload(folder: Path) -> ModelPayload:
    files, h = {}, hashlib.sha256()
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.is_file() and not p.name.startswith("."):
            data = p.read_bytes()
            files[p.name] = data
            h.update(p.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return ModelPayload(h.hexdigest(), files)


def _inputs_id(entry: ScanEntry) -> str:
    """Changes when any file of the scan or its strokes is replaced, resized or rewritten."""
    h = hashlib.sha256()
    for role, path in (("image", entry.image), ("scribbles", entry.scribbles), ("corrections", entry.corrections)):
        if path is None:
            continue
        h.update(role.encode())
        for p in files_of_input(path):
            members = sorted(p.iterdir()) if p.is_dir() else [p]
            for m in members:
                st = m.stat()
                h.update(f"{m.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _settings_id(cfg: BatchConfig, entry: ScanEntry) -> str:
    """The settings that change a scan's mask (not workers, threads or retries)."""
    keys = {"refine": cfg.refine, "forest": cfg.forest, "probabilities": cfg.probabilities}
    if cfg.precision != "auto":  # auto: the ids of batches run before the option existed still hold
        keys["precision"] = cfg.precision
    if entry.scribbles is not None:
        keys.update(fine_tune_seconds=cfg.fine_tune_seconds, seed=cfg.seed)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def read_summary(out_dir: str | os.PathLike) -> dict | None:
    """The summary an earlier batch wrote in ``out_dir`` (``None`` if there is none), every record checked.

    Read through :mod:`napari_sparseseg.io.schema`: at most ``MAX_JSON_BYTES`` and
    ``MAX_COHORT_SCANS`` records, each a :class:`ScanResult` (a plain scan name, a known status,
    per-class rows of numbers...). Returns the file's content with ``"scans"`` as checked records
    (dicts, every field present).

    Raises:
        SummaryError: (an :class:`OutputError`) ``sparseseg_summary.json`` exists but is not ours
            (``foreign``: never trusted nor replaced) or is damaged (names the field); the message
            says how to start fresh. Nothing is changed.
    """
    path = Path(out_dir) / SUMMARY_JSON
    if not os.path.lexists(path):
        return None
    fresh = "choose a new --out-dir to start fresh"
    foreign = (f"so it is not trusted and nothing was changed; {fresh} (or move the file away: napari-sparseseg "
               "never replaces a file it did not write)")
    try:
        data = read_json(path, "batch summary", error=OutputError)
    except OutputError as exc:
        raise SummaryError(f"this is not a batch summary napari-sparseseg wrote ({exc.message.rstrip('.')}), {foreign}.",
                           path, foreign=True) from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise SummaryError(f"this is not a batch summary napari-sparseseg wrote (no \"format\": \"{_FORMAT}\"), "
                           f"{foreign}.", path, foreign=True)
    if data.get("format_version") != _FORMAT_VERSION:
        raise SummaryError(f"this batch summary has format_version {show(data.get('format_version'))}; this version of "
                           f"napari-sparseseg reads {_FORMAT_VERSION} only, {foreign}.", path, foreign=True)
    try:
        summary = parse(Record(_Summary), data, "batch summary", path=path, error=OutputError)
    except OutputError as exc:
        raise SummaryError(f"this batch summary is damaged ({exc.message.removeprefix('in the batch summary, ').rstrip('.')})"
                           f", so it is not trusted and nothing was changed; {fresh}, or pass --overwrite to segment "
                           "the scans again and replace it.", path, foreign=False) from None
    return {**data, "scans": [asdict(r) for r in summary.scans]}


def _load_model_info(model_dir: Path) -> tuple[ModelPayload, list, str]:

    if not model_dir.is_dir():
        raise CheckpointError("not a model folder (missing or a file); give a folder written by --model-out or the "
                              "widget's Save model.", path=model_dir)
    payload = _model_payload(model_dir)
    model = load_model(model_dir)  # raises CheckpointError naming the folder
    return payload, list(model.class_names), model.normalization.modality


def plan_batch(entries: Sequence[ScanEntry], model_dir: str | os.PathLike, out_dir: str | os.PathLike,
               cfg: BatchConfig | None = None) -> BatchPlan:
    """Check everything and decide, per scan, whether it runs or was done by an earlier run.

    The out-dir is created if missing (its parent must exist). Outputs per scan:
    ``NAME_mask.nii.gz`` and, with ``cfg.probabilities``, ``NAME_probabilities.nii.gz``; with
    ``cfg.dicom_seg``, a scan that is a DICOM series folder also gets ``NAME_mask.dcm`` (and
    ``NAME_probabilities.dcm``), DICOM SEGs of its series.

    A scan is skipped as done when an earlier run did it with the same model, settings and
    inputs and all its outputs are there, a SEG asked for included (one that run recorded). When
    only its SEGs are missing (the earlier run was without ``dicom_seg``, or a SEG was removed),
    the scan runs again and its NIfTI outputs, that run's own, are replaced.

    Every output is ``out_dir/NAME...``, checked before anything is made (:mod:`napari_sparseseg.io.names`):
    a plain name (no path, ``..`` or separator), unique per scan without regard to case, no
    output a symbolic link.

    Raises:
        CheckpointError: the model folder does not load.
        OutputError: ``cfg.dicom_seg`` without highdicom installed (says how to install it),
            the out-dir cannot be written, an output would overwrite an input, is a
            symbolic link, or outputs exist that this run would replace without
            ``cfg.overwrite`` (names them; those of a scan our summary records as not
            finished are ours to replace).
        InputError: no scans, a scan name that is not a plain name, two scans of one name.
    """
    cfg = cfg or BatchConfig()
    if not entries:
        raise InputError("no scans given; name scan files, folders, globs or a CSV manifest.")
    for e in entries:  # a name is a plain file-name part, unique per scan: outputs stay in out_dir, one set each
        check_name(e.name, path=e.image)
    check_unique([e.name for e in entries])
    if cfg.dicom_seg:
        require_highdicom("--dicom-seg (a DICOM SEG beside the mask of each DICOM series)")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    payload, class_names, modality = _load_model_info(model_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("--out-dir is a file; give a folder (new or one of an earlier batch).", path=out_dir)
    if not out_dir.parent.exists():
        raise OutputError(f"the folder {out_dir.parent} does not exist; create it first.", path=out_dir)
    inputs = {"--model folder": model_dir}
    for e in entries:
        inputs.update(_inputs_of(e))
    created = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out-dir ({exc.strerror or exc}); choose a writable place.",
                          path=out_dir) from exc
    try:
        previous = _previous(out_dir, cfg)
        jobs = _plan_jobs(entries, out_dir, cfg, payload, inputs, model_dir, previous)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # the folder this call made, still empty
        raise
    names = {e.name for e in entries}
    others = [r for r in previous if r.get("name") not in names]
    return BatchPlan(out_dir, model_dir, cfg, payload, class_names, modality, jobs, others, created)


def _previous(out_dir: Path, cfg: BatchConfig) -> list[dict]:
    """The earlier summary's scan records.

    With ``overwrite`` a damaged summary of ours counts as none; one that is not ours is refused even then.
    """
    try:
        return list((read_summary(out_dir) or {}).get("scans", []))
    except SummaryError as exc:
        if cfg.overwrite and not exc.foreign:
            return []  # ours but damaged: --overwrite starts the folder's summary over
        raise


def _inputs_of(entry: ScanEntry) -> dict:
    """A scan's input files, by the name the safety checks' messages use."""
    return {f"{role} of scan '{entry.name}'": getattr(entry, role) for role in ("image", "scribbles", "corrections")
            if getattr(entry, role) is not None}


def _plan_jobs(entries, out_dir: Path, cfg: BatchConfig, payload: ModelPayload, inputs: dict, model_dir: Path,
               previous: list[dict]) -> list[ScanJob]:
    try:
        for name in (SUMMARY_JSON, SUMMARY_CSV):
            check_outputs({"summary": confined(out_dir, name, "summary")}, inputs)
    except OutputError as exc:
        if "not writable" in exc.message:
            raise OutputError("--out-dir is not writable; choose another folder.", path=out_dir) from exc
        raise
    earlier = {} if cfg.overwrite else {r.get("name"): r for r in previous}
    if not cfg.overwrite and (out_dir / SUMMARY_CSV).exists() and not (out_dir / SUMMARY_JSON).exists():
        raise OutputError(f"{SUMMARY_CSV} exists without {SUMMARY_JSON}: not a batch of ours; choose another "
                          "--out-dir or pass --overwrite.", path=out_dir / SUMMARY_CSV)
    taken = _input_paths(inputs)
    jobs, blocked = [], []
    for e in entries:
        job = _job(e, out_dir, cfg, taken, model_dir)
        before = earlier.get(e.name)
        nifti = [p for p in (job.mask, job.probabilities) if p is not None]
        same = bool(before and before.get("status") in ("done", "skipped") and before.get("inputs_id") == job.inputs_id
                    and before.get("model_id") == payload.fingerprint
                    and before.get("settings_id") == _settings_id(cfg, e))
        foreign = _foreign_segs(job, before if same else None)
        if same and not foreign and all(p.exists() for p in job.outputs):
            job.done_before = before
        elif same and not foreign and all(p.exists() for p in nifti):
            pass  # only its SEGs are missing: it runs again, replacing the NIfTI outputs that run wrote
        elif not cfg.overwrite and not _unfinished(before) and any(p.exists() for p in job.outputs):
            blocked.append(foreign[0] if foreign else next(p for p in job.outputs if p.exists()))
        jobs.append(job)
    if blocked:
        more = f" and {len(blocked) - 1} more" if len(blocked) > 1 else ""
        raise OutputError(f"{blocked[0].name}{more} already exist(s) and would be replaced (the model, the settings or "
                          "the scan changed since, or no batch of ours wrote it); pass --overwrite to replace, or "
                          "choose another --out-dir.", path=out_dir)
    return jobs


def _job(e: ScanEntry, out_dir: Path, cfg: BatchConfig, taken: tuple[dict, list], model_dir: Path) -> ScanJob:
    """A scan's outputs, named and checked (confined to the out-dir, not an input, writable)."""
    mask = confined(out_dir, f"{e.name}_mask.nii.gz", f"mask of scan '{e.name}'")
    probs = (confined(out_dir, f"{e.name}_probabilities.nii.gz", f"probabilities of scan '{e.name}'")
             if cfg.probabilities else None)
    seg = seg_probs = note = None
    if cfg.dicom_seg and Path(e.image).is_dir():  # a DICOM series folder (expand_inputs takes no other folders)
        seg = confined(out_dir, f"{e.name}_mask.dcm", f"DICOM SEG of scan '{e.name}'")
        if cfg.probabilities:
            seg_probs = confined(out_dir, f"{e.name}_probabilities.dcm", f"DICOM SEG probabilities of scan '{e.name}'")
    elif cfg.dicom_seg:
        note = NO_SEG_NOTE
    for kind, path in (("mask", mask), ("probabilities", probs), ("DICOM SEG", seg),
                       ("DICOM SEG probabilities", seg_probs)):
        if path is not None:
            _not_an_input(kind, path, taken)
    inputs = {"--model folder": model_dir, **_inputs_of(e)}
    check_outputs({"mask": mask, "probabilities": probs}, inputs)
    if seg is not None:  # a .dcm output is checked as a SEG of the scan (a DICOM series folder, highdicom there)
        check_outputs({"mask": seg, "probabilities": seg_probs}, {**inputs, "scan": e.image})
    return ScanJob(e, mask, probs, _inputs_id(e), dicom_seg=seg, dicom_seg_probabilities=seg_probs, note=note)


def _foreign_segs(job: ScanJob, record: dict | None) -> list[Path]:
    """The SEG outputs of ``job`` that exist but that ``record`` (an earlier run's, of this scan) did not write."""
    ours = {Path(record[k]).name for k in ("dicom_seg", "dicom_seg_probabilities") if record and record.get(k)}
    return [p for p in (job.dicom_seg, job.dicom_seg_probabilities) if p is not None and p.exists()
            and p.name not in ours]


def _unfinished(record: dict | None) -> bool:
    """Whether an earlier run of ours planned this scan's outputs but did not finish it.

    Its outputs, if any, are then ours to replace: a mask its worker wrote after a Ctrl-C, or
    before its probabilities failed.
    """
    return bool(record) and record.get("status") in ("queued", "interrupted", "failed")


def _input_paths(inputs: dict) -> tuple[dict, list]:
    """Every input's files by real path, and its folders: checked against each output in O(1)."""
    files, folders = {}, []
    for name, path in inputs.items():
        for f in files_of_input(path):
            real = os.path.realpath(f)
            files[real] = (name, path)
            if os.path.isdir(f):
                folders.append((real.rstrip(os.sep) + os.sep, name, path))
    return files, folders


def _not_an_input(kind: str, path: Path, taken: tuple[dict, list]) -> None:
    files, folders = taken
    real = os.path.realpath(path)
    if real in files:
        name, inp = files[real]
        raise OutputError(f"the {kind} would overwrite the {name} ({inp}); rename that scan or choose another "
                          "--out-dir.", path=path)
    for folder, name, inp in folders:
        if real.startswith(folder):
            raise OutputError(f"the {kind} would be written inside the {name} ({inp}); choose another --out-dir.",
                              path=path)


def _result_of(job: ScanJob, plan: BatchPlan, record: dict | None = None, status: str | None = None) -> ScanResult:
    e = job.entry
    r = ScanResult(e.name, status or "queued", image=str(e.image), inputs_id=job.inputs_id,
                   model_id=plan.payload.fingerprint, settings_id=_settings_id(plan.cfg, e))
    if record:
        for key in ("status", "reason", "seconds", "worker", "classes", "fine_tuned", "steps"):
            if key in record:
                setattr(r, key, record[key])
    if status:
        r.status = status
    r.note = job.note
    if r.status in ("done", "skipped"):
        r.mask = str(job.mask)
        r.probabilities = None if job.probabilities is None else str(job.probabilities)
        r.dicom_seg = None if job.dicom_seg is None else str(job.dicom_seg)
        r.dicom_seg_probabilities = None if job.dicom_seg_probabilities is None else str(job.dicom_seg_probabilities)
        if r.status == "skipped" and record:  # SEGs an earlier run wrote stay recorded while they are there
            for key in ("dicom_seg", "dicom_seg_probabilities"):
                if getattr(r, key) is None and record.get(key) and (plan.out_dir / Path(record[key]).name).exists():
                    setattr(r, key, str(plan.out_dir / Path(record[key]).name))
    r.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    return r


def _counts(results: dict[str, ScanResult]) -> dict:
    """Scans per status; ``"interrupted"`` only when some are (the summary's keys are as before otherwise)."""
    counts = {s: sum(r.status == s for r in results.values()) for s in _STATUSES}
    if not counts["interrupted"]:
        del counts["interrupted"]
    return counts


def _write_summary(plan: BatchPlan, results: dict[str, ScanResult]) -> None:
    results = dict(results)
    for record in plan.others:  # scans of earlier runs that this one does not touch
        known = {k: record.get(k) for k in ScanResult.__dataclass_fields__ if k in record}
        results.setdefault(record["name"], ScanResult(**{**known, "name": record["name"], "status": record.get("status", "done")}))
    ranks = review_ranks({n: (r.classes if r.status in ("done", "skipped") else None) for n, r in results.items()})
    for n, r in results.items():
        r.review_rank = ranks.get(n)
    data = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "model": str(plan.model_dir),
            "model_id": plan.payload.fingerprint, "class_names": plan.class_names, "modality": plan.modality,
            "settings": asdict(plan.cfg),
            "counts": _counts(results),
            "scans": [asdict(r) for r in results.values()]}
    atomic_file(plan.out_dir / SUMMARY_JSON, lambda f: f.write(json.dumps(data, indent=1)), mode="w")
    rows = []
    for r in results.values():
        base = {"scan": r.name, "status": r.status, "review_rank": r.review_rank, "fine_tuned": r.fine_tuned,
                "seconds": r.seconds, "mask": r.mask, "dicom_seg": r.dicom_seg, "image": r.image, "reason": r.reason,
                "note": r.note}
        for row in [{"class": c, **v} for c, v in (r.classes or {}).items()] or [{}]:
            full = {**base, **row}
            rows.append([full.get(k) for k in _CSV_COLUMNS])
    text = csv_text(_CSV_COLUMNS, rows)  # a cell that a spreadsheet would run as a formula is escaped
    atomic_file(plan.out_dir / SUMMARY_CSV, lambda f: f.write(text), mode="w")


def run_batch(plan: BatchPlan, scheduler: str | None = None, stop: Callable[[], bool] | None = None,
              client=None, security=None) -> Generator[ScanResult, None, dict[str, ScanResult]]:
    """Run the plan on Dask; yield each scan's :class:`ScanResult` as it ends; return them all by name.

    Skipped scans are yielded first. The summary is written once the cluster is up (or the
    scheduler answered), before any scan runs, and rewritten after every scan; if the cluster
    cannot be had, nothing is written (an out-dir :func:`plan_batch` made is removed again).

    Args:
        plan: from :func:`plan_batch`.
        scheduler: a Dask scheduler address (``tcp://host:port``); ``None`` starts a local
            cluster of ``plan.cfg.workers`` workers (sized to the machine by default).
        stop: polled between scans; when it returns true no further scan starts, the running
            ones finish, and the rest are reported ``"queued"``.
        client: an existing ``distributed.Client`` to use instead (its cluster is left running).
        security: a ``distributed.Security`` with the certificates of a ``tls://`` scheduler
            (``None``: none for tcp://, Dask's configured ones for tls://).

    Raises:
        InputError: the scheduler address is malformed or cannot be reached within
            ``plan.cfg.connect_timeout`` (:func:`napari_sparseseg.scheduler.connect`; names
            the address and what to check).
    """
    results: dict[str, ScanResult] = {j.entry.name: _result_of(j, plan) for j in plan.jobs}
    for job in plan.skipped:
        r = _result_of(job, plan, job.done_before, status="skipped")
        r.reason = "already done with this model (inputs unchanged)"
        results[job.entry.name] = r
        yield r
    todo = plan.to_run
    if not todo:
        _write_summary(plan, results)
        return results
    by_name = {j.entry.name: j for j in todo}
    runner = DaskRunner(plan.cfg, scheduler=scheduler, client=client, security=security)
    started = False
    try:
        with runner:  # the cluster first: a scheduler that cannot be reached leaves the out-dir as it was
            _write_summary(plan, results)  # before any scan runs: every scan to run is recorded, "queued"
            started = True
            for name, record in runner.map(process_scan, [j.task() for j in todo], plan.payload, plan.cfg, stop=stop):
                r = _result_of(by_name[name], plan, record)
                results[name] = r
                _write_summary(plan, results)
                yield r
    except BaseException:  # Ctrl-C (KeyboardInterrupt, or GeneratorExit when the caller stops iterating), an error
        if started:
            _interrupted(plan, results, [by_name[t.name] for t in runner.in_flight.values()])
        elif plan.created:
            with contextlib.suppress(OSError):
                plan.out_dir.rmdir()  # the folder plan_batch made, still empty: nothing is left behind
        raise
    return results


def _interrupted(plan: BatchPlan, results: dict[str, ScanResult], running: list[ScanJob]) -> None:
    """Record the scans that were running as ``"interrupted"``; remove the temporary files of writes cut short.

    Not done: the next run segments them again and may replace what their workers wrote.
    """
    for job in running:
        r = _result_of(job, plan, status="interrupted")
        r.reason = "interrupted while it ran; the next run segments it again"
        results[job.entry.name] = r
        for path in job.outputs:
            remove_stale_temps(path)
    with contextlib.suppress(OSError):
        _write_summary(plan, results)
