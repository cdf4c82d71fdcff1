"""Quiet native readers: what ITK, MetaIO, GDCM and nibabel print becomes part of our error message.

SimpleITK's file readers (MetaIO, NRRD, GDCM) write their complaints about a damaged file
straight to the process's stderr (file descriptor 2) and nibabel raises Python warnings. The
command line promises one line per error, and a widget user never sees stderr, so readers run
inside :func:`quiet_native_output`: both are captured, and :func:`reason` folds them into the
message of the :class:`~napari_sparseseg.core.base.errors.InputError` that follows.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings

_LOCK = threading.RLock()


class Captured:
    """The text a native reader printed, available after the ``with`` block ends."""

    def __init__(self):
        self.text = ""

    @property
    def lines(self) -> list[str]:
        """Non-empty, de-duplicated lines, in order."""
        seen, out = set(), []
        for line in self.text.splitlines():
            line = line.strip()
            if line and line not in seen:
                seen.add(line)
                out.append(line)
        return out


@contextlib.contextmanager
def quiet_native_output():
    """Capture file descriptor 2 and Python warnings for the duration of a native read.

    Held under a lock, so two readers in two threads do not interleave their redirections. If
    descriptor 2 cannot be redirected (no such descriptor), only the warnings are captured.
    """
    captured = Captured()
    with _LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = None
        tmp = tempfile.TemporaryFile(mode="w+b")
        try:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            try:
                saved = os.dup(2)
                os.dup2(tmp.fileno(), 2)
            except OSError:
                saved = None
            yield captured
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            tmp.close()
            captured.text = "\n".join([text] + [str(w.message) for w in caught])


_ITK_PREFIX = re.compile(r"(Exception thrown in SimpleITK \w+: \S+: )?\b(s?itk::ERROR|ITK ERROR): (\w+\(0x[0-9a-fA-F]+\): )?")


def reason(exc: BaseException | None, captured: Captured | None = None, path=None, limit: int = 300) -> str:
    """A short, one-line reason: the reader's own complaint, without ITK's source paths and addresses.

    Args:
        exc: the exception the reader raised.
        captured: what it printed (MetaIO and GDCM explain themselves there).
        path: the file read; its name is dropped from the text (the message names it already).
        limit: the longest reason returned.
    """
    said = [line for line in (captured.lines if captured is not None else [])
            if not line.startswith("WARNING: In ") and not re.match(r"^\w+ \(0x[0-9a-fA-F]+\): ", line)]
    text = " ".join(str(exc).split()) if exc is not None else ""
    text = _ITK_PREFIX.sub("", text)
    if path is not None:
        text = text.replace(f'"{path}"', "the file").replace(str(path), "the file")
    if "[nrrd]" in text:  # teem's chain of callers: the last two say what went wrong
        chain = [part.strip() for part in text.split("[nrrd]") if part.strip()]
        text = "; ".join(chain[-2:])
    if "No such file" in text and path is not None and os.path.exists(path):
        text = "its data is truncated or damaged"  # MetaIO's words when the voxels end early
    if said and ("cannot be read" in text or "No such file" in text):
        text = ""  # MetaIO's own lines say why; ITK's wrapper only says it failed
    parts = ([text] if text else []) + said
    out = "; ".join(dict.fromkeys(parts)) or (type(exc).__name__ if exc is not None else "unknown error")
    return out if len(out) <= limit else out[: limit - 3] + "..."
