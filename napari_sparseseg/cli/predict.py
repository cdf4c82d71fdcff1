"""``sparseseg predict``: apply a saved model to a scan."""

from __future__ import annotations

from napari_sparseseg.cli.common import EXIT_OK, plan_outputs, progress_printer, read_inputs, say
from napari_sparseseg.core.base.config import PredictConfig
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.inference.predict import predict
from napari_sparseseg.io import check_format_limits, write_labels, write_probabilities
from napari_sparseseg.io.models import load_model, save_model

__all__ = ["run", "write_outputs"]


def run(args) -> int:
    """``sparseseg predict``: apply a saved model to a scan."""
    pcfg = PredictConfig(device=args.device, probabilities=bool(args.probabilities), uncertainty=False, refine=args.refine,
                         forest=args.forest, precision=args.precision)
    device = resolve_device(args.device)
    outputs = plan_outputs(args)
    image, geom, _, _ = read_inputs(args)
    model = load_model(args.model, device=device)
    check_format_limits(outputs, image.shape, model.num_classes)
    with progress_printer(args) as show:
        pred = run_to_end(predict(model, image, pcfg, spacing=geom.spacing), show)
    write_outputs(args, geom, pred)
    return EXIT_OK


def write_outputs(args, geom, prediction, model=None) -> None:
    """Write mask, probabilities, then model, each atomically and recorded in ``args.log`` (``segment`` too)."""
    log = args.log
    log.write("mask", lambda: write_labels(args.output, prediction.labels, geom))
    say(args, f"wrote mask {args.output}")
    if args.probabilities:
        log.write("probabilities", lambda: write_probabilities(args.probabilities, prediction.probabilities, geom))
        say(args, f"wrote probabilities {args.probabilities}")
    if model is not None and getattr(args, "model_out", None):
        log.write("model", lambda: save_model(model, args.model_out))
        say(args, f"saved model {args.model_out}")

