"""Typed errors. Every message says what went wrong and what to do about it."""

from __future__ import annotations

import reprlib


class _Brief(reprlib.Repr):
    """``repr`` cut short: a few items, a few levels, no huge number spelled out (see :func:`brief`)."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 4, 6
        self.maxstring, self.maxother, self.maxlong = 80, 80, 60

    def repr_int(self, x, level):
        if x.bit_length() > 200:  # repr of a 5000-digit int raises in Python >= 3.11; a long one says nothing
            return f"<a whole number of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_BRIEF = _Brief()


def brief(value) -> str:
    """``repr(value)`` for a message, bounded: at most a few items and levels, about 80 characters a part.

    A message quotes what it refuses; a value read from a file may be a list of a million items,
    nested a thousand deep, or a number of thousands of digits, so its full ``repr`` would be a
    line of megabytes (or raise). Short values read exactly as ``repr``.

    Examples:
        >>> from napari_sparseseg.core.base.errors import brief
        >>> brief([4096, 4096, 4096]), brief([None] * 1000), brief(10**500)
        ('[4096, 4096, 4096]', '[None, None, None, None, None, None, ...]', '<a whole number of about 500 digits>')
    """
    try:
        return " ".join(_BRIEF.repr(value).split())
    except Exception:  # noqa: BLE001 - an object whose repr fails is still named
        return f"<a {type(value).__name__}>"


class SparseSegError(Exception):
    """Base class of all errors napari-sparseseg raises on purpose.

    Examples:
        >>> import napari_sparseseg as ss
        >>> try:
        ...     ss.read_image("no_such_scan.nii.gz")
        ... except ss.SparseSegError as exc:
        ...     print(exc.one_line())
        no_such_scan.nii.gz: file not found; check the path.

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
        if not self.path:
            return text
        path = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.path)  # a name may hold a newline
        return f"{path}: {text}"


class InputError(SparseSegError, ValueError):
    """Bad input data: unreadable file, wrong dimensionality, mismatched grids, NaNs...

    Examples:
        >>> import napari_sparseseg as ss
        >>> image, geom = ss.read_image(ss.load_sample()["path"] / "image.nii.gz")
        >>> try:
        ...     ss.write_labels("mask.nii.gz", image[:2], geom)  # not the scan's shape
        ... except ss.InputError as exc:
        ...     print(exc.message)
        labels shape (2, 80, 110) does not match the geometry (52, 80, 110).
    """


class ScribbleError(InputError):
    """The scribbles cannot train a model (none, one class only, wrong values).

    Examples:
        >>> import numpy as np, napari_sparseseg as ss
        >>> image = np.zeros((8, 8, 8), np.float32)
        >>> one_class = np.zeros((8, 8, 8), np.uint8); one_class[4, 4, 4] = 1  # background only
        >>> try:
        ...     ss.Trainer(image, one_class, ss.TrainConfig(max_steps=1))
        ... except ss.ScribbleError as exc:
        ...     print(type(exc).__name__)
        ScribbleError
    """


class CheckpointError(SparseSegError):
    """A saved model is missing, corrupt, or from an incompatible version.

    Examples:
        >>> import napari_sparseseg as ss
        >>> try:
        ...     ss.load_model("not_a_model_folder")
        ... except ss.CheckpointError as exc:
        ...     print(type(exc).__name__)
        CheckpointError
    """


class OutputError(SparseSegError, OSError):
    """An output cannot be written (folder missing or not writable).

    Examples:
        >>> import napari_sparseseg as ss
        >>> image, geom = ss.read_image(ss.load_sample()["path"] / "image.nii.gz")
        >>> try:
        ...     ss.write_labels("no_such_folder/mask.nii.gz", image > 0, geom)
        ... except ss.OutputError as exc:
        ...     print(type(exc).__name__, isinstance(exc, OSError))
        OutputError True
    """


class ConfigError(SparseSegError, ValueError):
    """A setting is out of range or not one of its options (CLI flag, widget, session file, API).

    Examples:
        >>> import napari_sparseseg as ss
        >>> try:
        ...     ss.TrainConfig(device="gpu")
        ... except ss.ConfigError as exc:
        ...     print(isinstance(exc, ValueError))
        True
    """


class DeviceError(ConfigError):
    """The requested compute device is unknown or not available.

    Examples:
        >>> import napari_sparseseg as ss
        >>> issubclass(ss.DeviceError, ss.ConfigError)
        True
    """


class TrainingCancelled(SparseSegError):
    """Raised inside a training generator when the caller asked it to stop.

    Examples:
        >>> import napari_sparseseg as ss
        >>> issubclass(ss.TrainingCancelled, ss.SparseSegError)
        True
    """
