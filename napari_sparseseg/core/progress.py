"""Progress messages yielded by the long-running generators (train, predict)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One step of a long computation.

    Args:
        stage: ``"train"`` or ``"predict"``.
        step: steps done so far (1-based after the first step).
        total: planned steps (training may stop earlier on its time budget).
        elapsed: seconds since the computation started.
        loss: training loss of this step (``None`` while predicting).
        budget: the time budget in seconds, if any.
    """

    stage: str
    step: int
    total: int
    elapsed: float
    loss: float | None = None
    budget: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the work done, in [0, 1], using whichever of steps or time is further."""
        parts = [self.step / self.total] if self.total else []
        if self.budget:
            parts.append(self.elapsed / self.budget)
        return min(1.0, max(parts, default=0.0))

    def __str__(self) -> str:
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        return f"{self.stage} {self.step}/{self.total}{loss}  {self.elapsed:.1f}s"
