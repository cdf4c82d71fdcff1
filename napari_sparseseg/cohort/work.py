"""What a Dask worker does for one scan: read it, optionally fine-tune, predict, write, summarise.

With ``dicom_seg`` in its task (a DICOM series scan of a ``--dicom-seg`` batch), the mask (and
the probabilities) are also written as DICOM SEGs of the series, after the NIfTI outputs.

Only paths and small settings travel to the worker; it reads its own scan, so its memory is
bounded by one scan (the prediction itself is bounded by the slab, :mod:`..core.predict`).
The shared model travels once per worker as the bytes of its folder
(:class:`ModelPayload`, scattered with ``broadcast=True``) and is loaded once per worker
process, then kept.

A problem with the scan itself (unreadable, another modality than the model, strokes on the
wrong grid...) is an expected outcome: the task returns a ``"failed"`` record with the
one-line reason and is not retried. Anything else raises, so Dask retries the scan (on another
worker if this one died).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_sparseseg.cohort.summary import class_summary
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import ScribbleError, SparseSegError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.model.intensity import check_model_modality
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.io import read_scan, write_labels, write_probabilities
from napari_sparseseg.io.dicom_seg import dicom_series, write_dicom_seg, write_dicom_seg_probabilities
from napari_sparseseg.io.models import load_model

__all__ = ["ModelPayload", "ScanTask", "process_scan"]


@dataclass(frozen=True)
class ModelPayload:
    """A model folder as bytes: sent to every worker once.

    Args:
        fingerprint: sha256 over the folder's file names and contents.
        files: file name -> content.
    """

    fingerprint: str
    files: dict = field(repr=False)


@dataclass(frozen=True)
class ScanTask:
    """One scan's job: where to read and where to write (absolute paths)."""

    name: str
    image: str
    mask: str
    probabilities: str | None = None
    scribbles: str | None = None
    corrections: str | None = None
    dicom_seg: str | None = None  # NAME_mask.dcm: a DICOM SEG of the series ``image`` (a DICOM series folder)
    dicom_seg_probabilities: str | None = None  # NAME_probabilities.dcm: a FRACTIONAL SEG of it


_MODELS: dict[str, object] = {}
_MODELS_LOCK = threading.Lock()


def _scratch() -> str | None:
    """The worker's own scratch folder (the local cluster's is removed with it, also after a kill), else the default."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError, AttributeError):
        return None


def _model(payload: ModelPayload):
    """The payload's model, loaded once per worker process (on the CPU; prediction moves it).

    Its files are written to a temporary folder in the worker's scratch folder, loaded and
    removed at once.
    """
    with _MODELS_LOCK:
        model = _MODELS.get(payload.fingerprint)
        if model is None:
            with tempfile.TemporaryDirectory(prefix="sparseseg-model-", dir=_scratch()) as tmp:
                for name, data in payload.files.items():
                    (Path(tmp) / name).write_bytes(data)
                model = load_model(tmp)
            _MODELS.clear()  # one shared model at a time
            _MODELS[payload.fingerprint] = model
        return model


def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _set_threads(threads: int | dict | None) -> None:
    """Torch threads of this worker: a number, or ``{host: workers on it}`` to split the host's cores."""
    import torch

    if isinstance(threads, dict):
        host = _where().rsplit(":", 1)[0].split("//")[-1]
        threads = max(1, (os.cpu_count() or 1) // max(1, threads.get(host, 1)))
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


def process_scan(task: ScanTask, payload: ModelPayload, settings, threads: int | dict | None = None) -> dict:
    """Segment one scan with the shared model and write its outputs; return its record.

    Args:
        task: the scan and its output paths.
        payload: the shared model.
        settings: a :class:`~napari_sparseseg.core.base.config.BatchConfig`.
        threads: torch threads, or ``{host: workers}`` to split each host's cores.

    Returns:
        ``{"name", "status": "done" | "failed", "reason", "seconds", "worker", "classes",
        "fine_tuned", "steps"}``.
    """
    import warnings

    # On a daemon worker (an external cluster's default) scikit-learn says it uses one job; that is fine.
    warnings.filterwarnings("ignore", message="Inside a Dask worker with daemon=True")
    t0 = time.perf_counter()
    record = {"name": task.name, "status": "failed", "reason": None, "seconds": None, "worker": _where(),
              "classes": None, "fine_tuned": False, "steps": 0}
    _set_threads(threads)
    try:
        record.update(_segment(task, _model(payload), settings))
        record["status"] = "done"
    except SparseSegError as exc:
        record["reason"] = exc.one_line()
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _segment(task: ScanTask, model, settings) -> dict:

    image, geom, scribbles, corrections = read_scan(task.image, task.scribbles, task.corrections)
    check_model_modality(image, model.normalization.modality, task.image)
    out = {"fine_tuned": False, "steps": 0}
    annotations = None
    features = FeatureCache()  # the forest's filters of this scan, computed once for fine-tuning and prediction
    if scribbles is not None:
        cfg = TrainConfig(time_budget=settings.fine_tune_seconds, max_steps=None, seed=settings.seed,
                          device=settings.device, precision=settings.precision, forest=settings.forest)
        try:
            trainer = Trainer(image, scribbles, cfg, corrections=corrections, init=model, spacing=geom.spacing,
                              features=features)
        except ScribbleError as exc:
            exc.path = exc.path or task.scribbles
            raise
        result = run_to_end(trainer.run())
        model, annotations = result.model, trainer.y
        out.update(fine_tuned=True, steps=int(result.steps))
    pcfg = PredictConfig(device=settings.device, probabilities=bool(task.probabilities), uncertainty=True,
                         refine=settings.refine, forest=settings.forest, precision=settings.precision)
    pred = run_to_end(predict(model, image, pcfg, annotations, geom.spacing, features=features))
    write_labels(task.mask, pred.labels, geom)
    if task.probabilities:
        write_probabilities(task.probabilities, pred.probabilities, geom)
    if task.dicom_seg:
        _write_segs(task, pred, geom, model.class_names)
    out["classes"] = class_summary(pred.labels, geom.spacing, model.class_names, pred.uncertainty)
    return out


def _write_segs(task: ScanTask, pred, geom, class_names) -> None:
    """The DICOM SEGs of a DICOM series scan, after its NIfTI outputs: the mask, and the probabilities if asked.

    The series' headers are read once for both (slice by slice, no pixels); each SEG is written
    atomically and verified by reading it back onto the series' grid.
    """
    series = dicom_series(task.image, geom)
    write_dicom_seg(task.dicom_seg, pred.labels, series, class_names, geometry=geom)
    if task.dicom_seg_probabilities:
        write_dicom_seg_probabilities(task.dicom_seg_probabilities, pred.probabilities, series, class_names,
                                      geometry=geom)
