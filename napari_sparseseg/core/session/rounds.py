"""A round of the interactive loop: train from the strokes (warm start), predict, suggest where to paint next.

:func:`run_round` is the loop's work unit, a generator like
:meth:`~napari_sparseseg.core.training.train.Trainer.run`: it trains (warm-starting from the
session's model), then predicts, yielding :class:`~napari_sparseseg.core.base.progress.Progress`;
it never changes the session, so it can run in a worker thread while the user keeps painting.
:func:`accept_round` applies its :class:`RoundResult` to the session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from napari_sparseseg.core.annotations.fill import fill_between
from napari_sparseseg.core.annotations.guide import suggest_slices
from napari_sparseseg.core.annotations.holdout import holdout_dice
from napari_sparseseg.core.annotations.labels import combine_hints, merge_annotations
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.errors import ScribbleError, SparseSegError
from napari_sparseseg.core.base.progress import Progress, until_stopped
from napari_sparseseg.core.inference.predict import Prediction, predict
from napari_sparseseg.core.model.checkpoint import SegModel
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.core.training.train import Trainer, TrainResult

__all__ = ["RoundResult", "accept_round", "run_round"]


@dataclass
class RoundResult:
    """What one :func:`run_round` produced (applied with :func:`accept_round`).

    Args:
        train: the training result, or ``None`` for a prediction-only round.
        prediction: the dense prediction, or ``None`` if it was cancelled.
        model: the model the prediction came from.
        stopped: ``"training"`` if Stop ended training early, ``"prediction"`` if a second
            Stop cancelled the prediction, else ``None``.
        class_names: the names the round trained with.
        suggestions: where to paint next (:func:`~napari_sparseseg.core.annotations.guide.suggest_slices`
            on the prediction's uncertainty and the strokes), best first; empty without a
            prediction or its uncertainty.
        estimate: with ``settings.estimate``, the Dice per class on the strokes held out of this
            round (:func:`~napari_sparseseg.core.annotations.holdout.holdout_dice`; class index ->
            ``ClassEstimate``); empty otherwise.
        labelled: the strokes the round trained on (:meth:`Session.labelled_counts
            <napari_sparseseg.core.session.state.Session.labelled_counts>` of its copy of them);
            ``None``: counted when the round is accepted.
        kept_labels: the session's own copy of ``prediction.labels``, made by the round (in its
            worker thread), so that accepting it does not copy a clinical CT's mask on the GUI
            thread; ``None``: copied when the round is accepted.
    """

    train: TrainResult | None
    prediction: Prediction | None
    model: SegModel
    stopped: str | None
    class_names: list
    suggestions: list = field(default_factory=list)
    estimate: dict = field(default_factory=dict)
    labelled: dict | None = None
    kept_labels: np.ndarray | None = None


def run_round(session: Session, train_cfg: TrainConfig | None = None, predict_cfg: PredictConfig | None = None,
              stop: threading.Event | None = None, train: bool = True,
              pretrained=None, preview: bool = False) -> Generator[Progress, None, RoundResult]:
    """Train from the current annotations (warm start), then predict the whole image.

    A new model (no model yet, or the classes changed) starts from ``pretrained``, a
    :class:`~napari_sparseseg.core.training.pretrain.Pretrained` state of this scan, when given.

    Safe to run in a worker thread: works on copies of the annotations and does not change
    the session. ``stop`` set during training ends training within one step (the averaged
    weights so far are kept) and the prediction still runs; set again during prediction, it
    cancels the prediction. ``train=False`` only predicts with the current model.
    ``preview``: a few seconds in, one progress carries the forest's mask
    (:attr:`Progress.preview <napari_sparseseg.core.base.progress.Progress.preview>`) to show
    while the network trains on.

    Raises:
        ScribbleError: no scribbles, one class only, or a class outside the class table.
        SparseSegError: out of GPU memory or a diverging loss, with what to do.

    Examples:
        ```python
        import napari_sparseseg as ss
        with ss.ProgressPrinter() as show:
            result = ss.run_to_end(ss.run_round(session, ss.TrainConfig(time_budget=30)), show)
        print(result.train.stopped_by, result.suggestions[:3])   # why it ended; where to paint next
        ss.accept_round(session, result)
        ```
    """
    if session.image is None:
        raise SparseSegError("the session has no image; open the scan first.")
    stop = stop or threading.Event()
    names = list(session.class_names)
    result, stopped = None, None
    scribbles = session.scribbles.copy()  # the user may paint on while this runs
    labelled = session.labelled_counts(scribbles)
    corrections = session.corrections if session.corrected.any() else None
    hints = session.hints if session.hints is not None else session.drawn_hints(scribbles)
    if train:
        top = int(scribbles.max(initial=0))
        if top > len(names):
            raise ScribbleError(f"the scribbles use value {top} (class {top - 1}) but the class table has only {len(names)} classes; add the class or erase those strokes.")
        if session.settings.fill_between:

            hints = combine_hints(fill_between(scribbles), hints)
        trainer = Trainer(session.image, scribbles, train_cfg, corrections=corrections, init=session.init_model(),
                          spacing=session.spacing, class_names=names, pretrained=pretrained, preview=preview,
                          hints=hints, features=session.features)
        try:
            result, halted = yield from until_stopped(trainer.run(), stop)  # Stop keeps the averaged weights
        except Exception as exc:
            raise _explain(exc) from exc
        stopped = "training" if halted else None
        model = result.model if result is not None else trainer.model
        if result is None:
            hist = model.history[-1] if model.history else {}
            result = TrainResult(model, int(hist.get("steps", 0)), float(hist.get("seconds", 0.0)), "cancelled", [])
        model.class_names = names
        stop.clear()
    else:
        if session.model is None:
            raise SparseSegError("there is no model yet; train one first (or load a model).")
        model = session.model
    # Pseudo-labels anchor their regions (and the CRF) like strokes: a box alone keeps its structure.
    if train:
        annotations = trainer.y
    else:
        annotations = scribbles if hints is None else merge_annotations(scribbles, None, hints)[0]
    try:
        prediction, halted = yield from until_stopped(predict(model, session.image, predict_cfg, annotations, session.spacing,
                                                              features=session.features),
                                                      stop)
    except Exception as exc:
        raise _explain(exc) from exc
    stopped = "prediction" if halted else stopped
    estimate = {}
    if train and prediction is not None and trainer.heldout is not None:

        estimate = holdout_dice(prediction.labels, trainer.y_all, trainer.heldout, model.num_classes)
    suggestions = []
    if prediction is not None and prediction.uncertainty is not None:

        suggestions = suggest_slices(prediction.labels, prediction.uncertainty, scribbles, session.spacing)  # corrections included
    kept = None if prediction is None else prediction.labels.copy()
    return RoundResult(result, prediction, model, stopped, names, suggestions, estimate, labelled, kept)



def accept_round(session: Session, result: RoundResult) -> None:
    """Apply a finished round: new model, new prediction (if any), a history entry.

    Examples:
        ```python
        import napari_sparseseg as ss
        result = ss.run_to_end(ss.run_round(session))
        ss.accept_round(session, result)   # session.model, session.prediction and session.history updated
        ```
    """
    if result.train is not None:
        session.model = result.model
        session.model_revision += 1
        counts = result.labelled or session.labelled_counts()
        session.history.append({
            "round": len(session.history) + 1,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "steps": result.train.steps,
            "seconds": round(result.train.elapsed, 2),
            "stopped_by": result.train.stopped_by,
            "final_loss": result.train.losses[-1] if result.train.losses else None,
            "losses": [round(float(v), 5) for v in result.train.losses],
            "labelled": counts["per_class"],
            "corrections": counts["corrections"],
        })
        if result.estimate:  # Dice on the strokes held out of this round
            session.history[-1]["held_out_dice"] = {
                (result.class_names[c] if c < len(result.class_names) else str(c)):
                    [round(e.dice, 4), None if np.isnan(e.spread) else round(e.spread, 4), e.pieces]
                for c, e in result.estimate.items()}
    if result.prediction is not None:
        kept = result.kept_labels
        if kept is not None and kept.shape == result.prediction.labels.shape:
            session.set_prediction(kept, copy=False)
        else:
            session.set_prediction(result.prediction.labels)


def _explain(exc: BaseException) -> BaseException:
    """Turn low-level failures into errors that say what to do."""
    if isinstance(exc, SparseSegError):
        return exc
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return SparseSegError("out of GPU memory; choose a smaller model size, a shorter time budget or the CPU device, then train again.")
    return SparseSegError(f"training failed ({type(exc).__name__}: {text}); your annotations are kept. Try again, or report this with the session folder.")
