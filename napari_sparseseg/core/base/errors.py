"""Typed errors. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class SparseSegError(Exception):
    """Base class of all errors napari-sparseseg raises on purpose.

    Args:
        message: what is wrong and what to do.
        path: the file or folder concerned, if any; the CLI prints it first.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def one_line(self) -> str:
        """``path: message`` on one line, as the CLI prints it."""
        text = " ".join(self.message.split())
        return f"{self.path}: {text}" if self.path else text


class InputError(SparseSegError, ValueError):
    """Bad input data: unreadable file, wrong dimensionality, mismatched grids, NaNs..."""


class ScribbleError(InputError):
    """The scribbles cannot train a model (none, one class only, wrong values)."""


class CheckpointError(SparseSegError):
    """A saved model is missing, corrupt, or from an incompatible version."""


class OutputError(SparseSegError, OSError):
    """An output cannot be written (folder missing or not writable)."""


class ConfigError(SparseSegError, ValueError):
    """A setting is out of range or not one of its options (CLI flag, widget, session file, API)."""


class DeviceError(ConfigError):
    """The requested compute device is unknown or not available."""


class TrainingCancelled(SparseSegError):
    """Raised inside a training generator when the caller asked it to stop."""
