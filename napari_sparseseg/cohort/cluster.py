"""Dask distributed under a batch: a local cluster sized to the machine, or an existing scheduler.

Dask does the queueing, placement, retries and the rescheduling of a scan whose worker died;
this module only sizes the local cluster, sends the model once, keeps one scan per worker in
flight (so a Stop leaves the rest queued and the client never holds more than the workers
are doing) and turns a task's failure into a record.

The local cluster is this user's alone and leaves nothing behind:

* it listens on 127.0.0.1 with TLS and a certificate made for this run, in memory
  (``distributed.Security.temporary()``): a client or worker without it, another local user's
  included, cannot connect (else anyone on the machine could run code as this user);
* its worker processes start with ``PYTHONSAFEPATH`` (nothing from the folder the command was
  started in is imported), ignore Ctrl-C (the batch stops them itself: no worker traceback),
  and keep their scratch files, the model's copies included, in a private temporary folder
  removed when the cluster closes, also after a Ctrl-C or a killed worker;
* a scan whose worker died is run again on a fresh worker, at most ``cfg.retries`` times
  (the scheduler's ``allowed-failures``; the model is a task, not scattered data, so it is
  recomputed if the only worker holding it died).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable

from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.scheduler import connect

__all__ = ["DaskRunner", "dask_setup", "local_workers"]


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def local_workers(cfg: BatchConfig) -> int:
    """Workers of a local cluster: ``cfg.workers``, else one per core as memory allows (``worker_memory_gib`` each)."""
    if cfg.workers:
        return int(cfg.workers)
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(_memory_gib() // cfg.worker_memory_gib)))


def dask_setup(worker) -> None:
    """Preload of the local cluster's workers: Ctrl-C in the terminal is the batch's to handle, not theirs."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _security():
    """A certificate for this run only (TLS, in memory): only this process and its workers hold it."""
    from distributed import Security

    try:
        return Security.temporary()
    except ImportError as exc:
        raise InputError("the local Dask cluster is secured with a certificate made for the run, which needs the "
                         "'cryptography' package: pip install cryptography (or use --scheduler).") from exc


def _hold(payload):
    """The model as a task's result: recomputed by Dask if every worker holding it died (scattered data is not)."""
    return payload


class DaskRunner:
    """A Dask client for the length of a ``with`` block.

    Args:
        cfg: the batch settings (workers, threads, retries, connect timeout).
        scheduler: ``tcp://HOST:PORT`` (or ``tls://``, or ``HOST:PORT``) of an existing scheduler, reached
            through :func:`napari_sparseseg.scheduler.connect`; ``None`` starts a
            ``distributed.LocalCluster`` on 127.0.0.1 with TLS (one process per worker, one Dask
            thread each; see the module docstring).
        client: an existing client to use (neither it nor its cluster is closed).
        security: the ``distributed.Security`` (certificates) for a ``tls://`` scheduler; ``None``:
            none for tcp://, Dask's configured ones for tls://.

    Raises:
        InputError: the scheduler address is malformed, or the scheduler does not answer as one
            within ``cfg.connect_timeout`` seconds (a server that accepts and stays silent
            included), or has no worker by then (names the address and what to check or start).
    """

    def __init__(self, cfg: BatchConfig, scheduler: str | None = None, client=None, security=None):
        self.cfg, self.scheduler, self.security = cfg, scheduler, security
        self.client, self._own_client, self._cluster = client, client is None, None
        self.in_flight: dict = {}  # future -> task, while map runs
        self._scratch: str | None = None
        self._env = contextlib.ExitStack()

    def __enter__(self) -> DaskRunner:
        if self.client is not None:
            return self
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        if self.scheduler:  # the address checked, then reached in bounded time, with a worker (scheduler.py)
            self.client = connect(self.scheduler, security=self.security, timeout=self.cfg.connect_timeout, min_workers=1)
            return
        import dask

        n = local_workers(self.cfg)
        security = _security()
        self._scratch = tempfile.mkdtemp(prefix="sparseseg-dask-")
        # The worker processes, also those a nanny restarts, start with PYTHONSAFEPATH=1: they import nothing from
        # the cwd (Dask's pre-spawn environment; it is also set here while the cluster runs).
        self._env.enter_context(_environ(PYTHONSAFEPATH="1"))
        spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), "PYTHONSAFEPATH": "1"}
        # Non-daemon worker processes: scikit-learn (the forest) may then use the worker's threads.
        with dask.config.set({"distributed.worker.daemon": False, "temporary-directory": self._scratch,
                              "distributed.scheduler.allowed-failures": int(self.cfg.retries),
                              "distributed.nanny.pre-spawn-environ": spawn_env}):
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                         host="127.0.0.1", security=security, local_directory=self._scratch,
                                         preload=[__name__], silence_logs=logging.ERROR,
                                         # no dashboard; the scheduler's health/metrics HTTP endpoint on a free
                                         # loopback port (by default it takes 8787, and says so when that is busy)
                                         scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        self.client = Client(self._cluster, security=security, set_as_default=False)

    def __exit__(self, *exc) -> None:
        interrupted = exc[0] is not None and not issubclass(exc[0], Exception)  # Ctrl-C, GeneratorExit
        if interrupted and self._cluster is not None:
            # The user stopped the batch: the workers are stopped now, without letting their scans finish (the
            # batch records those scans as interrupted and removes what a write cut short left).
            quiet = logging.getLogger("distributed")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            self._env.callback(quiet.setLevel, level)
            for nanny in list(getattr(self._cluster, "workers", {}).values()):
                pid = getattr(nanny, "pid", None)
                if pid:
                    with contextlib.suppress(OSError):
                        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        try:
            if self.in_flight and self.client is not None and interrupted:
                with contextlib.suppress(Exception):
                    self.client.cancel(list(self.in_flight), force=True)
            if self._own_client and self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close(timeout=5 if interrupted else None)
                self.client = None
            if self._cluster is not None:
                with contextlib.suppress(Exception):
                    self._cluster.close(timeout=5 if interrupted else None)
                self._cluster = None
        finally:
            self._env.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def workers(self) -> dict:
        """``{address: info}`` of the scheduler's workers now."""
        return self.client.scheduler_info(n_workers=-1).get("workers", {})

    def threads(self):
        """Torch threads per worker: ``cfg.threads``, else ``{host: workers on it}`` (each worker divides its host's cores)."""
        if self.cfg.threads:
            return int(self.cfg.threads)
        hosts: dict[str, int] = {}
        for addr in self.workers():
            host = addr.split("//")[-1].rsplit(":", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
        return hosts

    def map(self, fn: Callable, tasks: Iterable, payload, settings, stop: Callable[[], bool] | None = None):
        """Run ``fn(task, payload, settings, threads)`` for each task; yield ``(task.name, record)`` as each ends.

        The payload is one task every scan depends on (each worker fetches it once; lost with its
        workers, it is computed again). At most one task per worker is in flight
        (:attr:`in_flight`); when ``stop()`` turns true no further task is submitted and the
        rest are yielded with status ``"queued"``. A task that raised after its retries, or
        whose workers kept dying, is yielded as ``"failed"`` with the reason.
        """
        from distributed import as_completed

        client = self.client
        queue = list(tasks)
        with warnings.catch_warnings():  # a model of some MB in the graph is the point: it can be recomputed
            warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
            shared = client.submit(_hold, payload, pure=False, key=f"sparseseg-model-{uuid.uuid4().hex[:12]}")
        threads = self.threads()
        running = self.in_flight

        def fill() -> list:
            new = []
            while queue and len(running) < max(1, len(self.workers())) and not (stop and stop()):
                task = queue.pop(0)
                future = client.submit(fn, task, shared, settings, threads, pure=False, retries=settings.retries,
                                       key=f"scan-{task.name}-{uuid.uuid4().hex[:8]}")
                running[future] = task
                new.append(future)
            return new

        done = as_completed(fill(), loop=client.loop)
        for future in done:
            task = running.pop(future)
            record = _record(future, task)
            future.release()  # its result is in hand: Dask must not run the scan again if its worker dies later
            yield task.name, record
            for new in fill():
                done.add(new)
        for task in queue:
            yield task.name, {"name": task.name, "status": "queued", "reason": "stopped before it started"}


@contextlib.contextmanager
def _environ(**values):
    """Set environment variables (inherited by the worker processes) for the block; restore them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _record(future, task) -> dict:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        reason = ("the workers running this scan died each time it was tried (out of memory? see the worker logs); "
                  "it was retried on fresh workers up to the retries allowed")
    except Exception as exc:  # noqa: BLE001 - any error of one scan is that scan's failure
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return {"name": task.name, "status": "failed", "reason": reason}

