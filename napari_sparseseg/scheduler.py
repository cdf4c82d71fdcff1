"""A Dask scheduler named by its address: the address checked, then connected to in bounded time.

:func:`connect` is the one way napari-sparseseg reaches an existing scheduler
(``sparseseg batch --scheduler``, and any command that runs rounds on a remote cluster):

1. :func:`check_address` checks the syntax before anything is opened. Accepted:
   ``tcp://HOST:PORT``, ``tls://HOST:PORT`` and ``HOST:PORT`` (meaning ``tcp://``), as
   ``dask scheduler`` prints it. ``HOST`` is a host name, an IPv4 address, or an IPv6 address
   in brackets (``tcp://[::1]:8786``); the port is always given. Refused with a line saying
   what is accepted: other protocols (``http://``, the dashboard's, ``ucx://``, ``inproc://``,
   ``ws://``...), an IPv6 address without brackets, no port or one outside 1..65535, a user, a
   path or a query, spaces, anything else (``garbage``).
2. A plain TCP connection (name resolution included) within the timeout, so "nothing listens
   there", "the host name is not known" and "no answer" are told apart.
3. Dask's handshake and an ``identity`` request, under one hard deadline: a server that
   accepts the connection but never speaks Dask (Dask's own ``connect`` waits for its
   handshake without a bound), speaks another protocol, or is a worker rather than the
   scheduler, is refused naming the address and what to check. Only then is a
   ``distributed.Client`` made, and, with ``min_workers``, a worker awaited within what is
   left of the timeout.

Each step runs in a daemon thread joined with the time left, so the whole takes at most about
``timeout`` seconds whatever the network or the server does. Every failure is an
:class:`~napari_sparseseg.core.base.errors.InputError` whose ``path`` is the address
(``sparseseg: error: tcp://host:8786: ...``, exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import threading
import time

from napari_sparseseg.core.base.errors import InputError

__all__ = ["ACCEPTED", "DEFAULT_PORT", "SCHEMES", "TLSRefused", "check_address", "connect", "split_address"]

#: The protocols accepted (``tcp`` is the default without one).
SCHEMES = ("tcp", "tls")
#: Dask's usual scheduler port (named in the messages).
DEFAULT_PORT = 8786
#: What an address may be, for the messages.
ACCEPTED = ("tcp://HOST:PORT or tls://HOST:PORT (or HOST:PORT, meaning tcp://), as `dask scheduler` prints it: HOST a "
            "host name, an IPv4 address or an IPv6 address in brackets ([::1]), PORT 1-65535")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_MAX_ADDRESS = 512


class TLSRefused(InputError):
    """The scheduler refused this client's TLS certificates; ``detail`` is Dask's or OpenSSL's reason."""

    def __init__(self, address: str, detail: str):
        super().__init__(f"the scheduler refused the TLS connection ({detail}). Check that the certificate and key were "
                         "signed by the cluster's CA and that the CA file is the cluster's.", path=address)
        self.detail = detail


def _bad(address, problem: str) -> InputError:
    shown = address if isinstance(address, str) and len(address) <= 100 and address.isprintable() else None
    return InputError(f"not a Dask scheduler address: {problem}; give {ACCEPTED}.", path=shown)


def split_address(address) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a scheduler address (host without brackets), or :class:`InputError`.

    See the module docstring for what is accepted.
    """
    if not isinstance(address, str) or not address.strip():
        raise _bad(address, "it is empty" if isinstance(address, str) else f"it is {type(address).__name__}, not text")
    text = address.strip()
    if len(text) > _MAX_ADDRESS or not text.isprintable() or any(c.isspace() for c in text):
        raise _bad(address, "it is too long or holds spaces or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        why = {"http": "that is a web address (the dashboard's?), not the scheduler's",
               "https": "that is a web address (the dashboard's?), not the scheduler's",
               "ucx": "UCX needs the ucx-py transport, which napari-sparseseg does not use",
               "inproc": "an in-process scheduler cannot be reached from another process",
               "ws": "websockets are not supported here", "wss": "websockets are not supported here"}
        raise _bad(address, f"the protocol {scheme + '://'!r} is not accepted"
                            + (f" ({why[scheme]})" if scheme in why else ""))
    if any(c in rest for c in "/?#@\\"):
        raise _bad(address, "it holds a path, a query or a user (only HOST:PORT follows the protocol)")
    if rest.startswith("["):
        inside, close, after = rest[1:].partition("]")
        if not close:
            raise _bad(address, "an IPv6 address in brackets lacks its ']'")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise _bad(address, f"{inside!r:.60} in brackets is not an IPv6 address") from None
        host = inside
        if after and not after.startswith(":"):
            raise _bad(address, "after the ']' of an IPv6 address comes ':PORT' or nothing")
        port_text = after[1:] if after else None
    else:
        if rest.count(":") > 1:
            raise _bad(address, "an IPv6 address goes in brackets, e.g. tcp://[::1]:8786")
        host, colon, port_text = rest.partition(":")
        port_text = port_text if colon else None
        _check_host(address, host)
    if port_text is None:
        raise _bad(address, f"it gives no port (the scheduler's is {DEFAULT_PORT} unless it was started with another)")
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise _bad(address, f"the port {port_text!r:.20} is not a number in 1..65535")
    return scheme, host, int(port_text)


def _check_host(address, host: str) -> None:
    if not host:
        raise _bad(address, "it names no host")
    labels = host.rstrip(".").split(".") if host != "." else [""]
    if all(label.isdigit() for label in labels if label) and any(labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(address, f"{host!r:.60} is not an IPv4 address") from None
        return
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _bad(address, f"{host!r:.60} is not a host name (letters, digits, '-' and '_' between dots)")


def check_address(address) -> str:
    """The address in the form Dask connects to (``tcp://host:8786``, ``tls://[::1]:8786``), or :class:`InputError`.

    Checks the syntax only (nothing is opened): call it before any work.

    Examples:
        >>> from napari_sparseseg.scheduler import check_address
        >>> check_address("10.0.0.5:8786"), check_address("TLS://[::1]:9000")
        ('tcp://10.0.0.5:8786', 'tls://[::1]:9000')
    """
    scheme, host, port = split_address(address)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _in_thread(fn, seconds: float):
    """``fn()`` in a daemon thread, waited for at most ``seconds``: ``(done, result, exception)``."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="sparseseg-connect", daemon=True)
    t.start()
    t.join(max(0.0, seconds))
    return not t.is_alive(), box.get("result"), box.get("error")


def _unreachable(address: str, problem: str) -> InputError:
    return InputError(f"cannot reach the Dask scheduler: {problem}. Check the address (the scheduler's, "
                      f"{DEFAULT_PORT} by default, as `dask scheduler` prints it), that the scheduler runs and that no "
                      "firewall stands between; or leave out --scheduler to use a local cluster.", path=address)


def _tcp(address: str, host: str, port: int, seconds: float, said: float) -> None:
    """A plain TCP connection to the scheduler's port, within ``seconds``, told apart by what failed."""

    def open_and_close():
        with socket.create_connection((host, port), timeout=max(seconds, 0.01)):
            pass

    done, _, exc = _in_thread(open_and_close, seconds)
    if not done:
        raise _unreachable(address, f"no answer within {said:g} s (the host name could not be resolved or the host "
                                    "does not answer)")
    if exc is None:
        return
    if isinstance(exc, socket.gaierror):
        raise _unreachable(address, f"the host name {host!r} is not known ({exc.strerror or exc})")
    if isinstance(exc, ConnectionRefusedError):
        raise _unreachable(address, f"nothing listens on port {port} of {host} (connection refused)")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        raise _unreachable(address, f"no answer within {said:g} s (the host is down or a firewall drops the "
                                    "connection)")
    raise _unreachable(address, " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__)


def _identity(address: str, security, seconds: float, said: float) -> dict:
    """Dask's handshake and the server's ``identity``, under one deadline (see the module docstring)."""
    from distributed.comm import connect as dask_connect

    args = security.get_connection_args("client") if security is not None else {}

    async def ask():
        comm = await dask_connect(address, timeout=seconds, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(ask(), seconds)

    done, reply, exc = _in_thread(lambda: asyncio.run(bounded()), seconds + 1.0)
    if not done or isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        raise InputError(f"a server accepted the connection but did not answer as a Dask scheduler within {said:g} s. "
                         "Check that the port is the scheduler's (8786 by default; not the dashboard's 8787 or another "
                         "service), that the scheduler is not overloaded, and, if it uses TLS, give tls:// and its "
                         "certificates.", path=address)
    if exc is not None:
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        if security is not None and any(w in f"{type(exc).__name__} {text}".lower() for w in ("ssl", "certificate", "tls")):
            raise TLSRefused(address, text)
        raise InputError(f"the server there does not speak Dask's protocol ({text}). Check that the address is the "
                         "scheduler's (8786 by default, not the dashboard's 8787), and tcp:// or tls:// as the scheduler "
                         "was started.", path=address)
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else None
        what = f"a Dask {str(kind).lower()[:40]}" if kind else "something that answers Dask's handshake"
        raise InputError(f"that is {what}, not a Dask scheduler; give the scheduler's address (as `dask scheduler` "
                         "prints it).", path=address)
    return reply


def _tls_from_config(address: str):
    """The TLS certificates of Dask's configuration (``distributed.comm.tls``), needed for a tls:// address."""
    from distributed import Security

    security = Security()
    if not security.tls_ca_file:
        raise InputError("a tls:// scheduler needs its certificates, and Dask's configuration names none: set "
                         "distributed.comm.tls.ca-file, .client.cert and .client.key (or DASK_DISTRIBUTED__COMM__TLS__"
                         "CA_FILE...), or give a tcp:// address.", path=address)
    return security


def connect(address: str, security=None, timeout: float = 10.0, min_workers: int = 1):
    """A ``distributed.Client`` of the scheduler at ``address``, reached in bounded time, or :class:`InputError`.

    Args:
        address: ``tcp://HOST:PORT``, ``tls://HOST:PORT`` or ``HOST:PORT`` (:func:`check_address`).
        security: a ``distributed.Security`` (TLS certificates), or ``None``: none for tcp://, those
            of Dask's configuration (``distributed.comm.tls``) for tls://.
        timeout: seconds for all of it: resolving, connecting, the handshake, and the workers
            (``BatchConfig.connect_timeout``, ``--connect-timeout``).
        min_workers: wait (within ``timeout``) until the scheduler has this many workers; 0: do not wait.

    Returns:
        The client (not the default client; the caller closes it).

    Raises:
        InputError: the address is malformed; nothing answers there; a server there does not
            answer as a Dask scheduler within ``timeout`` (accepts and stays silent, speaks
            another protocol, is a worker); no worker joined within ``timeout``. The message
            names the address and what to check.
    """
    from distributed import Client

    target = check_address(address)
    deadline = time.monotonic() + float(timeout)

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    scheme, host, port = split_address(target)
    if scheme == "tls" and security is None:
        security = _tls_from_config(target)
    _tcp(target, host, port, left(), timeout)
    _identity(target, security, left(), timeout)

    def make():
        return Client(target, security=security, timeout=left(), set_as_default=False)

    done, client, exc = _in_thread(make, left() + 1.0)
    if not done or exc is not None:
        problem = (f"no answer within {timeout:g} s" if not done or isinstance(exc, (TimeoutError, asyncio.TimeoutError))
                   else " ".join(str(exc).split())[:160] or type(exc).__name__)
        raise _unreachable(target, f"the scheduler answered but the client could not connect ({problem})")
    if min_workers > 0:
        try:
            client.wait_for_workers(min_workers, timeout=left())
        except BaseException as exc:
            with contextlib.suppress(Exception):
                client.close(timeout=2)
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError, OSError)):
                raise InputError(f"the Dask scheduler has {'no worker' if min_workers == 1 else 'too few workers'} "
                                 f"after {timeout:g} s; start some with `dask worker {target}` in this environment (or "
                                 "give --connect-timeout more seconds).", path=target) from exc
            raise
    return client
