"""The ``sparseseg`` command (built on ``core`` and ``io`` only).

Contract (DESIGN.md)::

    sparseseg segment IMAGE SCRIBBLES -o MASK [--corrections CORR] [--init-model DIR]
                      [--model-out DIR] [--time-budget SECONDS] [--max-steps N]
                      [--device auto|cpu|cuda|mps] [--seed N] [--probabilities PATH]
    sparseseg predict IMAGE --model DIR -o MASK [--probabilities PATH]
    sparseseg batch --model DIR --out-dir DIR INPUT... [--fine-tune-scribbles GLOB] [--scheduler ADDRESS]
                    [--workers N] [--overwrite] [--probabilities]
    sparseseg train INPUT... --model-out DIR [--scribbles GLOB] [--init-model DIR] [--time-budget SECONDS] ...
    sparseseg demo

Exit codes: 0 done; 3 a batch finished but some scans failed (listed in its summary); 2 bad input, with one line ``sparseseg: error: <file>: <problem and what
to do>``; 130 interrupted (Ctrl-C or SIGTERM), with one line saying what was and was not
written. Every output is checked before any work (:func:`napari_sparseseg.io.check_outputs`)
and written atomically at the end; a signal that arrives while an output is being written is
held back until that output is complete, so no half file and no missing model folder is left.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings

from napari_sparseseg import __version__
from napari_sparseseg.core.base.errors import SparseSegError

EXIT_OK, EXIT_BAD_INPUT, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _say(args, message: str) -> None:
    """A status line on stderr, unless ``-q``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _progress(args):
    from napari_sparseseg.core.base.progress import ProgressPrinter

    return ProgressPrinter(quiet=getattr(args, "quiet", False))


class _Signals:
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
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN or old is None:
                continue
            self._saved[sig] = old
            signal.signal(sig, self._handle)

    def restore(self) -> None:
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
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
        if not self._hold and self._pending is not None:
            self._pending, self._fired = None, True
            raise KeyboardInterrupt


def _inputs(args) -> dict:
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


def _outputs(args) -> dict:
    """The outputs of ``segment``/``predict``, by kind (:data:`napari_sparseseg.io.outputs.OUTPUT_KINDS`)."""
    out = {"mask": args.output, "probabilities": args.probabilities, "model": getattr(args, "model_out", None)}
    if getattr(args, "suggest", None):
        out["suggestions"] = args.suggestions or suggestions_path(args.output)
        args.suggestions = out["suggestions"]
    return out


def suggestions_path(mask) -> str:
    """``segment --suggest``'s default JSON: beside the mask, ``NAME_suggestions.json``."""
    from pathlib import Path

    from napari_sparseseg.io.paths import file_suffix as _suffix

    path = Path(mask)
    stem = path.name[: len(path.name) - len(_suffix(path))]  # a DICOM folder has no suffix
    return str(path.with_name(f"{stem}_suggestions.json"))


def _check_outputs(args) -> dict:
    """Check every output against the inputs and each other, before any work; plan them in the log."""
    from napari_sparseseg.io import check_outputs

    outputs = _outputs(args)
    check_outputs(outputs, _inputs(args))
    args.log.plan(outputs)
    return outputs


def _read_inputs(args):
    from napari_sparseseg.io import read_scan

    return read_scan(args.image, getattr(args, "scribbles", None), getattr(args, "corrections", None))


def _write_outputs(args, geom, prediction, model=None) -> None:
    """Write mask, probabilities, then model, each atomically and recorded in ``args.log``."""
    from napari_sparseseg.core.model.checkpoint import save_model
    from napari_sparseseg.io import write_labels, write_probabilities

    log = args.log
    log.write("mask", lambda: write_labels(args.output, prediction.labels, geom))
    _say(args, f"wrote mask {args.output}")
    if args.probabilities:
        log.write("probabilities", lambda: write_probabilities(args.probabilities, prediction.probabilities, geom))
        _say(args, f"wrote probabilities {args.probabilities}")
    if model is not None and getattr(args, "model_out", None):
        log.write("model", lambda: save_model(model, args.model_out))
        _say(args, f"saved model {args.model_out}")


def cmd_segment(args) -> int:
    """``sparseseg segment``: train on the strokes (optionally warm-started), write the mask."""
    from napari_sparseseg.core.annotations.labels import merge_annotations
    from napari_sparseseg.core.base.config import PredictConfig, PretrainConfig, TrainConfig
    from napari_sparseseg.core.base.device import resolve_device
    from napari_sparseseg.core.base.errors import ConfigError, ScribbleError
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.inference.predict import predict
    from napari_sparseseg.core.model.checkpoint import load_model
    from napari_sparseseg.core.training.pretrain import default_cache_dir, pretrain
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.io import check_format_limits

    device = resolve_device(args.device)
    cfg = TrainConfig(
        max_steps=args.max_steps, time_budget=args.time_budget, seed=args.seed, device=args.device,
        model_size=args.model_size, modality=args.modality, forest=args.forest,
        holdout_every=5 if args.estimate else None,
    )
    pre_cfg = None
    if args.pretrain is not None:
        if args.init_model:
            raise ConfigError("--pretrain starts a new model; a warm start (--init-model) already has its features. "
                              "Use one of them.")
        pre_cfg = PretrainConfig(seconds=args.pretrain, task=args.pretrain_task, seed=args.seed, device=args.device,
                                 model_size=args.model_size, modality=args.modality)
    outputs = _check_outputs(args)
    image, geom, scribbles, corrections = _read_inputs(args)
    check_format_limits(outputs, image.shape)
    init = load_model(args.init_model) if args.init_model else None
    names = [s.strip() for s in args.class_names.split(",")] if args.class_names else None
    painted = scribbles if corrections is None else merge_annotations(scribbles, corrections)[0]
    hints = _read_hints(args, image, geom, names or (init.class_names if init else None), scribbles, painted)
    try:
        # Checks the strokes before any pretraining is paid for; the pretrained state is given later.
        trainer = Trainer(image, scribbles, cfg, corrections=corrections, init=init, spacing=geom.spacing, class_names=names,
                          hints=hints)
    except ScribbleError as exc:  # name the file the user gave
        exc.path = exc.path or str(args.scribbles)
        raise
    check_format_limits(outputs, image.shape, trainer.num_classes)
    pcfg = PredictConfig(device=args.device, probabilities=bool(args.probabilities), uncertainty=bool(args.suggest),
                         stroke_regions_only=not args.keep_all_regions, refine=args.refine, forest=args.forest,
                         precision=args.precision)
    bounds = " and ".join(b for b in (f"{cfg.max_steps} steps" if cfg.max_steps else "",
                                      f"{cfg.time_budget:g} s" if cfg.time_budget else "") if b)
    with _progress(args) as show:
        if pre_cfg is not None:
            _say(args, f"pretraining on the scan itself ({pre_cfg.task}) up to {pre_cfg.seconds:g} s in all, "
                       f"cached in {default_cache_dir()}")
            pre = run_to_end(pretrain(image, pre_cfg, spacing=geom.spacing), show)
            show.finish()
            _say(args, f"pretrained {pre.steps} steps, {pre.seconds:.1f} s in all")
            trainer.use_pretrained(pre)
        _say(args, f"training on {device.type} for at most {bounds} (Ctrl-C aborts; nothing is written before the end)")
        result = run_to_end(trainer.run(), show)
        show.finish()
        _say(args, f"trained {result.steps} steps in {result.elapsed:.1f}s (stopped by {result.stopped_by})")
        pred = run_to_end(predict(result.model, image, pcfg, trainer.y, geom.spacing), show)
    if trainer.heldout is not None:
        from napari_sparseseg.core.annotations.holdout import format_estimate, holdout_dice

        est = holdout_dice(pred.labels, trainer.y_all, trainer.heldout, result.model.num_classes)
        _say(args, "Dice on the strokes held out of this round (an estimate on your own strokes; one piece is a rough "
                   "guide): " + format_estimate(est, result.model.class_names))
    elif args.estimate:
        _say(args, "no estimate: each class needs two stroke pieces or more to hold one out")
    _write_outputs(args, geom, pred, model=result.model)
    if args.suggest:
        _write_suggestions(args, geom, pred, painted)  # the user's strokes, not the pseudo-labels
    return EXIT_OK


def _read_hints(args, image, geom, class_names, strokes, painted):
    """``--boxes``/``--clicks`` (world mm) and ``--fill-between`` as pseudo-labels on the scan's grid, or ``None``.

    ``strokes`` are filled between (``--fill-between``); ``painted`` (strokes and corrections)
    retires box cores where it contradicts or replaces them (:func:`~napari_sparseseg.core.annotations.hints.hint_labels`).
    """
    from napari_sparseseg.core.annotations.labels import combine_hints

    filled = None
    if args.fill_between:
        from napari_sparseseg.core.annotations.fill import fill_between

        filled = fill_between(strokes)
        _say(args, f"filled between outlined slices: {int((filled > 0).sum())} voxels of pseudo-labels")
    if not (args.boxes or args.clicks):
        return filled
    from napari_sparseseg.core.annotations.hints import hint_labels
    from napari_sparseseg.core.base.errors import InputError
    from napari_sparseseg.io.hints import read_boxes, read_clicks

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
    _say(args, f"{len(boxes)} boxes and {len(clicks)} clicks: {int((hints > 0).sum())} voxels of pseudo-labels "
               "(weighted below strokes)")
    return combine_hints(filled, hints)


def _write_suggestions(args, geom, pred, strokes) -> None:
    """``--suggest N``: the slices to paint next, as JSON (array axis and index, orientation, world mm)."""
    import json

    from napari_sparseseg.core.annotations.guide import suggest_slices
    from napari_sparseseg.core.base.config import SuggestConfig
    from napari_sparseseg.io.atomic import atomic_file

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
                                                     mode="w"))
    _say(args, f"wrote {len(rows)} suggested slices {args.suggestions}: " + ", ".join(
        f"{r['orientation']} {r['index']}" for r in rows))


def cmd_predict(args) -> int:
    """``sparseseg predict``: apply a saved model to a scan."""
    from napari_sparseseg.core.base.config import PredictConfig
    from napari_sparseseg.core.base.device import resolve_device
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.inference.predict import predict
    from napari_sparseseg.core.model.checkpoint import load_model
    from napari_sparseseg.io import check_format_limits

    pcfg = PredictConfig(device=args.device, probabilities=bool(args.probabilities), uncertainty=False, refine=args.refine,
                         forest=args.forest, precision=args.precision)
    device = resolve_device(args.device)
    outputs = _check_outputs(args)
    image, geom, _, _ = _read_inputs(args)
    model = load_model(args.model, device=device)
    check_format_limits(outputs, image.shape, model.num_classes)
    with _progress(args) as show:
        pred = run_to_end(predict(model, image, pcfg, spacing=geom.spacing), show)
    _write_outputs(args, geom, pred)
    return EXIT_OK


def cmd_train(args) -> int:
    """``sparseseg train``: one model from the strokes of several scans (a manifest, or scans + --scribbles)."""
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.device import resolve_device
    from napari_sparseseg.core.base.errors import InputError, ScribbleError
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.model.checkpoint import load_model, save_model
    from napari_sparseseg.core.training.train import Trainer, TrainingScan
    from napari_sparseseg.io import check_outputs, read_scan
    from napari_sparseseg.io.cohort import expand_inputs, match_scribbles

    entries = expand_inputs(args.inputs)
    if args.scribbles:
        entries = match_scribbles(entries, args.scribbles)
    used = [e for e in entries if e.scribbles is not None]
    if not used:
        raise InputError("none of the scans has strokes; give a CSV manifest with a scribbles column, or --scribbles "
                         "GLOB matching NAME_scribbles files.", path=args.inputs[0])
    inputs = {"--init-model folder": args.init_model}
    for e in used:
        inputs.update({f"image {e.name}": e.image, f"scribbles {e.name}": e.scribbles, f"corrections {e.name}": e.corrections})
    check_outputs({"model": args.model_out}, inputs)
    args.log.plan({"model": args.model_out})
    left = len(entries) - len(used)
    _say(args, f"training on the strokes of {len(used)} scans" + (f" ({left} without strokes left out)" if left else ""))
    scans = []
    for e in used:
        image, geom, scribbles, corrections = read_scan(e.image, e.scribbles, e.corrections)
        scans.append(TrainingScan(image, scribbles, corrections, geom.spacing, str(e.image)))
    cfg = TrainConfig(max_steps=args.max_steps, time_budget=args.time_budget, seed=args.seed, device=args.device,
                      model_size=args.model_size, modality=args.modality, forest=args.forest)
    init = load_model(args.init_model) if args.init_model else None
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    first = scans[0]
    try:
        trainer = Trainer(first.image, first.scribbles, cfg, corrections=first.corrections, init=init,
                          spacing=first.spacing, class_names=names, more_scans=scans[1:])
    except ScribbleError as exc:
        exc.path = exc.path or str(used[0].scribbles)
        raise
    _say(args, f"training on {resolve_device(args.device).type}; Ctrl-C aborts, nothing is written before the end")
    with _progress(args) as show:
        result = run_to_end(trainer.run(), show)
        show.finish()
    _say(args, f"trained {result.steps} steps in {result.elapsed:.1f}s (stopped by {result.stopped_by})")
    args.log.write("model", lambda: save_model(result.model, args.model_out))
    _say(args, f"saved model {args.model_out}")
    return EXIT_OK


def cmd_batch(args) -> int:
    """``sparseseg batch``: one model over many scans on Dask; a summary CSV/JSON; resumes."""
    from tqdm import tqdm

    from napari_sparseseg.cohort.batch import SUMMARY_CSV, SUMMARY_JSON, plan_batch, run_batch
    from napari_sparseseg.cohort.cluster import local_workers
    from napari_sparseseg.core.base.config import BatchConfig
    from napari_sparseseg.io.cohort import expand_inputs, match_scribbles

    cfg = BatchConfig(workers=args.workers, threads=args.threads, device=args.device, probabilities=args.probabilities,
                      overwrite=args.overwrite, fine_tune_seconds=args.fine_tune_seconds, seed=args.seed,
                      refine=args.refine, forest=args.forest, precision=args.precision, connect_timeout=args.connect_timeout)
    entries = expand_inputs(args.inputs)
    if args.fine_tune_scribbles:
        entries = match_scribbles(entries, args.fine_tune_scribbles)
    plan = plan_batch(entries, args.model, args.out_dir, cfg)
    where = f"the Dask scheduler {args.scheduler}" if args.scheduler else f"a local Dask cluster of {local_workers(cfg)} workers"
    tuned = sum(j.entry.scribbles is not None for j in plan.to_run)
    _say(args, f"{len(plan.jobs)} scans: {len(plan.to_run)} to segment ({tuned} fine-tuned on their strokes first), "
               f"{len(plan.skipped)} already done; on {where}")
    counts = {"done": 0, "skipped": 0, "failed": 0, "queued": 0}
    bar = tqdm(total=len(plan.jobs), unit="scan", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    try:
        with bar:
            for r in run_batch(plan, scheduler=args.scheduler):
                counts[r.status] = counts.get(r.status, 0) + 1
                if r.status == "failed":
                    bar.write(f"sparseseg: scan '{r.name}' failed: {r.reason}", file=sys.stderr)
                bar.set_postfix(done=counts["done"], skipped=counts["skipped"], failed=counts["failed"], refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        print(f"sparseseg: interrupted; {counts['done']} scans finished and recorded in "
              f"{plan.out_dir / SUMMARY_JSON}; run the same command again to resume.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    _say(args, f"{counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed; summary "
               f"in {plan.out_dir / SUMMARY_CSV} and {SUMMARY_JSON}")
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def cmd_demo(args) -> int:
    """``sparseseg demo``: the whole loop on the bundled sample."""
    from napari_sparseseg.core.base.config import DemoConfig
    from napari_sparseseg.demo import run_demo

    cfg = DemoConfig(rounds=args.rounds, time_budget=args.time_budget, device=args.device, seed=args.seed)
    run_demo(data_dir=args.data, out_dir=args.output, cfg=cfg, quiet=args.quiet, log=args.log)
    return EXIT_OK


_TYPES = {"float": float, "int": int, "str": str}


def _add_setting(parser: argparse.ArgumentParser, cls, name: str, **override) -> None:
    """A flag derived from a config field: its flag, default, type, help and option list."""
    from napari_sparseseg.core.base.config import field_info, option_values

    f = field_info(cls, name)
    meta = f.metadata
    if str(f.type) == "bool":  # --flag / --no-flag
        on = "on" if f.default else "off"
        parser.add_argument(meta["flag"], action=argparse.BooleanOptionalAction, default=f.default,
                            help=f"{meta.get('help', '')} (default {on})", **override)
        return
    kind = _TYPES[str(f.type).split(" |")[0].strip()]
    choices = meta.get("choices")
    metavar = "|".join(option_values(choices)) if choices else meta.get("metavar")
    shown = "" if f.default is None else f" (default {f.default})"
    kw = {"default": f.default, "type": kind, "metavar": metavar, "help": f"{meta.get('help', '')}{shown}"}
    kw.update(override)
    parser.add_argument(meta["flag"], **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``sparseseg`` argument parser; defaults and option lists come from the config dataclasses."""
    from napari_sparseseg.core.base.config import (
        BatchConfig,
        DemoConfig,
        PredictConfig,
        PretrainConfig,
        RoundSettings,
        SuggestConfig,
        TrainConfig,
    )

    parser = argparse.ArgumentParser(prog="sparseseg", description="3-D segmentation of CT/MRI from sparse scribbles.")
    parser.add_argument("--version", action="version", version=f"napari-sparseseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--probabilities", metavar="PATH", help="also write class probabilities (uint8, p*255)")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    seg = sub.add_parser("segment", help="train on scribbles (optionally warm-started) and write the dense mask")
    seg.add_argument("image", help="scan: .nii/.nii.gz/.nrrd/.mha/.mhd or DICOM folder")
    seg.add_argument("scribbles", help="0 = unlabelled, 1 = background, c+1 = class c; on the image's grid")
    seg.add_argument("-o", "--output", required=True, metavar="MASK", help="dense mask to write (0 = background)")
    seg.add_argument("--corrections", metavar="CORR", help="correction strokes (same convention, weighted higher)")
    seg.add_argument("--boxes", metavar="JSON", help="boxes around structures, corners in world mm (RAS): "
                     "[{\"class\": 1, \"corners_mm\": [[x, y, z], [x, y, z]]}]; low-weight pseudo-labels")
    _add_setting(seg, RoundSettings, "fill_between")
    _add_setting(seg, RoundSettings, "estimate")
    seg.add_argument("--clicks", metavar="JSON", help="clicks inside (class >= 1) or outside (class 0) structures, "
                     "world mm: [{\"class\": 1, \"point_mm\": [x, y, z]}]; low-weight pseudo-labels")
    seg.add_argument("--init-model", metavar="DIR", help="warm start from a saved model")
    seg.add_argument("--model-out", metavar="DIR", help="save the trained model here (a new or empty folder, or a model)")
    for name in ("time_budget", "max_steps", "device", "seed", "model_size", "modality"):
        _add_setting(seg, TrainConfig, name)
    seg.add_argument("--class-names", metavar="A,B,...", help="names of the classes, background first")
    seg.add_argument("--keep-all-regions", action="store_true",
                     help="keep predicted regions that touch no stroke of their class (default: drop them)")
    _add_setting(seg, PredictConfig, "refine")
    _add_setting(seg, PredictConfig, "precision")
    _add_setting(seg, SuggestConfig, "count", default=None,
                 help="also write the N slices a stroke would most likely fix next (JSON; default off)")
    seg.add_argument("--suggestions", metavar="JSON", help="where --suggest writes (default: beside the mask, "
                     "NAME_suggestions.json)")
    _add_setting(seg, TrainConfig, "forest")
    _add_setting(seg, PretrainConfig, "seconds", default=None,
                 help="first pretrain a new model on the scan itself for this many seconds (self-supervised; cached "
                      "per scan in $SPARSESEG_CACHE or ~/.cache/napari-sparseseg, so a second run pays nothing; "
                      f"default off, {PretrainConfig.seconds:g} s in the widget)")
    _add_setting(seg, PretrainConfig, "task")
    common(seg)
    seg.set_defaults(func=cmd_segment)

    pre = sub.add_parser("predict", help="apply a saved model to a scan")
    pre.add_argument("image")
    pre.add_argument("--model", required=True, metavar="DIR")
    pre.add_argument("-o", "--output", required=True, metavar="MASK")
    _add_setting(pre, PredictConfig, "device")
    _add_setting(pre, PredictConfig, "refine")
    _add_setting(pre, PredictConfig, "forest")
    _add_setting(pre, PredictConfig, "precision")
    common(pre)
    pre.set_defaults(func=cmd_predict)

    trn = sub.add_parser("train", help="train one model on the strokes of several scans and save it",
                         description="Train one model on strokes from several scans (their own grids and spacings); "
                         "patches are drawn across the scans, balanced over classes. Scans without strokes are left out.")
    trn.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="a CSV manifest (image,scribbles[,corrections]) or scans, folders or globs with --scribbles")
    trn.add_argument("--scribbles", metavar="GLOB",
                     help="stroke files matched to scans by name (NAME_scribbles.nii.gz, or a glob with {name})")
    trn.add_argument("--model-out", required=True, metavar="DIR", help="save the model here (new, empty, or a model)")
    trn.add_argument("--init-model", metavar="DIR", help="warm start from a saved model (e.g. one scan's)")
    for name in ("time_budget", "max_steps", "device", "seed", "model_size", "modality", "forest"):
        _add_setting(trn, TrainConfig, name)
    trn.add_argument("--class-names", metavar="A,B,...", help="names of the classes, background first")
    trn.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    trn.set_defaults(func=cmd_train)

    bat = sub.add_parser("batch", help="apply a model to many scans (optionally fine-tuned per scan) on Dask; resumes",
                         description="Segment every scan with one model on a Dask cluster. Writes NAME_mask.nii.gz per "
                         "scan and sparseseg_summary.csv/.json (volumes, uncertainty, components, review rank). "
                         "Exit 0 when every scan is done or skipped as already done, 3 when some failed, 2 on bad "
                         "arguments.")
    bat.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="scan files, DICOM series folders, folders of scans, globs (quoted) or a CSV manifest "
                          "(columns image[,scribbles,corrections])")
    bat.add_argument("--model", required=True, metavar="DIR", help="the shared model (a folder from --model-out)")
    bat.add_argument("--out-dir", required=True, metavar="DIR", help="where the masks and the summary go")
    bat.add_argument("--fine-tune-scribbles", metavar="GLOB",
                     help="stroke files; a scan with strokes (NAME_scribbles.nii.gz, or a glob with {name}) is first "
                          "fine-tuned from the model on them")
    bat.add_argument("--scheduler", metavar="ADDRESS",
                     help="an existing Dask scheduler (tcp://HOST:PORT); default: a local cluster")
    for name in ("workers", "threads", "overwrite", "fine_tune_seconds", "device", "seed", "refine", "forest",
                 "precision", "connect_timeout"):
        _add_setting(bat, BatchConfig, name)
    bat.add_argument("--probabilities", action="store_true", help="also write NAME_probabilities.nii.gz (uint8, p*255)")
    bat.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    bat.set_defaults(func=cmd_batch)

    demo = sub.add_parser("demo", help="the whole loop on the bundled sample data, headless")
    demo.add_argument("--data", metavar="DIR", help="sample data folder (default: the repository's sample_data/)")
    demo.add_argument("-o", "--output", default="sparseseg_demo_out", metavar="DIR", help="where to write mask and model")
    for name in ("time_budget", "rounds", "device", "seed"):
        _add_setting(demo, DemoConfig, name)
    demo.add_argument("-q", "--quiet", action="store_true", help="print nothing but the Dice table and errors")
    demo.set_defaults(func=cmd_demo)

    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit code (0 done, 2 bad input, 3 some batch scans failed, 130 interrupted)."""
    from napari_sparseseg.io import OutputLog

    parser = build_parser()
    args = parser.parse_args(argv)
    signals = _Signals()
    args.log = log = OutputLog(guard=signals.held)
    signals.install()
    try:
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")
            return int(args.func(args) or EXIT_OK)
    except (KeyboardInterrupt, Exception) as exc:
        code, text = _ending(exc, interrupted=signals.fired, log=log)
        if code is None:
            raise
        print(text, file=sys.stderr, flush=True)
        return code
    finally:
        signals.restore()


def _ending(exc: BaseException, interrupted: bool, log) -> tuple[int | None, str]:
    """The exit code and last line for an exception that ends a command, or None to let it through.

    Once a signal has fired, any exception is the interrupt surfacing in another form: raised
    inside a C extension's import (pybind11 turns it into ImportError) or caught and re-raised by
    a library. The user stopped the command, so it ends like any interrupt.
    """
    if interrupted or isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"sparseseg: interrupted; {log.summary()}"
    if isinstance(exc, SparseSegError):
        text = exc.one_line()
        if log.attempted:  # the error struck while writing: say what is on disk
            text = f"{text.rstrip('.')}; {log.summary()}"
        return EXIT_BAD_INPUT, f"sparseseg: error: {text}"
    if isinstance(exc, ValueError):  # a config dataclass rejected an option value
        return EXIT_BAD_INPUT, f"sparseseg: error: {' '.join(str(exc).split())}"
    return None, ""

