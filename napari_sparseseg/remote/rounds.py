"""A round of the interactive loop on a Dask worker, driven like a local one.

:meth:`RemoteRounds.run_round` has the signature and the contract of
:func:`~napari_sparseseg.core.session.rounds.run_round`: a generator that yields
:class:`~napari_sparseseg.core.base.progress.Progress` and returns a
:class:`~napari_sparseseg.core.session.rounds.RoundResult`, never changing the session, with
the same Stop (a set ``stop`` ends training within a step and keeps its model, set again it
skips the prediction). The CLI prints it and the widget runs it in its worker thread, as they do
the local round. What it does:

1. connects once (:func:`~napari_sparseseg.remote.client.connect`, bounded by
   ``connect_timeout``), warning about plain tcp:// to another computer;
2. picks a worker: one offering the ``GPU`` resource (``dask worker ... --resources GPU=1``)
   when the device is ``auto`` or a GPU, else any (a GPU device without a GPU worker is an
   error; ``auto`` runs on a CPU worker and says so); the worker already holding the scan is
   kept;
3. sends the scan to that worker once per session (Dask data, ``scatter``; sent again only if
   the worker lost it) and, each round, the strokes, corrections and pseudo-labels (zlib'd), the
   model's weights and the settings (:mod:`~napari_sparseseg.remote.wire`);
4. submits :func:`~napari_sparseseg.remote.worker.round_task` pinned to that worker (with the
   ``GPU`` resource when it offers one) and relays its progress events; Stop runs
   :func:`~napari_sparseseg.remote.worker.signal_round` on the worker;
5. gives up with a :class:`~napari_sparseseg.remote.client.RemoteError` (one line: what, and
   how to go on) when the worker leaves the cluster, the scheduler goes away, or nothing is
   heard for ``silence_timeout`` seconds (the worker reports every 2 s); the session is never
   changed, so no stroke and no model is lost, and the round can be run here instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.base.config import PredictConfig, RemoteConfig, TrainConfig
from napari_sparseseg.core.base.errors import ScribbleError, SparseSegError
from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.session.rounds import RoundResult
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.remote.client import RemoteError, connect, local_hint, plain_warning, security
from napari_sparseseg.remote.wire import pack, pack_model, pack_pretrained, unpack_progress, unpack_result
from napari_sparseseg.remote.worker import round_task, signal_round

__all__ = ["RemoteRounds", "scan_key"]

_CHECK_S = 1.0  # how often the worker's membership and the connection are checked while a round runs
_MIB_PER_S = 1.0  # the scan's upload is given silence_timeout plus a second per MiB


def scan_key(image: np.ndarray, spacing) -> str:
    """The scan's fingerprint: its bytes, dtype, shape and voxel size (sha256)."""
    h = hashlib.sha256()
    h.update(repr((image.dtype.str, image.shape, tuple(float(s) for s in spacing))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()[:32]


@dataclass
class _Scan:
    key: str
    future: object
    worker: str
    nbytes: int


class RemoteRounds:
    """The connection of one user (a widget, a command) to a Dask cluster, and the scan kept on its worker.

    Args:
        cfg: the scheduler's address, the TLS files and the timeouts.
        note: called with a line of news (the worker and device a round runs on, the scan being
            sent, no GPU worker); from the round's thread.

    Attributes:
        scans_sent: how many times a scan was sent to a worker (once per session unless the
            worker lost it).
        worker: the worker of the last round, ``device`` its device.

    Examples:
        ```python
        from napari_sparseseg.core.base.config import RemoteConfig
        from napari_sparseseg.remote.rounds import RemoteRounds
        remote = RemoteRounds(RemoteConfig(scheduler="tls://gpu-box:8786", tls_ca="ca.pem",
                                           tls_cert="me.pem", tls_key="me.key"))
        result = ss.run_to_end(remote.run_round(session, ss.TrainConfig(time_budget=30)))
        ss.accept_round(session, result)
        remote.close()
        ```
    """

    def __init__(self, cfg: RemoteConfig, note: Callable[[str], None] | None = None):
        if not cfg.scheduler:
            raise RemoteError("no Dask scheduler address given (tls://HOST:PORT).")
        self.cfg = cfg
        self.note = note or (lambda text: None)
        self.client = None
        self.scans_sent = 0
        self.worker: str | None = None
        self.device: str | None = None
        self._scan: _Scan | None = None
        self._keys: dict[int, tuple] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection
    def open(self):
        """Connect (once; again after the connection was lost). Raises :class:`RemoteError`."""
        if self.client is not None and self.client.status == "running":
            return self.client
        self._drop_client()
        warning = plain_warning(self.cfg.scheduler)
        if warning:
            self.note(warning)
        self.note(f"connecting to {self.cfg.scheduler} (given up after {self.cfg.connect_timeout:g} s)")
        self.client = connect(self.cfg.scheduler, security(self.cfg), self.cfg.connect_timeout)
        return self.client

    def close(self) -> None:
        """Release the scan on the worker and close the connection."""
        self._drop_client()

    def _drop_client(self) -> None:
        client, self.client, self._scan = self.client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=5)

    def __enter__(self) -> RemoteRounds:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _workers(self) -> dict:
        """``{address: info}`` of the scheduler's workers now (bounded by the silence timeout)."""
        client = self.client
        try:
            info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=self.cfg.silence_timeout)
        except (OSError, TimeoutError) as exc:
            raise RemoteError(f"the Dask scheduler at {self.cfg.scheduler} stopped answering ({_why(exc)}); your "
                              f"strokes and the last model are kept: try again, or {local_hint()}.") from exc
        return dict(info.get("workers", {}))

    # ------------------------------------------------------------------ placement
    def _pick(self, device: str) -> tuple[str, bool]:
        """The worker for a round on ``device`` and whether it is a GPU worker (see the module docstring)."""
        workers = self._workers()
        if not workers:
            raise RemoteError(f"the Dask cluster at {self.cfg.scheduler} has no worker left; start one with `dask "
                              f"worker {self.cfg.scheduler}`, or {local_hint()}.")
        gpu = {a for a, w in workers.items() if float((w.get("resources") or {}).get("GPU", 0)) >= 1}
        base = device.split(":")[0]
        if base not in ("auto", "cpu") and not gpu:
            raise RemoteError(f"no GPU worker: none of the {len(workers)} workers of {self.cfg.scheduler} offers a GPU "
                              f"(start one with `dask worker {self.cfg.scheduler} --resources GPU=1` on the GPU "
                              f"machine); choose the device auto or cpu to use their CPUs, or {local_hint()}.")
        pool = gpu if base != "cpu" and gpu else set(workers)
        if self._scan is not None and self._scan.worker in pool:
            chosen = self._scan.worker
        else:
            chosen = min(pool, key=lambda a: (float((workers[a].get("metrics") or {}).get("executing", 0)), a))
        if base == "auto" and not gpu:
            self.note(f"no worker of {self.cfg.scheduler} offers a GPU (--resources GPU=1): the round runs on the CPU "
                      f"of {chosen}")
        return chosen, chosen in gpu and base != "cpu"

    def _key(self, image: np.ndarray, spacing) -> str:
        """:func:`scan_key` of ``image``, computed once per array."""
        seen = self._keys.get(id(image))
        if seen is not None and seen[0]() is image and seen[1] == tuple(spacing):
            return seen[2]
        key = scan_key(image, spacing)
        self._keys = {id(image): (weakref.ref(image), tuple(spacing), key)}
        return key

    def _send_scan(self, image: np.ndarray, key: str, worker: str) -> _Scan:
        """The scan on ``worker``: sent now unless it is there already (once per session)."""
        scan = self._scan
        if scan is not None and scan.key == key and scan.worker == worker and scan.future.status == "finished":
            return scan
        if scan is not None:
            with contextlib.suppress(Exception):
                scan.future.release()
            self._scan = None
        mib = image.nbytes / 2**20
        self.note(f"sending the scan ({mib:.1f} MiB) to {worker}; it stays there for the next rounds")
        timeout = self.cfg.silence_timeout + mib / _MIB_PER_S
        try:
            future = self.client.scatter(image, workers=[worker], hash=False, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise RemoteError(f"sending the scan to the worker {worker} took more than {timeout:.0f} s ({_why(exc)}); "
                              f"the network is slow or the worker is gone: try again, or {local_hint()}.") from exc
        self.scans_sent += 1
        self._scan = _Scan(key, future, worker, image.nbytes)
        return self._scan

    # ------------------------------------------------------------------ the round
    def run_round(self, session: Session, train_cfg: TrainConfig | None = None, predict_cfg: PredictConfig | None = None,
                  stop: threading.Event | None = None, train: bool = True, pretrained=None,
                  preview: bool = False) -> Generator[Progress, None, RoundResult]:
        """:func:`~napari_sparseseg.core.session.rounds.run_round` on a worker of the cluster (module docstring).

        Raises:
            RemoteError: the cluster could not be reached or used, or the round was lost (the
                message says what happened and how to go on).
            SparseSegError: what the round itself raised on the worker (no strokes, one class...).
        """
        if session.image is None:
            raise SparseSegError("the session has no image; open the scan first.")
        if train and train_cfg is None:
            train_cfg = TrainConfig()
        predict_cfg = predict_cfg or PredictConfig()
        stop = stop or threading.Event()
        with self._lock:
            request = self._request(session, train_cfg, predict_cfg, train, pretrained, preview)
            self.open()
            device = (train_cfg if train else predict_cfg).device
            worker, gpu = self._pick(device)
            scan = self._send_scan(session.image, self._key(session.image, session.spacing), worker)
            result = yield from self._run(scan, request, gpu, stop)
        return result

    @staticmethod
    def _request(session: Session, tcfg, pcfg, train: bool, pretrained, preview: bool) -> dict:
        if train:
            top = int(session.scribbles.max(initial=0))
            if top > len(session.class_names):  # as run_round says it, before anything is sent
                raise ScribbleError(f"the scribbles use value {top} (class {top - 1}) but the class table has only "
                                    f"{len(session.class_names)} classes; add the class or erase those strokes.")
        return {"scribbles": pack(session.scribbles), "corrected": pack(session.corrected),
                "class_names": list(session.class_names), "spacing": tuple(session.spacing),
                "model": pack_model(session.model), "settings": session.settings, "hints": pack(session.hints),
                "hint_shapes": session.hint_shapes, "train_config": tcfg if train else None, "predict_config": pcfg,
                "train": bool(train), "pretrained": pack_pretrained(pretrained), "preview": bool(preview)}

    def _signal(self, worker: str, rid: str, what: str) -> None:
        """Run :func:`signal_round` on the worker, in a thread of its own (never blocks the round)."""
        client = self.client

        def send():
            with contextlib.suppress(Exception):
                client.run(signal_round, rid, what, workers=[worker], on_error="return")

        threading.Thread(target=send, name=f"sparseseg-{what}-{rid[:8]}", daemon=True).start()

    def _run(self, scan: _Scan, request: dict, gpu: bool, stop: threading.Event):
        client, worker, cfg = self.client, scan.worker, self.cfg
        rid = uuid.uuid4().hex
        topic = f"sparseseg-round-{rid}"
        events: queue.Queue = queue.Queue()
        client.subscribe_topic(topic, lambda event: events.put(event[1]))
        with warnings.catch_warnings():  # the model's weights in the task are the point (some MB for a large network)
            warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
            future = client.submit(round_task, scan.future, scan.key, rid, topic, request, workers=[worker],
                                   allow_other_workers=False, resources={"GPU": 1} if gpu else None, pure=False,
                                   retries=0, key=f"sparseseg-round-{rid}")
        self.worker, self.device = worker, None
        finished = False
        heard = next_check = time.monotonic()
        try:
            while True:
                try:
                    msg = events.get(timeout=0.1)
                except queue.Empty:
                    msg = None
                now = time.monotonic()
                if msg is not None:
                    heard = now
                    kind = msg.get("kind") if isinstance(msg, dict) else None
                    if kind == "progress":
                        yield unpack_progress(msg)
                    elif kind == "started":
                        self.device = msg.get("device")
                        self.note(f"the round runs on {msg.get('worker', worker)} ({self.device}); given up after "
                                  f"{cfg.silence_timeout:g} s without word from it")
                    if not events.empty():
                        continue
                if stop.is_set():  # forwarded, and cleared: a second Stop is a second signal (as locally)
                    stop.clear()
                    self._signal(worker, rid, "stop")
                if future.done():
                    break
                if now >= next_check:
                    next_check = now + _CHECK_S
                    self._check(worker, heard, now)
                if now - heard > cfg.silence_timeout:
                    raise RemoteError(f"no word from the worker {worker} for {cfg.silence_timeout:g} s (a slow network, "
                                      "a busy or stuck worker); the round was given up, your strokes and the last model "
                                      f"are kept: try again, or {local_hint()}.")
            result = self._outcome(future, worker)
            finished = True
            return result
        finally:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
            if not finished and not future.done():
                self._signal(worker, rid, "cancel")
            with contextlib.suppress(Exception):
                if not future.done():
                    future.cancel(force=True)
                future.release()

    def _check(self, worker: str, heard: float, now: float) -> None:
        """Raise when the connection is gone or the round's worker left the cluster."""
        client = self.client
        if client.status in ("closing", "closed"):
            raise RemoteError(f"lost the Dask scheduler at {self.cfg.scheduler} mid-round (it stopped or the network "
                              f"went down); your strokes and the last model are kept: {local_hint()}, or train again "
                              "once it is back.")
        if client.status != "running":  # reconnecting: the silence timeout bounds the wait (the round's futures
            if now - heard > self.cfg.silence_timeout:  # are cancelled by then: "now" is infinite)
                raise RemoteError(f"lost the Dask scheduler at {self.cfg.scheduler} mid-round (it stopped or the "
                                  f"network went down); your strokes and the last model are kept: {local_hint()}, or "
                                  "train again once it is back.")
            return
        if worker not in self._workers():
            if self._scan is not None and self._scan.worker == worker:
                self._scan = None
            raise RemoteError(f"the worker {worker} running the round left the cluster (it died or was stopped); the "
                              "round is lost but your strokes and the last model are kept: train again to use "
                              f"another worker, or {local_hint()}.")

    def _outcome(self, future, worker: str) -> RoundResult:
        from distributed import KilledWorker

        if future.status in ("cancelled", "lost"):  # the scan went with its worker, or the client lost the scheduler
            self._check(worker, 0.0, float("inf"))
            raise RemoteError(f"the round was cancelled on the cluster ({future.status}); your strokes and the last "
                              f"model are kept: try again, or {local_hint()}.")
        try:
            packed = future.result(timeout=self.cfg.silence_timeout)
        except KilledWorker as exc:
            self._scan = None
            raise RemoteError(f"the worker {worker} died running the round; your strokes and the last model are "
                              f"kept: train again to use another worker, or {local_hint()}.") from exc
        except SparseSegError:
            raise  # the round's own error (no strokes, one class...): as it would be here
        except (OSError, TimeoutError) as exc:
            raise RemoteError(f"the round's result did not arrive from {worker} ({_why(exc)}); your strokes and the "
                              f"last model are kept: try again, or {local_hint()}.") from exc
        except Exception as exc:  # noqa: BLE001 - anything else the worker raised, in one line
            raise RemoteError(f"the round failed on the worker {worker} ({type(exc).__name__}: {_why(exc)}); your "
                              f"strokes and the last model are kept: try again, or {local_hint()}.") from exc
        if packed is None:
            raise RemoteError(f"the round on {worker} was cancelled.")
        return unpack_result(packed)


def _why(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]
