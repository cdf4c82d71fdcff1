"""Dense prediction, memory bounded by a slab of the volume.

The volume is processed in slabs along axis 0. By default (``inferer="sliding_window"``) a
slab, with a margin of half a patch so windows near its edge see the same context as in one
pass, goes through ``monai.inferers.sliding_window_inference``, which blends patch-sized
windows with a Gaussian. With ``inferer="tiles"`` each slab is one layer of large tiles whose
shape follows the voxel spacing, each run with a halo of context and its core cropped from
the output (the network is fully convolutional: no overlap, no blending). On 2 CPU cores in
float32 that is not faster (oneDNN runs large inputs 2-4x slower per voxel than patch-sized
ones; ``benchmarks/speed.py --large-only``), so it is not the default.

A model with a random forest (:mod:`~napari_sparseseg.core.forest`) fuses its probabilities
with the network's before the optional CRF refinement. Only the slab is ever held in float32;
the outputs are an argmax mask (uint8), probabilities as uint8 (p * 255, optional) and
normalised entropy as float16.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.checkpoint import SegModel
from napari_sparseseg.core.config import PredictConfig
from napari_sparseseg.core.device import resolve_device
from napari_sparseseg.core.errors import CheckpointError, ConfigError
from napari_sparseseg.core.grid import validate_spacing
from napari_sparseseg.core.intensity import validate_image
from napari_sparseseg.core.labels import label_dtype, validate_labels
from napari_sparseseg.core.progress import Progress, run_to_end


@dataclass
class Prediction:
    """A dense prediction.

    Args:
        labels: class index per voxel (0 = background), uint8/uint16.
        probabilities: ``(C, *shape)`` uint8 (p * 255) or ``None``.
        uncertainty: normalised entropy, float16 in [0, 1], or ``None``.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


def _slabs(depth: int, core: int, margin: int):
    for start in range(0, depth, core):
        stop = min(depth, start + core)
        yield start, stop, max(0, start - margin), min(depth, stop + margin)


def predict(model: SegModel, image: np.ndarray, cfg: PredictConfig | None = None, annotations: np.ndarray | None = None,
            spacing=None) -> Generator[Progress, None, Prediction]:
    """Segment ``image`` with ``model``; yields progress per slab, returns a :class:`Prediction`.

    The inputs are checked when this is called; the returned generator does the work.

    Args:
        model: a trained model.
        image: raw intensities, 3-D.
        cfg: inference settings.
        annotations: the strokes the model was trained on (scribble convention, corrections
            included), same shape as ``image``; with ``cfg.stroke_regions_only`` the mask keeps
            only regions connected to a stroke of their class; with ``cfg.refine`` they are
            also the CRF's hard constraints.
        spacing: the image's voxel size in mm (array order), for the refinement's neighbourhood;
            default: the spacing the model was trained on.

    Raises:
        InputError: the image is not a 3-D real array, is too thin, or holds NaN/inf (the
            checks of the command line, :func:`~napari_sparseseg.core.intensity.validate_image`).
        ScribbleError: the annotations are not whole numbers in 0..MAX_CLASSES on the image's
            shape (strokes of a class the model lacks are allowed: they anchor nothing).
        ConfigError: ``cfg`` is not a :class:`PredictConfig`.
        CheckpointError: ``model`` is not a model.
    """
    if not isinstance(model, SegModel):
        raise CheckpointError(f"expected a model (load_model or a training result), got {type(model).__name__}.")
    if cfg is not None and not isinstance(cfg, PredictConfig):
        raise ConfigError(f"cfg must be a PredictConfig, got {type(cfg).__name__}.")
    cfg = cfg or PredictConfig()
    image = validate_image(image)
    if annotations is not None:
        annotations = validate_labels(annotations, "scribbles", shape=image.shape)
    spacing = validate_spacing(model.spacing if spacing is None else spacing)
    return _predict(model, image, cfg, annotations, spacing)  # checked now, when called, not at the first step


def _predict(model: SegModel, image: np.ndarray, cfg: PredictConfig, annotations, spacing) -> Generator[Progress, None, Prediction]:
    import torch
    from monai.inferers import sliding_window_inference

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    net = model.network.to(device).eval()
    k = model.num_classes
    patch = tuple(int(p) for p in model.patch_size)
    ranges = model.normalization.ranges(image)
    depth, plane = image.shape[0], int(np.prod(image.shape[1:]))
    reach = 0
    if cfg.refine:  # the CRF reaches iterations x its axis-0 step beyond a voxel: keep slabs exact
        from napari_sparseseg.core.refine import stencil

        reach = max(abs(o[0]) for o in stencil(spacing, cfg.refine_radius_mm)) * cfg.refine_iterations
    tiles = cfg.inferer == "tiles"
    if tiles:  # one layer of tiles per slab; the slab's margin is the CRF's reach, the tiles add their halo
        from napari_sparseseg.core.train import auto_patch_size

        tile = auto_patch_size(spacing, image.shape, model.config.divisor, cfg.tile_voxels)
        core, margin, halo = tile[0], reach, cfg.halo
    else:
        core = max(patch[0], int(cfg.slab_voxels // max(plane, 1)))
        margin, halo = max(patch[0] // 2, reach), 0
    slabs = list(_slabs(depth, core, margin))

    labels = np.zeros(image.shape, dtype=label_dtype(k - 1))
    probs = np.zeros((k,) + image.shape, dtype=np.uint8) if cfg.probabilities else None
    unc = np.zeros(image.shape, dtype=np.float16) if cfg.uncertainty else None
    amp = device.type == "cuda"
    forest = model.forest if cfg.forest else None
    if forest is not None:
        from napari_sparseseg.core.forest import FeatureSource, fuse

        features = FeatureSource(image, ranges, spacing, cfg.forest_max_feature_bytes)

    def predictor(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x.to(device))
        return out.float().softmax(1).cpu()

    for i, (start, stop, lo, hi) in enumerate(slabs, 1):
        ilo, ihi = max(0, lo - halo), min(depth, hi + halo)
        x = torch.from_numpy(model.normalization.apply(image[ilo:ihi], ranges))[None]
        with torch.inference_mode():
            if tiles:
                p = _tiled(predictor, x[0], (lo - ilo, hi - ilo), tile, halo, model.config.divisor, k)
            else:
                p = sliding_window_inference(
                    x, patch, cfg.sw_batch_size, predictor, overlap=cfg.overlap, mode="gaussian",
                    padding_mode="replicate", sw_device=device, device="cpu",
                )[0]
        x = x[:, :, lo - ilo : hi - ilo]
        if forest is not None:
            p = fuse(p, torch.from_numpy(features.probabilities(forest, lo, hi)), forest.weight)
        if cfg.refine:
            p = _refined(p, x[0], spacing, model, cfg, None if annotations is None else annotations[lo:hi])
        p = p[:, start - lo : stop - lo]
        labels[start:stop] = p.argmax(0).numpy().astype(labels.dtype)
        if probs is not None:
            probs[:, start:stop] = (p * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        if unc is not None:
            ent = -(p * torch.log(p.clamp_min(1e-8))).sum(0) / math.log(k)
            unc[start:stop] = ent.clamp(0, 1).numpy().astype(np.float16)
        del x, p
        yield Progress("predict", i, len(slabs), time.perf_counter() - t0)
    if annotations is not None and cfg.stroke_regions_only:
        from napari_sparseseg.core.postprocess import keep_stroke_regions

        keep_stroke_regions(labels, annotations)
    return Prediction(labels, probs, unc)


def _tiled(predictor, x, rows: tuple, tile: tuple, halo: int, divisor: int, k: int):
    """Probabilities ``(k, rows, H, W)`` of ``x`` ``(C, D, H, W)`` by in-plane tiles, each with ``halo`` voxels of context.

    The network is fully convolutional: each tile's core is cropped from its output, so no
    voxel is computed twice except in the halos (no overlap, no blending). A tile is padded
    (replicate) to a multiple of ``divisor``, like MONAI pads a window.
    """
    import torch
    import torch.nn.functional as F

    _, depth, height, width = x.shape
    a, b = rows
    z0, z1 = max(0, a - halo), min(depth, b + halo)
    out = torch.empty((k, b - a, height, width), dtype=torch.float32)
    for y0 in range(0, height, tile[1]):
        y1 = min(height, y0 + tile[1])
        ya, yb = max(0, y0 - halo), min(height, y1 + halo)
        for x0 in range(0, width, tile[2]):
            x1 = min(width, x0 + tile[2])
            xa, xb = max(0, x0 - halo), min(width, x1 + halo)
            block = x[:, z0:z1, ya:yb, xa:xb][None]
            pad = [(-n) % divisor for n in block.shape[2:]]
            if any(pad):
                block = F.pad(block, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
            p = predictor(block)[0]
            out[:, :, y0:y1, x0:x1] = p[:, a - z0 : b - z0, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out


def _refined(p, channels, spacing, model: SegModel, cfg: PredictConfig, strokes):
    """The slab's probabilities after the dense CRF (:mod:`~napari_sparseseg.core.refine`)."""
    import torch

    from napari_sparseseg.core.refine import intensity_scale, mean_field

    scale = model.intensity_scale
    if scale is None and strokes is not None:  # a model saved before the scale was stored
        scale = intensity_scale(channels.numpy(), strokes)
    if scale is None:
        return p  # nothing tells the intensity variation within a structure: leave the outline
    hard = None if strokes is None else torch.from_numpy(np.ascontiguousarray(strokes).astype(np.int64))
    with torch.inference_mode():
        return mean_field(p, channels, spacing, scale, hard, weight=cfg.refine_weight,
                          iterations=cfg.refine_iterations, radius_mm=cfg.refine_radius_mm)


def predict_volume(model: SegModel, image: np.ndarray, cfg: PredictConfig | None = None, annotations: np.ndarray | None = None,
                   spacing=None) -> Prediction:
    """Synchronous :func:`predict` (same checks, same errors)."""
    return run_to_end(predict(model, image, cfg, annotations, spacing))
