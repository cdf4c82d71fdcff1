"""Shared parts of the subcommands: exit codes, signals, status lines, inputs and outputs.

Light on purpose (``io`` and ``core.base``, no torch): :mod:`napari_sparseseg.cli` imports it
for :func:`~napari_sparseseg.cli.main`'s signal handling before any subcommand is loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from napari_sparseseg.core.base.config import RemoteConfig
from napari_sparseseg.core.base.errors import ConfigError, OutputError
from napari_sparseseg.core.base.progress import ProgressPrinter
from napari_sparseseg.io import check_outputs, read_scan
from napari_sparseseg.io.paths import file_suffix

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "Signals",
    "inputs_of",
    "outputs_of",
    "plan_outputs",
    "progress_printer",
    "read_inputs",
    "remote_config",
    "say",
    "suggestions_path",
]

EXIT_OK, EXIT_BAD_INPUT, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


def remote_config(args) -> RemoteConfig | None:
    """The cluster of ``--scheduler`` with its TLS files and timeouts, or ``None`` (this computer).

    Shared by ``segment`` and ``batch``: ``--tls-ca``/``--tls-cert``/``--tls-key`` without
    ``--scheduler`` are refused (:class:`ConfigError`) before any work.
    """
    tls = {n: getattr(args, n, None) for n in ("tls_ca", "tls_cert", "tls_key")}
    if not getattr(args, "scheduler", None):
        if any(tls.values()):
            raise ConfigError("--tls-ca, --tls-cert and --tls-key are for --scheduler tls://HOST:PORT; add it or leave "
                              "them out.")
        return None
    timeouts = {n: getattr(args, n) for n in ("connect_timeout", "silence_timeout") if getattr(args, n, None) is not None}
    return RemoteConfig(scheduler=args.scheduler, **tls, **timeouts)


def say(args, message: str) -> None:
    """A status line on stderr, unless ``-q``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def progress_printer(args) -> ProgressPrinter:
    """The progress display of a command (silent with ``-q``)."""
    return ProgressPrinter(quiet=getattr(args, "quiet", False))


class Signals:
    """Ctrl-C (SIGINT) and SIGTERM raise ``KeyboardInterrupt``, except while an output is written.

    Inside :meth:`held` a signal is remembered and raised once the write is complete, so the
    command stops between outputs, never in the middle of one. A signal the caller ignores
    (``SIG_IGN``, e.g. a background job) stays ignored.
    """

    def __init__(self):
        self._hold, self._pending, self._saved, self._fired = 0, None, {}, False

    @property
    def fired(self) -> bool:
        """Whether a signal has been turned into ``KeyboardInterrupt`` (the command is stopping)."""
        return self._fired

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; an ignored signal stays ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN or old is None:
                continue
            self._saved[sig] = old
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved.clear()

    def _handle(self, signum, frame) -> None:
        if self._fired:  # already stopping: a second Ctrl-C must not cut the message short
            return
        if self._hold:
            self._pending = signum
            return
        self._fired = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        """Hold a signal back until the block (an output's write) is complete."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
        if not self._hold and self._pending is not None:
            self._pending, self._fired = None, True
            raise KeyboardInterrupt


def inputs_of(args) -> dict:
    """The inputs of a command, by the name its error messages use."""
    return {
        "image": getattr(args, "image", None),
        "scribbles": getattr(args, "scribbles", None),
        "corrections": getattr(args, "corrections", None),
        "--boxes file": getattr(args, "boxes", None),
        "--clicks file": getattr(args, "clicks", None),
        "--init-model folder": getattr(args, "init_model", None),
        "--model folder": getattr(args, "model", None),
    }


def outputs_of(args) -> dict:
    """The outputs of ``segment``/``predict``, by kind (:data:`napari_sparseseg.io.outputs.OUTPUT_KINDS`).

    ``--suggest`` without ``--suggestions`` writes ``NAME_suggestions.json`` beside the mask, a
    file the user did not name: it is never replaced (refused here, before any work, and
    written with :func:`~napari_sparseseg.io.atomic.atomic_file`'s ``exclusive`` at the end).

    Raises:
        OutputError: that default suggestions file exists already.
    """
    out = {"mask": args.output, "probabilities": args.probabilities, "model": getattr(args, "model_out", None)}
    if getattr(args, "suggest", None):
        args.suggestions_named = bool(args.suggestions)
        out["suggestions"] = args.suggestions or suggestions_path(args.output)
        if not args.suggestions_named and os.path.lexists(out["suggestions"]):
            name = Path(out["suggestions"]).name
            raise OutputError(f"--suggest writes {name} beside the mask, and a file of that name exists; it is never "
                              f"replaced unless named: move it, or pass --suggestions {name} to replace it (or another "
                              "name).", path=out["suggestions"])
        args.suggestions = out["suggestions"]
    return out


def suggestions_path(mask) -> str:
    """``segment --suggest``'s default JSON: beside the mask, ``NAME_suggestions.json``."""
    path = Path(mask)
    stem = path.name[: len(path.name) - len(file_suffix(path))]  # a DICOM folder has no suffix
    return str(path.with_name(f"{stem}_suggestions.json"))


def plan_outputs(args) -> dict:
    """Check every output against the inputs and each other, before any work; plan them in the log."""
    outputs = outputs_of(args)
    check_outputs(outputs, inputs_of(args))
    args.log.plan(outputs)
    return outputs


def read_inputs(args, class_names=None):
    """The scan, its geometry, strokes and corrections named by ``args``.

    Strokes given as a DICOM SEG of a DICOM series image are matched to ``class_names`` by
    segment label when given.
    """
    return read_scan(args.image, getattr(args, "scribbles", None), getattr(args, "corrections", None),
                     class_names=class_names)
