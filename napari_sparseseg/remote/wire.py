"""What travels between this computer and the worker, packed small and without pickled torch modules.

* arrays of labels and masks: zlib of their bytes (strokes and masks are mostly runs of one
  value; a 512x512x300 stroke volume is some kB); the uncertainty stays float16, also zlib'd;
* a model: its settings and its network's weights as numpy arrays (rebuilt with
  :func:`~napari_sparseseg.core.model.network.build_network` on the other side: no torch
  objects are unpickled, and the two sides may run different torch versions); its forest as
  its training set (:meth:`~napari_sparseseg.core.model.forest.StrokeForest.to_arrays`);
* progress: a plain dict (msgpack, for Dask's events), the forest's preview mask packed.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.inference.predict import Prediction
from napari_sparseseg.core.model.checkpoint import SegModel
from napari_sparseseg.core.model.forest import StrokeForest
from napari_sparseseg.core.model.network import build_network
from napari_sparseseg.core.session.rounds import RoundResult
from napari_sparseseg.core.training.train import TrainResult

__all__ = ["Packed", "pack", "pack_model", "pack_progress", "pack_result", "unpack", "unpack_model",
           "unpack_progress", "unpack_result"]


@dataclasses.dataclass(frozen=True)
class Packed:
    """An array as zlib'd bytes with its dtype and shape."""

    data: bytes
    dtype: str
    shape: tuple

    @property
    def nbytes(self) -> int:
        """Bytes on the wire."""
        return len(self.data)


def pack(a: np.ndarray | None, level: int = 1) -> Packed | None:
    """``a`` compressed (``None`` stays ``None``)."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return Packed(zlib.compress(a.data, level), a.dtype.str, tuple(int(n) for n in a.shape))


def unpack(p: Packed | None) -> np.ndarray | None:
    """The array of :func:`pack` (writable)."""
    if p is None:
        return None
    return np.frombuffer(bytearray(zlib.decompress(p.data)), dtype=np.dtype(p.dtype)).reshape(p.shape)


def _state_to_numpy(state: dict) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _state_from_numpy(state: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


def pack_model(model: SegModel | None) -> dict | None:
    """A model as plain data: weights as numpy arrays, settings as they are, the forest as its arrays."""
    if model is None:
        return None
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("network", "forest")}
    return {"fields": fields, "state": _state_to_numpy(model.network.state_dict()),
            "forest": None if model.forest is None else model.forest.to_arrays()}


def unpack_model(d: dict | None) -> SegModel | None:
    """The :class:`SegModel` of :func:`pack_model`, its network on the CPU in eval mode."""
    if d is None:
        return None
    network = build_network(d["fields"]["config"])
    network.load_state_dict(_state_from_numpy(d["state"]))
    network.eval()
    forest = None if d["forest"] is None else StrokeForest.from_arrays(d["forest"])
    return SegModel(network=network, forest=forest, **d["fields"])


def pack_pretrained(pre):
    """A pretrained state with its weights as numpy arrays (``None`` stays ``None``)."""
    return None if pre is None else dataclasses.replace(pre, state=_state_to_numpy(pre.state))


def unpack_pretrained(pre):
    """The pretrained state of :func:`pack_pretrained`, its weights as tensors again."""
    return None if pre is None else dataclasses.replace(pre, state=_state_from_numpy(pre.state))


def pack_progress(p: Progress) -> dict:
    """A progress step as msgpack-able data (Dask events); the preview mask zlib'd."""
    d = {"kind": "progress", "stage": p.stage, "step": int(p.step), "total": int(p.total), "elapsed": float(p.elapsed),
         "loss": None if p.loss is None else float(p.loss), "budget": None if p.budget is None else float(p.budget)}
    if p.preview is not None:
        q = pack(np.asarray(p.preview))
        d["preview"] = {"data": q.data, "dtype": q.dtype, "shape": list(q.shape)}
    return d


def unpack_progress(d: dict) -> Progress:
    """The :class:`Progress` of :func:`pack_progress`."""
    preview = d.get("preview")
    if preview is not None:
        preview = unpack(Packed(preview["data"], preview["dtype"], tuple(preview["shape"])))
    return Progress(d["stage"], d["step"], d["total"], d["elapsed"], d["loss"], d["budget"], preview)


def pack_result(r: RoundResult) -> dict:
    """A round's result with its arrays packed and its model as plain data (the network leaves the GPU)."""
    pred = r.prediction
    train = None if r.train is None else {"steps": r.train.steps, "elapsed": r.train.elapsed,
                                          "stopped_by": r.train.stopped_by, "losses": list(r.train.losses),
                                          "checks": list(r.train.checks)}
    return {"model": pack_model(r.model), "train": train, "stopped": r.stopped, "class_names": list(r.class_names),
            "suggestions": r.suggestions, "estimate": r.estimate, "labelled": r.labelled,
            "prediction": None if pred is None else {"labels": pack(pred.labels), "probabilities": pack(pred.probabilities),
                                                     "uncertainty": pack(pred.uncertainty)}}


def unpack_result(d: dict) -> RoundResult:
    """The :class:`RoundResult` of :func:`pack_result` (the model back on the CPU).

    Unpacked where the round is awaited (a widget's worker thread), so the session's copy of the
    mask is made there too, as a local round makes it.
    """
    model = unpack_model(d["model"])
    train = None if d["train"] is None else TrainResult(model, **d["train"])
    p = d["prediction"]
    pred = None if p is None else Prediction(unpack(p["labels"]), unpack(p["probabilities"]), unpack(p["uncertainty"]))
    return RoundResult(train, pred, model, d["stopped"], d["class_names"], d["suggestions"], d["estimate"],
                       d.get("labelled"), None if pred is None else pred.labels.copy())
