"""Dask distributed under a batch: a local cluster sized to the machine, or an existing scheduler.

Dask does the queueing, placement, retries and the rescheduling of a scan whose worker died;
this module only sizes the local cluster, sends the model once (``scatter(broadcast=True)``),
keeps one scan per worker in flight (so a Stop leaves the rest queued and the client never
holds more than the workers are doing) and turns a task's failure into a record.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable

from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError

__all__ = ["DaskRunner", "local_workers"]


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


class DaskRunner:
    """A Dask client for the length of a ``with`` block.

    Args:
        cfg: the batch settings (workers, threads, retries, connect timeout).
        scheduler: ``tcp://HOST:PORT`` of an existing scheduler; ``None`` starts a
            ``distributed.LocalCluster`` (one process per worker, one Dask thread each).
        client: an existing client to use (neither it nor its cluster is closed).

    Raises:
        InputError: the scheduler does not answer within ``cfg.connect_timeout`` seconds, or
            has no worker by then (names the address and what to start).
    """

    def __init__(self, cfg: BatchConfig, scheduler: str | None = None, client=None):
        self.cfg, self.scheduler = cfg, scheduler
        self.client, self._own_client, self._cluster = client, client is None, None

    def __enter__(self) -> DaskRunner:
        if self.client is not None:
            return self
        from distributed import Client, LocalCluster

        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=self.cfg.connect_timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                raise InputError(f"cannot reach the Dask scheduler ({' '.join(str(exc).split()) or type(exc).__name__}); "
                                 "check the address (tcp://HOST:PORT) and that `dask scheduler` runs there, or leave "
                                 "out --scheduler to use a local cluster.", path=self.scheduler) from exc
            try:
                self.client.wait_for_workers(1, timeout=self.cfg.connect_timeout)
            except (TimeoutError, OSError) as exc:
                self.client.close()
                raise InputError(f"the Dask scheduler has no workers after {self.cfg.connect_timeout:g} s; start some "
                                 f"with `dask worker {self.scheduler}` in this environment.", path=self.scheduler) from exc
        else:
            import dask

            n = local_workers(self.cfg)
            # Non-daemon worker processes: scikit-learn (the forest) may then use the worker's threads.
            with dask.config.set({"distributed.worker.daemon": False}):
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                             silence_logs=logging.ERROR)
            self.client = Client(self._cluster, set_as_default=False)
        return self

    def __exit__(self, *exc) -> None:
        if self._own_client and self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

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

        The payload is scattered to every worker once. At most one task per worker is in
        flight; when ``stop()`` turns true no further task is submitted and the rest are
        yielded with status ``"queued"``. A task that raised after its retries, or whose
        workers kept dying, is yielded as ``"failed"`` with the reason.
        """
        from distributed import as_completed

        client = self.client
        queue = list(tasks)
        shared = client.scatter(payload, broadcast=True, hash=False)
        threads = self.threads()
        running: dict = {}

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
            yield task.name, _record(future, task)
            for new in fill():
                done.add(new)
        for task in queue:
            yield task.name, {"name": task.name, "status": "queued", "reason": "stopped before it started"}


def _record(future, task) -> dict:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        reason = "the workers running this scan died (out of memory? see the worker logs); it was retried"
    except Exception as exc:  # noqa: BLE001 - any error of one scan is that scan's failure
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return {"name": task.name, "status": "failed", "reason": reason}

