"""When a round has learned: the averaged network checked on a fixed probe of stroke patches.

A round used to train for a fixed number of seconds. That is wrong both ways: a scan whose
strokes the network has fitted after 15 s waits another 45 s for nothing, and a short round
on a large scan stops before the network agrees with the strokes at all. :class:`Probe` picks,
once per round, a few patches centred on strokes (each class alike, the newest corrections
first) and every ``check_every`` steps runs the moving average of the weights (the model a
round returns) on them, without augmentation. Each :class:`Check` records

* ``agreement``: the F1 of the network's classes on the labelled probe voxels, per class — how
  well it fits what the user drew (in-sample, but a network that does not fit its strokes yet
  is certainly not done, and not to be trusted where the forest fits them);
* ``change``: how much the predicted mask on the probe (every voxel, not only the strokes)
  moved since the previous check, as 1 - Dice per structure, averaged over structures.

:class:`Plateau` ends the round once the network reproduces the strokes: a mean agreement of at
least ``1 - tolerance`` at ``patience`` checks in a row, with every class at least half agreed
and, in a correction round, at least ``1 - tolerance`` of the probe's correction voxels right
(they are a small part of a probe's strokes; a warm start fits the old ones from its first
check, and stopped a CT correction round at 120 steps, 0.037 Dice short of its 60 s end).
The user's strokes are the round's specification, so "learned" is "fits them to within 1 %",
the same criterion on every scan. A round whose agreement stops rising short of that (strokes
that contradict each other, a structure the network cannot tell apart) ends when its best
agreement has not risen by ``tolerance`` for ``stall`` checks. Measured on the shared scans
(``benchmarks/plateau.py``, the Dice of the whole scan at every check of 60 s rounds): the
agreement reached 0.99 after 300-400 steps of a first round, and from there the Dice moved
within its checkpoint-to-checkpoint jitter (about ±0.02 with the default moving average) while
the rest of the 60 s went by. A first version that stopped as soon as the agreement was flat
for two checks stopped a brain-tumour round at 80 steps, agreement 0.91 and still rising
slowly, 0.06 Dice short. Looser tolerances were replayed on the checks of 16 rounds bounded at
600 steps (``benchmarks/plateau.py --score``, 4 scans, 2 annotators, first and correction
rounds): 0.03 stops at a median of 190 steps instead of 320, but a brain-tumour first round at
160 steps, 0.089 Dice short of the bound; 0.01 is the loosest that never stopped a first round
more than 0.05 short. The probe mask's change fell to a floor of 3-9 % per check and stayed
there, so it never signals an end on its own; it is recorded with each check. The check
interval is a number of steps (what learning is measured in; a GPU simply gets there sooner),
the horizon of the weights' moving average (``1 / (1 - weight_ema)`` steps), so consecutive
checks see largely new averages.

A correction round is judged with its own tolerance (``TrainConfig.plateau_correction_tolerance``,
0.02). Its keep term (learning without forgetting) holds the corrections' boundary voxels
back: on the shared scans their agreement rose to 0.97-0.98 and stayed there, so at 0.01 every
correction round ended only by the stall rule, 200 steps after its last rise, with its Dice
flat. Replayed on the checks of 12 rounds bounded at 600 steps (4 scans, rounds 0-2;
``benchmarks/plateau.py --score``), 0.02 for the correction rounds stopped them at a median of
230 steps instead of 370, within -0.007..+0.009 of the Dice at 600 steps; the first rounds keep
0.01 (0.02 there stopped two of four rounds 0.04 short).

The last check's agreement per class is the network's *trust*
(:attr:`~napari_sparseseg.core.model.forest.StrokeForest.trust`): prediction weighs the network
by it when fusing with the forest, so a network that has not learned a class yet cannot drag
the forest's mask of that class down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.annotations.labels import SOURCE_CORRECTION

__all__ = ["Check", "Plateau", "Probe"]


@dataclass
class Check:
    """The averaged network on the probe at one step.

    Args:
        step: optimisation steps done.
        seconds: since the round started.
        agreement: per class index, the F1 on the labelled probe voxels (``None`` for a class
            without probe strokes).
        change: 1 - Dice of the probe's predicted structures against the previous check,
            averaged over structures (``None`` at the first check).
        corrections: the share of the probe's correction voxels predicted as corrected
            (``None`` without corrections): what this round must learn.
    """

    step: int
    seconds: float
    agreement: list
    change: float | None
    corrections: float | None = None

    @property
    def mean_agreement(self) -> float:
        """Mean of :attr:`agreement` over the classes that have probe strokes."""
        values = [a for a in self.agreement if a is not None]
        return float(np.mean(values)) if values else 0.0

    @property
    def trust(self) -> np.ndarray:
        """The network's trust per class in the fusion: its :attr:`agreement` (1 for a class without probe strokes)."""
        return np.array([1.0 if a is None else float(a) for a in self.agreement])

    def to_dict(self) -> dict:
        """Plain, rounded numbers (model history, benchmark files)."""
        return {"step": self.step, "seconds": round(self.seconds, 2),
                "agreement": [None if a is None else round(float(a), 4) for a in self.agreement],
                "change": None if self.change is None else round(float(self.change), 4),
                "corrections": None if self.corrections is None else round(float(self.corrections), 4)}


class Probe:
    """A fixed batch of stroke-centred patches of one scan, and the network's agreement with them.

    Args:
        x: the normalised scan ``(C, D, H, W)`` (padded to the patch).
        y: its target (scribble convention: 0 unlabelled, c + 1 class c), same grid.
        source: the source map of ``y`` (corrections are picked first).
        patch: the patch shape.
        num_classes: classes of the network.
        rng: a ``numpy.random.RandomState`` (the round's, so the probe is reproducible).
        per_class: patches centred on each class's strokes (and as many on its corrections).
        max_patches: at most this many patches in all.
        bf16: run the network in bfloat16 autocast, as prediction runs it on this device
            (:func:`~napari_sparseseg.core.base.device.use_bfloat16`): the check sees the numbers the
            round's prediction will, at the cost prediction pays (float32 checks took 10-20 % of a
            round's training time on 2 cores).
    """

    def __init__(self, x, y, source, patch, num_classes: int, rng, per_class: int = 2, max_patches: int = 16,
                 bf16: bool = False):
        self.num_classes, self.bf16 = int(num_classes), bool(bf16)
        centres = []
        for value in range(1, self.num_classes + 1):
            is_value = y == value
            # Each class's strokes, and as many patches again on its corrections (what the round must learn).
            for pool in (is_value, is_value & (source == SOURCE_CORRECTION)):
                where = np.flatnonzero(pool)
                if where.size:
                    picked = rng.choice(where, min(per_class, where.size), replace=False)
                    centres += [np.unravel_index(i, y.shape) for i in picked]
        rng.shuffle(centres)
        centres = centres[:max_patches]
        xs, ys, cs = [], [], []
        for c in centres:
            start = [min(max(0, int(ci) - p // 2), n - p) for ci, p, n in zip(c, patch, y.shape, strict=True)]
            sl = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            xs.append(x[(slice(None),) + sl])
            ys.append(y[sl])
            cs.append(source[sl] == SOURCE_CORRECTION)
        self.x = np.stack(xs).astype(np.float32) if xs else None
        self.y = np.stack(ys).astype(np.int64) if ys else None
        self.corrected = np.stack(cs) if cs else None
        self.previous = None

    def check(self, network, step: int, seconds: float, batch: int = 4) -> Check:
        """Run ``network`` (eval mode, no gradients) on the probe; compare with the strokes and the previous check."""
        import torch

        if self.x is None:
            return Check(step, seconds, [None] * self.num_classes, None)
        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        out = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for i in range(0, len(self.x), batch):
                logits = network(torch.from_numpy(self.x[i : i + batch]).to(device))
                # max, not argmax (the same first of equal maxima): torch's argmax over the class axis
                # took 45 ms a batch on 2 cores, two thirds of a check
                out.append(logits.max(1).indices.cpu().numpy().astype(np.int64))
        network.train(was_training)
        pred = np.concatenate(out)
        labelled = self.y > 0
        truth, guess = self.y[labelled] - 1, pred[labelled]
        agreement = []
        for c in range(self.num_classes):
            t, g = truth == c, guess == c
            if not t.any():
                agreement.append(None)
                continue
            tp = int(np.count_nonzero(t & g))
            agreement.append(2.0 * tp / (int(np.count_nonzero(t)) + int(np.count_nonzero(g))))
        change = None
        if self.previous is not None:
            moved = []
            for c in range(1, self.num_classes):
                a, b = self.previous == c, pred == c
                both = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
                if both:
                    moved.append(1.0 - 2.0 * int(np.count_nonzero(a & b)) / both)
            change = float(np.mean(moved)) if moved else 0.0
        self.previous = pred
        corrections = None
        if self.corrected is not None and self.corrected.any():
            corrections = float(np.mean(pred[self.corrected] == self.y[self.corrected] - 1))
        return Check(step, seconds, agreement, change, corrections)


class Plateau:
    """Ends a round once the network reproduces the strokes, or has stopped getting closer (module docstring).

    Args:
        tolerance: the round is learned at a mean agreement of ``1 - tolerance``; a rise of the
            best agreement smaller than this does not count as progress.
        patience: checks in a row that must be learned.
        stall: checks without progress after which a round that cannot get there ends.
    """

    #: Every class with probe strokes must be agreed with on at least this share of them (a
    #: majority) before the round can end: a network still predicting background everywhere
    #: early on is not "stalled", it has not started.
    STARTED = 0.5

    def __init__(self, tolerance: float, patience: int, stall: int = 10):
        self.tolerance, self.patience, self.stall = float(tolerance), int(patience), int(stall)
        self.calm, self.checks, self.best, self.best_at = 0, 0, -1.0, 0
        self.why: str | None = None

    def reached(self, check: Check) -> bool:
        """Record ``check``; whether the round has learned what it can (:attr:`why`: ``"fitted"`` or ``"stalled"``)."""
        self.checks += 1
        started = all(a is None or a >= self.STARTED for a in check.agreement)
        mean = check.mean_agreement
        if mean >= self.best + self.tolerance:
            self.best, self.best_at = mean, self.checks
        learned = mean >= 1.0 - self.tolerance and (check.corrections is None
                                                    or check.corrections >= 1.0 - self.tolerance)
        self.calm = self.calm + 1 if started and learned else 0
        if self.calm >= self.patience:
            self.why = "fitted"
        elif started and self.checks - self.best_at >= self.stall:
            self.why = "stalled"
        return self.why is not None
