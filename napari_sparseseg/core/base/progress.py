"""Progress of the long computations, and the drivers of their generators.

Training, prediction and a session's round are generators that ``yield`` :class:`Progress`
and ``return`` their result (the stardist-napari pattern, with ``GeneratorWorker.returned``
in the widget). Here are the ways to drive them outside a GUI: :func:`run_to_end`
(synchronously), :func:`until_stopped` (stop on an event, keeping what was done), and
:class:`ProgressPrinter` (a tqdm bar per stage on a terminal, one line per stage otherwise).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Progress", "ProgressPrinter", "run_to_end", "until_stopped"]


@dataclass(frozen=True)
class Progress:
    """One step of a long computation.

    Args:
        stage: ``"pretrain"``, ``"train"`` or ``"predict"``.
        step: steps done so far (1-based after the first step).
        total: planned steps, 0 when only a time budget bounds the stage.
        elapsed: seconds since the computation started.
        loss: training loss of this step (``None`` while predicting).
        budget: the time budget in seconds, if any.
        preview: an early dense mask (class indices, the image's shape) while training goes on:
            the forest's, a few seconds after Train (:class:`~napari_sparseseg.core.training.train.Trainer`
            with ``preview=True``); ``None`` on every other step.

    Examples:
        ```python
        import napari_sparseseg as ss
        trainer = ss.Trainer(image, scribbles, ss.TrainConfig(time_budget=10))
        for p in trainer.run():
            print(p.stage, p.step, p.loss, round(p.elapsed, 1))  # one line per training step
        ```
    """

    stage: str
    step: int
    total: int
    elapsed: float
    loss: float | None = None
    budget: float | None = None
    preview: Any = field(default=None, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        """Share of the work done, in [0, 1], using whichever of steps or time is further."""
        parts = [self.step / self.total] if self.total else []
        if self.budget:
            parts.append(self.elapsed / self.budget)
        return min(1.0, max(parts, default=0.0))

    def __str__(self) -> str:
        """``train 12/1000  loss 0.4321  3.2s`` (no ``/total`` when time alone bounds it)."""
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        total = f"/{self.total}" if self.total else ""
        return f"{self.stage} {self.step}{total}{loss}  {self.elapsed:.1f}s"


def run_to_end(gen: Generator, on_progress: Callable[[Progress], Any] | None = None):
    """Drive a progress generator synchronously and return its result.

    Args:
        gen: a generator that yields :class:`Progress` and returns a result.
        on_progress: called with every yielded item.

    Returns:
        The generator's return value.

    Examples:
        >>> import napari_sparseseg as ss
        >>> def counting():
        ...     yield ss.Progress("train", 1, 2, 0.1)
        ...     yield ss.Progress("train", 2, 2, 0.2)
        ...     return "done"
        >>> ss.run_to_end(counting(), lambda p: print(p.step))
        1
        2
        'done'
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(p)


def until_stopped(gen: Generator, stop: threading.Event):
    """``yield from gen`` until it returns, or until ``stop`` is set after a step.

    When stopped, the generator is closed, so its ``finally`` runs (the trainer keeps its
    averaged weights). Use as ``value, stopped = yield from until_stopped(gen, event)``.

    Returns:
        ``(value, stopped)``: the generator's result (``None`` when stopped) and whether it was.
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as done:
            return done.value, False
        yield p
        if stop.is_set():
            gen.close()
            return None, True


class ProgressPrinter:
    """Shows :class:`Progress` on a stream (stderr by default).

    On a terminal each stage gets a tqdm bar (steps, loss, time against the budget). When the
    stream is not a terminal (a log file, CI) each stage prints one line when it ends, e.g.
    ``[train] 312 steps, 60.1 s, loss 0.1234`` (a stage cut short by an exception prints no
    line). ``quiet`` prints nothing. Use it as a context manager, so the last stage's bar or
    line is finished::

        with ProgressPrinter() as show:
            result = run_to_end(trainer.run(), show)

    Args:
        stream: where to write (default ``sys.stderr``).
        quiet: print nothing.
        tty: force the terminal (``True``) or line (``False``) style; default: ask the stream.

    Examples:
        >>> import io, napari_sparseseg as ss
        >>> log = io.StringIO()
        >>> with ss.ProgressPrinter(stream=log, tty=False) as show:
        ...     show(ss.Progress("train", 1, 0, 0.5, loss=0.25))
        >>> "[train] 1 steps" in log.getvalue()
        True
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self._last: Progress | None = None
        self._bar = None

    def __call__(self, p: Progress) -> None:
        """Record one step (switching stage finishes the previous one)."""
        if self.quiet:
            return
        if self._last is not None and p.stage != self._last.stage:
            self.finish()
        self._last = p
        if self.tty:
            self._update_bar(p)

    def _update_bar(self, p: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=1000, desc=p.stage, file=self.stream, leave=True, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        self._bar.n = int(1000 * p.fraction)
        total = f"/{p.total}" if p.total else ""
        budget = f"/{p.budget:.0f}" if p.budget else ""
        loss = f", loss {p.loss:.4f}" if p.loss is not None else ""
        self._bar.set_postfix_str(f"{p.step}{total} {'rows' if p.stage == 'predict' else 'steps'}{loss}, "
                                  f"{p.elapsed:.0f}{budget} s", refresh=False)
        self._bar.refresh()

    def finish(self) -> None:
        """End the current stage: close its bar, or print its one line."""
        p, self._last = self._last, None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif p is not None and not self.quiet:
            unit = "rows" if p.stage == "predict" else "steps"
            loss = f", loss {p.loss:.4f}" if p.loss is not None else ""
            print(f"[{p.stage}] {p.step} {unit}, {p.elapsed:.1f} s{loss}", file=self.stream, flush=True)

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._bar is None:
            self._last = None  # interrupted or failed: no "done" line for an unfinished stage
        self.finish()
