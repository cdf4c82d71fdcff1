"""What a Dask worker runs for a remote round: the very :func:`~napari_sparseseg.core.session.rounds.run_round` of a local one.

:func:`round_task` rebuilds the session from what the round sent (the scan is Dask data kept
on this worker for the session: the task only names it) and runs the round, reporting through
Dask's events (:meth:`distributed.Worker.log_event`, which never blocks the training thread):

* ``{"kind": "started"}`` with the worker and its device, once;
* ``{"kind": "progress", ...}`` (:func:`~napari_sparseseg.remote.wire.pack_progress`) at most
  four times a second, at each stage's first step, and with the forest's preview mask;
* ``{"kind": "alive"}`` every :data:`HEARTBEAT_S` seconds from a thread of its own, also while
  one step takes long (the forest's features, a slab of the prediction), so the client can tell
  a slow step from a lost worker.

:func:`signal_round` is run on the worker by the client (``Client.run``) for Stop: the first
ends training within a step (the model so far is kept, the prediction follows), the second
skips the prediction, ``"cancel"`` ends the round at once (the client gave up on it).

The forest's filter features of each scan are kept on the worker between rounds
(:data:`MAX_SCANS` scans at most), like the scan itself.
"""

from __future__ import annotations

import collections
import threading
import time
import warnings

import numpy as np

from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.session.rounds import run_round
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.remote.wire import pack_progress, pack_result, unpack, unpack_model, unpack_pretrained

__all__ = ["HEARTBEAT_S", "MAX_SCANS", "round_task", "signal_round"]

HEARTBEAT_S = 2.0  # an "alive" event this often while a round runs
MAX_SCANS = 2  # scans whose forest features a worker keeps
_PROGRESS_S = 0.25  # progress events at most this often (and at each stage's first step, and with a preview)

_FEATURES: collections.OrderedDict[str, FeatureCache] = collections.OrderedDict()
_ROUNDS: dict[str, _Round] = {}
_ENDED: collections.deque = collections.deque(maxlen=256)  # rounds that ended here (a late Stop makes no new state)
_LOCK = threading.Lock()


class _Round:
    """The Stop state of one round on this worker (made by whichever of the task and a Stop comes first)."""

    def __init__(self):
        self.stop = threading.Event()
        self.cancelled = False
        self.done = threading.Event()


def _round(rid: str) -> _Round | None:
    """The state of round ``rid`` (made now if it has not started yet); ``None`` once it has ended."""
    with _LOCK:
        return None if rid in _ENDED else _ROUNDS.setdefault(rid, _Round())


def signal_round(rid: str, what: str = "stop") -> bool:
    """Stop (``"stop"``) or end (``"cancel"``) round ``rid`` on this worker; run through ``Client.run``.

    Returns whether the round was still to run or running.
    """
    state = _round(rid)
    if state is None:
        return False
    if what == "cancel":
        state.cancelled = True
    state.stop.set()
    return not state.done.is_set()


def _features(key: str) -> FeatureCache:
    """The feature cache of scan ``key`` on this worker (the :data:`MAX_SCANS` most recent scans are kept)."""
    with _LOCK:
        cache = _FEATURES.pop(key, None) or FeatureCache()
        _FEATURES[key] = cache
        while len(_FEATURES) > MAX_SCANS:
            _FEATURES.popitem(last=False)
        return cache


def _device_text(device: str) -> str:
    d = resolve_device(device)
    if d.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(d)})"
    return d.type


def round_task(image: np.ndarray, key: str, rid: str, topic: str, request: dict) -> dict | None:
    """Run one round of the session described by ``request`` on this worker's copy of the scan.

    Args:
        image: the scan (Dask data scattered to this worker once per session).
        key: the scan's fingerprint (its forest features are kept under it).
        rid: the round's id (for :func:`signal_round`).
        topic: the Dask event topic the client listens on.
        request: what the client sent (:meth:`~napari_sparseseg.remote.rounds.RemoteRounds.run_round`).

    Returns:
        The packed :class:`~napari_sparseseg.core.session.rounds.RoundResult`
        (:func:`~napari_sparseseg.remote.wire.pack_result`), ``None`` when cancelled.
    """
    from distributed import get_worker

    warnings.filterwarnings("ignore", message="Inside a Dask worker with daemon=True")
    worker = get_worker()
    state = _round(rid) or _Round()  # a round id is used once

    def tell(msg: dict) -> None:
        worker.log_event(topic, msg)

    def heartbeat() -> None:
        while not state.done.wait(HEARTBEAT_S):
            tell({"kind": "alive"})

    pulse = threading.Thread(target=heartbeat, name=f"sparseseg-heartbeat-{rid[:8]}", daemon=True)
    pulse.start()
    try:
        tcfg, pcfg = request["train_config"], request["predict_config"]
        tell({"kind": "started", "worker": worker.address, "device": _device_text((tcfg or pcfg).device)})
        session = Session(image, unpack(request["scribbles"]), request["class_names"], request["spacing"],
                          corrected=unpack(request["corrected"]), model=unpack_model(request["model"]),
                          settings=request["settings"], hints=unpack(request["hints"]),
                          hint_shapes=request["hint_shapes"], features=_features(key))
        rounds = run_round(session, tcfg, pcfg, state.stop, request["train"],
                           unpack_pretrained(request["pretrained"]), request["preview"])
        last, stage = 0.0, None
        while True:
            try:
                p = next(rounds)
            except StopIteration as done:
                result = done.value
                break
            if state.cancelled:
                rounds.close()
                return None
            now = time.monotonic()
            if p.preview is not None or p.stage != stage or now - last >= _PROGRESS_S:
                tell(pack_progress(p))
                last, stage = now, p.stage
        return pack_result(result)
    finally:
        state.done.set()
        with _LOCK:
            _ROUNDS.pop(rid, None)
            _ENDED.append(rid)
