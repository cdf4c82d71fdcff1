"""Connecting to a Dask scheduler for remote rounds: TLS from the settings, a bounded wait, one-line errors.

:func:`connect` is the one function that opens a connection (so a shared address check can
wrap it); :func:`security` turns the certificate settings into a ``distributed.Security``;
:func:`plain_warning` is the one-line warning for unencrypted traffic off this computer.
"""

from __future__ import annotations

import ipaddress
import os

from napari_sparseseg.core.base.config import RemoteConfig
from napari_sparseseg.core.base.errors import InputError, SparseSegError
from napari_sparseseg.scheduler import TLSRefused
from napari_sparseseg.scheduler import connect as reach

__all__ = ["RemoteError", "connect", "host_of", "plain_warning", "security"]

_LOCAL = "untick \"Train on a Dask cluster\" (widget) or leave out --scheduler (CLI) to train on this computer"


class RemoteError(SparseSegError):
    """A remote round could not run or was lost: the cluster, the network or the worker.

    The session is unchanged (strokes, corrections and the last good model are kept); the
    message says what happened and how to go on (on this computer, or with another worker).
    """


def host_of(address: str) -> str:
    """``HOST`` of ``PROTOCOL://HOST:PORT`` (IPv6 brackets removed); the minimum this module needs."""
    rest = address.split("://", 1)[-1]
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return host.strip("[]")


def _protocol(address: str) -> str:
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_warning(address: str) -> str | None:
    """The warning line for plain ``tcp://`` to another computer (scans are patient data), else ``None``."""
    host = host_of(address)
    if _protocol(address) == "tcp" and not _loopback(host):
        return (f"warning: {address} is plain tcp://: the scan and the strokes cross the network unencrypted to {host}; "
                "use tls:// with certificates (docs: Remote rounds).")
    return None


def security(cfg: RemoteConfig):
    """The ``distributed.Security`` of ``cfg`` (TLS with its CA, certificate and key), or ``None`` for tcp://.

    Raises:
        RemoteError: tls:// without the three files, a file missing, or files with a tcp:// address.
    """
    files = {"CA certificate": cfg.tls_ca, "certificate": cfg.tls_cert, "key": cfg.tls_key}
    given = {k: v for k, v in files.items() if v}
    tls = _protocol(cfg.scheduler or "") == "tls"
    if not tls:
        if given:
            raise RemoteError(f"TLS files are given but the address {cfg.scheduler} is not tls://; write it as "
                              "tls://HOST:PORT (or leave out the files).")
        return None
    missing = [k for k in files if k not in given]
    if missing:
        raise RemoteError(f"{cfg.scheduler} is TLS: give the {', '.join(missing)} (PEM files: --tls-ca, --tls-cert, "
                          "--tls-key, or the widget's fields); docs: Remote rounds shows how to make them.")
    for what, path in given.items():
        if not os.path.isfile(path):
            raise RemoteError(f"the {what} file {path} is not there.", path=path)
    from distributed import Security

    return Security(tls_ca_file=cfg.tls_ca, tls_client_cert=cfg.tls_cert, tls_client_key=cfg.tls_key,
                    require_encryption=True)


def connect(address: str, security=None, timeout: float = 10.0):
    """A ``distributed.Client`` of the scheduler at ``address`` with at least one worker, within ``timeout`` seconds.

    Through :func:`napari_sparseseg.scheduler.connect`, the one way the package reaches a
    scheduler: the address's syntax first, then TCP, Dask's handshake and a worker under one
    deadline (a server that accepts and stays silent is given up too).

    Raises:
        RemoteError: the address is malformed, the scheduler does not answer, refuses the
            certificate, or has no worker by then; the message names the address and what to do.
    """
    try:
        return reach(address, security=security, timeout=timeout, min_workers=1)
    except InputError as exc:
        why = exc.detail if isinstance(exc, TLSRefused) else exc.message
        if isinstance(exc, TLSRefused) or any(w in why.lower() for w in ("ssl", "certificate", "tls", "handshake")):
            raise RemoteError(f"the Dask scheduler at {address} refused the TLS connection ({why}); check that the "
                              "certificate and key were signed by the cluster's CA and that the CA file is the "
                              f"cluster's, or {_LOCAL}.") from exc
        if "no worker" in why:
            raise RemoteError(f"the Dask scheduler at {address} has no worker after {timeout:g} s; start one with "
                              f"`dask worker {address}` (add --resources GPU=1 on a GPU machine), or {_LOCAL}.") from exc
        raise RemoteError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({why}); check the "
                          f"address (tls:// or tcp://, HOST:PORT) and that `dask scheduler` runs there, or {_LOCAL}.") from exc


def ssl_error() -> type:
    import ssl

    return ssl.SSLError


def local_hint() -> str:
    """How to go on without the cluster, as the messages say it."""
    return _LOCAL
