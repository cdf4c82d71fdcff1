"""``sparseseg segment``: train on the strokes (optionally warm-started, pretrained), write the mask."""

from __future__ import annotations

import dataclasses
import json

from napari_sparseseg.cli.common import EXIT_OK, plan_outputs, progress_printer, read_inputs, remote_config, say
from napari_sparseseg.cli.predict import scan_features_cached, write_outputs
from napari_sparseseg.core.annotations.fill import fill_between
from napari_sparseseg.core.annotations.guide import suggest_slices
from napari_sparseseg.core.annotations.hints import hint_labels
from napari_sparseseg.core.annotations.holdout import format_estimate, holdout_dice
from napari_sparseseg.core.annotations.labels import combine_hints, merge_annotations
from napari_sparseseg.core.base.config import (
    PredictConfig,
    PretrainConfig,
    RemoteConfig,
    RoundSettings,
    SuggestConfig,
    TrainConfig,
)
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.errors import ConfigError, InputError, ScribbleError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.core.model.forest import FeatureCache, feature_bytes
from napari_sparseseg.core.model.intensity import check_model_modality
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.io import check_format_limits
from napari_sparseseg.io.atomic import atomic_file
from napari_sparseseg.io.cache import cache_folder, pretrain
from napari_sparseseg.io.dicom_seg import is_dicom_seg, seg_class_names
from napari_sparseseg.io.hints import read_boxes, read_clicks
from napari_sparseseg.io.models import load_model
from napari_sparseseg.remote.client import RemoteError
from napari_sparseseg.remote.rounds import RemoteRounds

__all__ = ["read_hints", "run", "write_suggestions"]


def run(args) -> int:
    """``sparseseg segment``: train on the strokes (optionally warm-started), write the mask."""
    remote = remote_config(args)  # TLS files without --scheduler: refused here
    device = resolve_device(args.device) if remote is None else None
    cfg = TrainConfig(
        max_steps=args.max_steps, time_budget=args.time_budget, plateau=args.plateau, seed=args.seed, device=args.device,
        precision=args.precision, model_size=args.model_size, modality=args.modality, forest=args.forest,
        holdout_every=5 if args.estimate else None, working_voxels=args.working_voxels,
    )
    pre_cfg = None
    if args.pretrain is not None:
        if remote is not None:
            raise ConfigError("--pretrain runs on this computer and --scheduler trains on the cluster; leave out one of "
                              "them.")
        if args.init_model:
            raise ConfigError("--pretrain starts a new model; a warm start (--init-model) already has its features. "
                              "Use one of them.")
        pre_cfg = PretrainConfig(seconds=args.pretrain, task=args.pretrain_task, seed=args.seed, device=args.device,
                                 model_size=args.model_size, modality=args.modality)
    outputs = plan_outputs(args)
    names = [s.strip() for s in args.class_names.split(",")] if args.class_names else None
    if names is None and not args.init_model and is_dicom_seg(args.scribbles):
        names = seg_class_names(args.scribbles)  # strokes drawn as a DICOM SEG name their classes
    image, geom, scribbles, corrections = read_inputs(args, class_names=names)
    check_format_limits(outputs, image.shape)
    init = load_model(args.init_model) if args.init_model else None
    if init is not None:
        check_model_modality(image, init.normalization.modality, args.image)
    painted = scribbles if corrections is None else merge_annotations(scribbles, corrections)[0]
    hints = read_hints(args, image, geom, names or (init.class_names if init else None), scribbles, painted)
    # One feature cache for the scan: the forest's filters are computed once for training and prediction.
    features = FeatureCache()

    def make_trainer(c: TrainConfig) -> Trainer:
        """Checks the strokes before any pretraining (or remote round) is paid for; the pretrained state is given later."""
        try:
            return Trainer(image, scribbles, c, corrections=corrections, init=init, spacing=geom.spacing,
                           class_names=names, hints=hints, features=features)
        except ScribbleError as exc:  # name the file the user gave
            exc.path = exc.path or str(args.scribbles)
            raise

    # With --scheduler the device is the worker's: the strokes are checked here on the CPU.
    trainer = make_trainer(cfg if remote is None else dataclasses.replace(cfg, device="cpu"))
    check_format_limits(outputs, image.shape, trainer.num_classes)
    pcfg = PredictConfig(device=args.device, probabilities=bool(args.probabilities), uncertainty=bool(args.suggest),
                         stroke_regions_only=not args.keep_all_regions, refine=args.refine, forest=args.forest,
                         precision=args.precision, working_voxels=args.working_voxels)
    bounds = " and ".join(b for b in (f"{cfg.max_steps} steps" if cfg.max_steps else "",
                                      f"{cfg.time_budget:g} s" if cfg.time_budget else "") if b)
    if remote is not None:
        done = _remote_round(args, remote, image, painted, corrections, init, trainer, cfg, pcfg, hints, geom)
        if done is not None:
            result, pred = done
            _report_estimate(args, result.estimate, result.model.class_names)
            write_outputs(args, geom, pred, model=result.model)
            if args.suggest:
                write_suggestions(args, geom, pred, painted)
            return EXIT_OK
        device = resolve_device(args.device)
        trainer = make_trainer(cfg)
    with progress_printer(args) as show:
        pre = None
        if pre_cfg is not None:
            say(args, f"pretraining on the scan itself ({pre_cfg.task}) up to {pre_cfg.seconds:g} s in all, "
                       f"cached in {cache_folder('pretrained')}")
            pre = run_to_end(pretrain(image, pre_cfg, spacing=geom.spacing), show)
            show.finish()
            say(args, f"pretrained {pre.steps} steps, {pre.seconds:.1f} s in all")
            trainer.use_pretrained(pre)
        work = trainer.work  # a large scan's blocks (core/model/resolution.py), else the scan
        if cfg.forest and feature_bytes(work.image.shape) <= cfg.forest_max_feature_bytes:
            # The forest's features in the normalisation of the model this round trains, from the cache on disk.
            scan_features_cached(args, features, work.image, trainer.normalization.ranges(work.image), work.spacing)
        say(args, f"training on {device.type} for at most {bounds} (Ctrl-C aborts; nothing is written before the end)")
        result = run_to_end(trainer.run(), show)
        show.finish()
        say(args, f"trained {result.steps} steps in {result.elapsed:.1f}s: {result.reason}")
        pred = run_to_end(predict(result.model, image, pcfg, trainer.y, geom.spacing, features=features), show)
    if trainer.heldout is not None:
        est = holdout_dice(pred.labels, trainer.y_all, trainer.heldout, result.model.num_classes)
        _report_estimate(args, est, result.model.class_names)
    elif args.estimate:
        _report_estimate(args, None, result.model.class_names)
    write_outputs(args, geom, pred, model=result.model)
    if args.suggest:
        write_suggestions(args, geom, pred, painted)  # the user's strokes, not the pseudo-labels
    return EXIT_OK


def _report_estimate(args, est, class_names) -> None:
    if est:
        say(args, "Dice on the strokes held out of this round (an estimate on your own strokes; one piece is a rough "
                   "guide): " + format_estimate(est, class_names))
    elif args.estimate:
        say(args, "no estimate: each class needs two stroke pieces or more to hold one out")


def _remote_round(args, remote: RemoteConfig, image, painted, corrections, init, trainer, cfg, pcfg, hints, geom):
    """The round on a worker of ``--scheduler``: ``(TrainResult-bearing RoundResult, Prediction)``.

    The strokes were checked here (``trainer``); the worker runs the widget's round
    (:func:`~napari_sparseseg.core.session.rounds.run_round`) on a session of the same
    annotations. Returns ``None`` when the round could not run remotely and
    ``--local-fallback`` says to train here instead.

    Raises:
        RemoteError: the cluster could not be used or the round was lost (without
            ``--local-fallback``).
    """
    session = Session(image, painted, list(trainer.class_names), spacing=geom.spacing,
                      corrected=None if corrections is None else corrections > 0, model=init,
                      settings=RoundSettings(fill_between=False), hints=hints)  # --fill-between is in the hints already
    bounds = " and ".join(b for b in (f"{cfg.max_steps} steps" if cfg.max_steps else "",
                                      f"{cfg.time_budget:g} s" if cfg.time_budget else "") if b)
    say(args, f"training on the Dask cluster at {remote.scheduler} for at most {bounds} (Ctrl-C aborts; nothing is "
              "written before the end)")
    try:
        with RemoteRounds(remote, note=lambda text: say(args, text)) as rounds, progress_printer(args) as show:
            result = run_to_end(rounds.run_round(session, cfg, pcfg), show)
    except RemoteError as exc:
        if not args.local_fallback:
            raise
        say(args, f"sparseseg: {exc.one_line()} --local-fallback: training on this computer instead.")
        return None
    tr = result.train
    say(args, f"trained {tr.steps} steps in {tr.elapsed:.1f}s on {rounds.worker} ({rounds.device}): {tr.reason}")
    return result, result.prediction


def read_hints(args, image, geom, class_names, strokes, painted):
    """``--boxes``/``--clicks`` (world mm) and ``--fill-between`` as pseudo-labels on the scan's grid, or ``None``.

    ``strokes`` are filled between (``--fill-between``); ``painted`` (strokes and corrections)
    retires box cores where it contradicts or replaces them (:func:`~napari_sparseseg.core.annotations.hints.hint_labels`).
    """
    filled = None
    if args.fill_between:
        filled = fill_between(strokes)
        say(args, f"filled between outlined slices: {int((filled > 0).sum())} voxels of pseudo-labels")
    if not (args.boxes or args.clicks):
        return filled
    boxes = read_boxes(args.boxes, geom, class_names) if args.boxes else []
    clicks = read_clicks(args.clicks, geom, class_names) if args.clicks else []
    try:
        # Without a class table the classes are the ones the strokes, boxes and clicks use.
        used = [b.label for b in boxes] + [c.label for c in clicks] + [int(painted.max(initial=0)) - 1]
        hints = hint_labels(image, boxes, clicks, geom.spacing, painted=painted,
                            num_classes=len(class_names) if class_names else 1 + max(used))
    except InputError as exc:  # name the file the hint came from
        exc.path = exc.path or str(args.boxes if "box" in exc.message else args.clicks)
        raise
    say(args, f"{len(boxes)} boxes and {len(clicks)} clicks: {int((hints > 0).sum())} voxels of pseudo-labels "
               "(weighted below strokes)")
    return combine_hints(filled, hints)


def write_suggestions(args, geom, pred, strokes) -> None:
    """``--suggest N``: the slices to paint next, as JSON (array axis and index, orientation, world mm)."""
    found = suggest_slices(pred.labels, pred.uncertainty, strokes, geom.spacing, SuggestConfig(count=args.suggest))
    rows = []
    for s in found:
        centre = [(n - 1) / 2 for n in pred.labels.shape]
        centre[s.axis] = s.index
        rows.append({**s.to_dict(), "orientation": geom.plane(s.axis),
                     "centre_mm": [round(float(v), 3) for v in geom.index_to_world(centre)]})
    doc = {"image": str(args.image), "mask": str(args.output), "spacing_mm": [float(v) for v in geom.spacing],
           "suggestions": rows,
           "note": "axis/index are in the array order the scan was read in; score is what a stroke there would fix "
                   "(the uncertain share of the structures' volumes within reach of the slice, away from the strokes "
                   "and the slices listed before it); uncertain_mm2 is the uncertain area on the slice itself"}
    args.log.write("suggestions", lambda: atomic_file(args.suggestions, lambda f: f.write(json.dumps(doc, indent=1)),
                                                     mode="w", exclusive=not getattr(args, "suggestions_named", True)))
    say(args, f"wrote {len(rows)} suggested slices {args.suggestions}: " + ", ".join(
        f"{r['orientation']} {r['index']}" for r in rows))
