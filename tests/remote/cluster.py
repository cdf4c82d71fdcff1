"""A real Dask cluster on 127.0.0.1 for the remote-round tests: `dask scheduler` and `dask worker` processes.

As ``sparseseg batch``'s test does (tests/cohort/test_batch.py): the scheduler writes its
address to a scheduler file; workers are started against it. With ``tls`` the scheduler, the
workers and the test's client use certificates signed by a CA made here with ``cryptography``.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DASK = str(Path(sys.executable).parent / "dask")


def make_certificates(folder: Path, name: str = "ca") -> dict:
    """A self-signed CA and one certificate + key it signed for 127.0.0.1/localhost (PEM files in ``folder``)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k, path):
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sparseseg test {name}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = key()
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / f"{name}.pem", "cert": folder / f"{name}-cert.pem", "key": folder / f"{name}-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    write_key(leaf_key, paths["key"])
    return {k: str(v) for k, v in paths.items()}


class Cluster:
    """``dask scheduler`` + workers as child processes; :meth:`stop` ends them (also the ones killed already)."""

    def __init__(self, folder: Path, tls: dict | None = None, threads: int = 1):
        self.folder, self.tls, self.threads = folder, tls, threads
        self.scheduler = None
        self.workers: list[subprocess.Popen] = []
        self.address = None

    def _tls_args(self) -> list:
        t = self.tls
        return [] if t is None else ["--tls-ca-file", t["ca"], "--tls-cert", t["cert"], "--tls-key", t["key"]]

    def _env(self) -> dict:
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([repo, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        env["OMP_NUM_THREADS"] = str(self.threads)  # the worker's torch threads: as the test's own
        return env

    def _log(self, name: str):
        """The process's log file in the test's folder (read when a test fails)."""
        return open(self.folder / f"{name}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - the child writes it

    def start(self, workers: int = 1) -> Cluster:
        info = self.folder / f"scheduler-{time.monotonic_ns()}.json"
        proto = ["--protocol", "tls"] if self.tls else []
        self.scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                           "--scheduler-file", str(info), *proto, *self._tls_args()],
                                          env=self._env(), stdout=subprocess.DEVNULL, stderr=self._log("scheduler"))
        deadline = time.monotonic() + 300  # a busy machine starts Python slowly
        while not info.is_file() and time.monotonic() < deadline and self.scheduler.poll() is None:
            time.sleep(0.1)
        if not info.is_file():
            self.stop()
            raise RuntimeError(f"`dask scheduler` did not start (its log is in {self.folder})")
        self.address = json.loads(info.read_text())["address"]
        for _ in range(workers):
            self.add_worker()
        return self

    def add_worker(self, resources: str | None = None) -> subprocess.Popen:
        extra = ["--resources", resources] if resources else []
        p = subprocess.Popen([DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                              "--no-nanny", *extra, *self._tls_args()],
                             env=self._env(), stdout=subprocess.DEVNULL, stderr=self._log(f"worker-{len(self.workers)}"))
        self.workers.append(p)
        return p

    def stop(self) -> None:
        """Workers killed outright (a graceful close waits on the round they run), then the scheduler ended."""
        for p in self.workers:
            if p.poll() is None:
                p.kill()
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
        for p in [*self.workers, self.scheduler]:
            if p is None:
                continue
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
