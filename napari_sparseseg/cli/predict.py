"""``sparseseg predict``: apply a saved model to a scan."""

from __future__ import annotations

import time

from napari_sparseseg.cli.common import EXIT_OK, plan_outputs, progress_printer, read_inputs, say
from napari_sparseseg.core.base.config import PredictConfig
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.core.model.forest import FeatureCache, feature_bytes
from napari_sparseseg.core.model.intensity import check_model_modality
from napari_sparseseg.core.model.resolution import working_scan
from napari_sparseseg.io import check_format_limits, write_labels, write_probabilities
from napari_sparseseg.io.cache import cache_folder, cache_scan_features
from napari_sparseseg.io.models import load_model, save_model

__all__ = ["run", "scan_features_cached", "write_outputs"]


def run(args) -> int:
    """``sparseseg predict``: apply a saved model to a scan."""
    pcfg = PredictConfig(device=args.device, probabilities=bool(args.probabilities), uncertainty=False, refine=args.refine,
                         working_voxels=args.working_voxels,
                         forest=args.forest, precision=args.precision)
    device = resolve_device(args.device)
    outputs = plan_outputs(args)
    image, geom, _, _ = read_inputs(args)
    model = load_model(args.model, device=device)
    check_model_modality(image, model.normalization.modality, args.image)
    check_format_limits(outputs, image.shape, model.num_classes)
    features = None
    work, work_spacing = working_scan(image, geom.spacing, pcfg.working_voxels)  # the grid the forest sees
    if model.forest is not None and pcfg.forest and feature_bytes(work.shape) <= pcfg.forest_max_feature_bytes:
        features = FeatureCache()
        scan_features_cached(args, features, work, model.normalization.ranges(work), work_spacing)
    with progress_printer(args) as show:
        pred = run_to_end(predict(model, image, pcfg, spacing=geom.spacing, features=features), show)
    write_outputs(args, geom, pred, class_names=model.class_names)
    return EXIT_OK


def scan_features_cached(args, features: FeatureCache, image, ranges, spacing) -> str:
    """The forest's filter features of the scan into ``features``, through the cache on disk (``segment`` too).

    One status line says whether they were read from the cache or computed (and cached). A
    cache that cannot be written gives a warning; the command goes on.
    """
    t0 = time.perf_counter()
    how = cache_scan_features(features, image, ranges, spacing)
    seconds = time.perf_counter() - t0
    if how == "read":
        say(args, f"[features] read from the cache in {cache_folder('features')} ({seconds:.1f} s)")
    else:
        say(args, f"[features] computed ({seconds:.1f} s), "
                  + (f"cached in {cache_folder('features')}" if how == "written" else "not cached"))
    return how


def write_outputs(args, geom, prediction, model=None, class_names=None) -> None:
    """Write mask, probabilities, then model, each atomically and recorded in ``args.log`` (``segment`` too).

    A ``.dcm`` mask or probabilities output is a DICOM SEG of the image's series, its segments
    labelled with ``class_names`` (default: the model's).
    """
    log = args.log
    names = class_names or (model.class_names if model is not None else None)
    log.write("mask", lambda: write_labels(args.output, prediction.labels, geom, source=args.image, class_names=names))
    say(args, f"wrote mask {args.output}")
    if args.probabilities:
        log.write("probabilities", lambda: write_probabilities(args.probabilities, prediction.probabilities, geom,
                                                               source=args.image, class_names=names))
        say(args, f"wrote probabilities {args.probabilities}")
    if model is not None and getattr(args, "model_out", None):
        log.write("model", lambda: save_model(model, args.model_out))
        say(args, f"saved model {args.model_out}")

