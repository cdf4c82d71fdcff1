"""``sparseseg train``: one model from the strokes of several scans (a manifest, or scans + ``--scribbles``)."""

from __future__ import annotations

from napari_sparseseg.cli.common import EXIT_OK, progress_printer, say
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.errors import InputError, ScribbleError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.model.intensity import check_model_modality
from napari_sparseseg.core.training.train import Trainer, TrainingScan
from napari_sparseseg.io import check_outputs, read_scan
from napari_sparseseg.io.cohort import expand_inputs, match_scribbles
from napari_sparseseg.io.models import load_model, save_model

__all__ = ["run"]


def run(args) -> int:
    """``sparseseg train``: one model from the strokes of several scans (a manifest, or scans + --scribbles)."""
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
    say(args, f"training on the strokes of {len(used)} scans" + (f" ({left} without strokes left out)" if left else ""))
    init = load_model(args.init_model) if args.init_model else None
    scans = []
    for e in used:
        image, geom, scribbles, corrections = read_scan(e.image, e.scribbles, e.corrections)
        if init is not None:
            check_model_modality(image, init.normalization.modality, e.image)
        scans.append(TrainingScan(image, scribbles, corrections, geom.spacing, str(e.image)))
    cfg = TrainConfig(max_steps=args.max_steps, time_budget=args.time_budget, plateau=args.plateau, seed=args.seed, device=args.device,
                      precision=args.precision, model_size=args.model_size, modality=args.modality, forest=args.forest,
                      working_voxels=args.working_voxels)
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    first = scans[0]
    try:
        trainer = Trainer(first.image, first.scribbles, cfg, corrections=first.corrections, init=init,
                          spacing=first.spacing, class_names=names, more_scans=scans[1:])
    except ScribbleError as exc:
        exc.path = exc.path or str(used[0].scribbles)
        raise
    say(args, f"training on {resolve_device(args.device).type}; Ctrl-C aborts, nothing is written before the end")
    with progress_printer(args) as show:
        result = run_to_end(trainer.run(), show)
        show.finish()
    say(args, f"trained {result.steps} steps in {result.elapsed:.1f}s: {result.reason}")
    args.log.write("model", lambda: save_model(result.model, args.model_out))
    say(args, f"saved model {args.model_out}")
    return EXIT_OK
