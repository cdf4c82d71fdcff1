"""Dense prediction, memory bounded by a slab of the volume.

The network's probabilities come as a stream of rows along axis 0. By default
(``inferer="sliding_window"``) they are exactly those of ``monai.inferers.sliding_window_inference``
over the whole volume at once (the same patch-sized windows, Gaussian blending and padding), but
the windows run row by row of equal start and only a patch-deep accumulator is held, not a
float32 copy of the volume per class: no window is computed twice and memory does not grow with
the volume (:func:`_sliding_windows`). With ``inferer="tiles"`` large tiles whose shape follows the
voxel spacing run with a halo of context and their cores are cropped from the output (the
network is fully convolutional: no overlap, no blending); its masks differ more from the
windows' (the network is trained on patches), so it is not the default.

The network runs in bfloat16 where the device has it natively (``precision="auto"``: CUDA,
CPUs with AVX-512 BF16 / AMX), else in float32; on the CPU in channels-last layout, on a copy.

The rows are then taken slab by slab, each with the CRF's reach as margin: a model with a
random forest (:mod:`~napari_sparseseg.core.model.forest`) fuses its probabilities with the network's
before the optional CRF refinement. Only a slab is ever held in float32; the outputs are an
argmax mask (uint8), probabilities as uint8 (p * 255, optional) and normalised entropy as
float16. ``benchmarks/speed.py --large-only`` measures time and memory against the whole-volume
sliding window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.annotations.labels import label_dtype, validate_labels
from napari_sparseseg.core.base.config import PredictConfig
from napari_sparseseg.core.base.device import memory_format, resolve_device, use_bfloat16
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError
from napari_sparseseg.core.base.grid import validate_spacing
from napari_sparseseg.core.base.progress import Progress, run_to_end
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
from napari_sparseseg.core.inference.refine import intensity_scale, mean_field, stencil
from napari_sparseseg.core.model.checkpoint import SegModel
from napari_sparseseg.core.model.forest import FeatureCache, FeatureSource, fuse
from napari_sparseseg.core.model.intensity import validate_image
from napari_sparseseg.core.model.patches import auto_patch_size
from napari_sparseseg.core.model.resolution import coarsen_labels, upsample_rows, working_factors, working_scan


@dataclass
class Prediction:
    """A dense prediction.

    Args:
        labels: class index per voxel (0 = background), uint8/uint16.
        probabilities: ``(C, *shape)`` uint8 (p * 255) or ``None``.
        uncertainty: normalised entropy, float16 in [0, 1], or ``None``.

    Examples:
        ```python
        import napari_sparseseg as ss
        prediction = ss.predict_volume(model, image, ss.PredictConfig(uncertainty=True))
        assert prediction.labels.shape == image.shape
        doubt = prediction.uncertainty  # normalised entropy per voxel, float16
        ```
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


def _slabs(depth: int, core: int, margin: int):
    for start in range(0, depth, core):
        stop = min(depth, start + core)
        yield start, stop, max(0, start - margin), min(depth, stop + margin)


def predict(model: SegModel, image: np.ndarray, cfg: PredictConfig | None = None, annotations: np.ndarray | None = None,
            spacing=None, features: FeatureCache | None = None) -> Generator[Progress, None, Prediction]:
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
        features: the :class:`~napari_sparseseg.core.model.forest.FeatureCache` the forest's filter
            features are read from (a session's: computed once for its training and prediction);
            ``None``: computed for this prediction only.

    Raises:
        InputError: the image is not a 3-D real array, is too thin, or holds NaN/inf (the
            checks of the command line, :func:`~napari_sparseseg.core.model.intensity.validate_image`).
        ScribbleError: the annotations are not whole numbers in 0..MAX_CLASSES on the image's
            shape (strokes of a class the model lacks are allowed: they anchor nothing).
        ConfigError: ``cfg`` is not a :class:`PredictConfig`.
        CheckpointError: ``model`` is not a model.

    Examples:
        ```python
        import napari_sparseseg as ss
        model = ss.load_model("round1")
        with ss.ProgressPrinter() as show:
            prediction = ss.run_to_end(ss.predict(model, image, ss.PredictConfig(), scribbles, geom.spacing), show)
        ```
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
    return _predict(model, image, cfg, annotations, spacing, features)  # checked now, when called, not at the first step


def _predict(model: SegModel, image: np.ndarray, cfg: PredictConfig, annotations, spacing,
             cache: FeatureCache | None) -> Generator[Progress, None, Prediction]:
    import torch

    t0 = time.perf_counter()
    net = _inference_network(model.network, resolve_device(cfg.device), cfg.precision)
    k = model.num_classes
    depth, plane = image.shape[0], int(np.prod(image.shape[1:]))
    factors = working_factors(image.shape, spacing, cfg.working_voxels)
    if factors == (1, 1, 1):
        slabs = _refined_slabs(model, net, image, annotations, spacing, cfg, cache)
        half = 0
    else:
        # A large scan (core/model/resolution.py): the network, the forest and the CRF on its blocks,
        # as it was trained; their probabilities interpolated back to every voxel slab by slab.
        coarse, cspacing = working_scan(image, spacing, cfg.working_voxels)
        blocks = torch.empty((k,) + coarse.shape, dtype=torch.float32)
        half = depth // 2  # the blocks' stage reports the first half of the progress
        marks = None if annotations is None else coarsen_labels(annotations, factors)
        with torch.inference_mode():
            for start, stop, p in _refined_slabs(model, net, coarse, marks, cspacing, cfg, cache):
                blocks[:, start:stop] = p
                yield Progress("predict", min(depth, stop * factors[0]) * half // depth, depth, time.perf_counter() - t0)
        rows = max(1, int(cfg.slab_voxels // max(plane, 1)))
        slabs = ((a, min(depth, a + rows), _pinned(upsample_rows(blocks, factors, depth, image.shape[1:], a, min(depth, a + rows)),
                                                    None if annotations is None else annotations[a : a + rows]))
                 for a in range(0, depth, rows))

    labels = np.zeros(image.shape, dtype=label_dtype(k - 1))
    probs = np.zeros((k,) + image.shape, dtype=np.uint8) if cfg.probabilities else None
    unc = np.zeros(image.shape, dtype=np.float16) if cfg.uncertainty else None
    with torch.inference_mode():
        for start, stop, p in slabs:
            # Class by class, so the temporaries are one channel of the slab, not k.
            labels[start:stop] = _argmax(p).numpy().astype(labels.dtype)
            if probs is not None:
                for c in range(k):
                    probs[c, start:stop] = (p[c] * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()
            if unc is not None:
                ent = torch.zeros(p.shape[1:])
                for c in range(k):
                    ent += torch.special.entr(p[c])
                unc[start:stop] = (ent / math.log(k)).clamp_(0, 1).numpy().astype(np.float16)
            del p
            yield Progress("predict", half + stop * (depth - half) // depth, depth, time.perf_counter() - t0)
    if annotations is not None and cfg.stroke_regions_only:
        keep_stroke_regions(labels, annotations)
    return Prediction(labels, probs, unc)


def _pinned(p, strokes):
    """``p`` with every stroke voxel certain of its class (as the CRF holds them on the blocks)."""
    if strokes is None:
        return p
    import torch

    where = np.nonzero((strokes > 0) & (strokes <= p.shape[0]))
    if where[0].size:
        index = tuple(torch.from_numpy(w) for w in where)
        p[(slice(None),) + index] = torch.nn.functional.one_hot(torch.from_numpy(strokes[where].astype(np.int64) - 1),
                                                                p.shape[0]).T.to(p.dtype)
    return p


def _refined_slabs(model: SegModel, net, image: np.ndarray, annotations, spacing, cfg: PredictConfig,
                   cache: FeatureCache | None):
    """``(start, stop, p)``: the final probabilities of rows ``start..stop`` (fused, refined by the CRF).

    Like :func:`_fused_slabs`, iterated only inside :func:`_predict`'s ``torch.inference_mode``: a
    generator that held its own across a ``yield`` and was closed after its caller's had ended
    would restore inference mode for the rest of the thread (training then failed).
    """
    import torch

    ranges = model.normalization.ranges(image)
    reach = 0
    if cfg.refine:  # the CRF reaches iterations x its axis-0 step beyond a voxel: keep slabs exact

        reach = max(abs(o[0]) for o in stencil(spacing, cfg.refine_radius_mm)) * cfg.refine_iterations
    for start, stop, lo, hi, p in _fused_slabs(model, net, image, ranges, spacing, cfg, cache, reach):
        if cfg.refine:
            channels = torch.from_numpy(model.normalization.apply(image[lo:hi], ranges))
            p = _refined(p, channels, spacing, model, cfg, None if annotations is None else annotations[lo:hi])
        yield start, stop, p[:, start - lo : stop - lo]


def _fused_slabs(model: SegModel, net, image: np.ndarray, ranges, spacing, cfg: PredictConfig,
                 cache: FeatureCache | None, reach: int):
    """Slabs ``(start, stop, lo, hi, p)`` of the network's probabilities, fused with the forest's.

    ``p`` holds rows ``lo..hi``: rows ``start..stop`` and up to ``reach`` rows of margin.
    """
    import torch

    k = model.num_classes
    patch = tuple(int(p) for p in model.patch_size)
    depth, plane = image.shape[0], int(np.prod(image.shape[1:]))

    def rows(a: int, b: int, out=None):  # normalised input of image rows a..b, (C, b - a, H, W)
        return torch.from_numpy(model.normalization.apply(image[a:b], ranges, None if out is None else out.numpy()))

    if cfg.inferer == "tiles":
        tile = auto_patch_size(spacing, image.shape, model.config.divisor, cfg.tile_voxels)
        chunks = _tile_layers(net.predictor, rows, image.shape, tile, cfg.halo, model.config.divisor, k)
    else:
        chunks = _sliding_windows(net.predictor, rows, image.shape, patch, cfg.overlap, cfg.sw_batch_size, k)
    forest = model.forest if cfg.forest else None
    if forest is not None:
        features = FeatureSource(image, ranges, spacing, cfg.forest_max_feature_bytes, cache)
    if reach or forest is not None:
        # Slabs of slab_voxels cut from the stream of rows, with the CRF's reach as margins (the
        # forest's filters, computed per slab on a large scan, want slabs that are not thin either).
        pending = _Rows(chunks)
        core = max(1, int(cfg.slab_voxels // max(plane, 1)), 2 * reach)
        slabs = ((start, stop, lo, hi, pending.take(lo, hi)) for start, stop, lo, hi in _slabs(depth, core, reach))
    else:  # the network alone: the stream's chunks are the slabs
        slabs = ((a, b, a, b, p) for a, b, p in chunks)
    for start, stop, lo, hi, p in slabs:
        if forest is not None:
            p = fuse(p, torch.from_numpy(features.probabilities(forest, lo, hi)), forest.weight, forest.trust)
        yield start, stop, lo, hi, p


def _argmax(p):
    """``p.argmax(0)`` (the first of equal maxima), one class at a time.

    torch reduces over the outermost axis of a large tensor several times slower than this.
    """
    import torch

    best, index = p[0].clone(), torch.zeros(p.shape[1:], dtype=torch.uint8)
    for c in range(1, p.shape[0]):
        more = p[c] > best
        index[more] = c
        torch.maximum(best, p[c], out=best)
    return index


class _InferenceNetwork:
    """The network as inference runs it: on ``device``, in eval mode, in the chosen precision.

    On the CPU it is a copy in channels-last 3-D layout (oneDNN's native one); the model itself
    is left as it is, since training may go on from it.
    """

    def __init__(self, network, device, bf16: bool):
        import copy

        import torch

        self.device, self.bf16 = device, bf16
        self.layout = memory_format(device)
        if self.layout != torch.contiguous_format:
            network = copy.deepcopy(network).to(memory_format=self.layout)
        self.network = network.to(device).eval()

    def predictor(self, x):
        """Softmax probabilities (float32, on the CPU) of a batch ``(B, C, D, H, W)``."""
        import torch

        x = x.to(self.device).contiguous(memory_format=self.layout)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.network(x)
        return out.float().softmax(1).cpu()


def _inference_network(network, device, precision: str) -> _InferenceNetwork:
    return _InferenceNetwork(network, device, use_bfloat16(precision, device))


def network_probabilities(network, x: np.ndarray, patch, k: int, device, precision: str = "auto",
                          overlap: float = PredictConfig.overlap, batch: int = PredictConfig.sw_batch_size) -> np.ndarray:
    """The network's softmax probabilities over an already normalised volume, float16 ``(k, *x.shape[1:])``.

    The sliding windows of :func:`predict` (MONAI's windows and Gaussian blending), without the
    forest, the CRF or any slab logic: what a correction round keeps of the previous round's
    network (:mod:`~napari_sparseseg.core.training.train`), computed once per round instead of
    once per training batch. ``x`` is ``(C, D, H, W)``, ``k`` the network's classes; the network
    is not changed.
    """
    import torch

    net = _inference_network(network, device, precision)
    shape = x.shape[1:]
    out = np.empty((k, *shape), np.float16)
    with torch.no_grad():
        for a, b, p in _sliding_windows(net.predictor, lambda a, b, out=None: torch.from_numpy(x[:, a:b]), shape,
                                        tuple(int(s) for s in patch), overlap, batch, k):
            out[:, a:b] = p.numpy()
    return out


class _Rows:
    """Rows of the network's probabilities, pulled in order from a stream of ``(a, b, p)`` chunks.

    Rows before the last request's start are dropped, so only a slab and its margins are held.
    """

    def __init__(self, chunks):
        self.chunks, self.held = iter(chunks), []

    def take(self, lo: int, hi: int):
        """Probabilities ``(k, hi - lo, H, W)`` of rows ``lo..hi``."""
        import torch

        self.held = [c for c in self.held if c[1] > lo]
        while not self.held or self.held[-1][1] < hi:
            self.held.append(next(self.chunks))
        parts = [p[:, max(lo, a) - a : min(hi, b) - a] for a, b, p in self.held if a < hi and b > lo]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _sliding_windows(predictor, rows, shape: tuple, patch: tuple, overlap: float, batch: int, k: int):
    """MONAI's sliding window over the whole volume, streamed along axis 0.

    Yields ``(a, b, p)``, the probabilities ``(k, b - a, H, W)`` of rows ``a..b``, in order,
    covering the volume. ``rows(a, b, out=None)`` gives the normalised input ``(C, b - a, H, W)``
    of rows ``a..b`` (written into ``out`` when given).

    The windows, their Gaussian weights and the volume's padding are those of
    ``monai.inferers.sliding_window_inference(..., mode="gaussian", padding_mode="replicate")`` over
    the whole volume (MONAI's ``dense_patch_slices`` and ``compute_importance_map``), so the
    result is the same; but only a patch-deep accumulator is held, not the volume's: the windows
    come in rows of equal start, and a row of windows finishes every voxel row before the next
    row's start.
    """
    import torch
    import torch.nn.functional as F
    from monai.data.utils import compute_importance_map, dense_patch_slices

    diff = [max(p - s, 0) for p, s in zip(patch, shape, strict=True)]
    pads = [(d // 2, d - d // 2) for d in diff]  # MONAI pads a volume smaller than a window, centred
    size = tuple(s + d for s, d in zip(shape, diff, strict=True))
    step = tuple(p if p == n else max(1, int(p * (1 - overlap))) for p, n in zip(patch, size, strict=True))
    windows = dense_patch_slices(size, patch, step, return_slice=False)
    weight = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125, device="cpu", dtype=torch.float32)
    starts = sorted({w[0][0] for w in windows})
    (zpad, _), (ypad, _), (xpad, _) = pads
    acc = torch.zeros((k, patch[0], size[1], size[2]))
    count = torch.zeros((patch[0], size[1], size[2]))
    buffer = None  # one input buffer for every row of windows (a fresh one per row costs page faults)
    for i, z in enumerate(starts):
        a, b = max(0, z - zpad), min(shape[0], z + patch[0] - zpad)
        x = rows(a, b, buffer if buffer is not None and b - a == patch[0] else None)
        if buffer is None and b - a == patch[0]:
            buffer = x
        x = x[None]
        if any(diff):
            x = F.pad(x, (*pads[2], *pads[1], a - (z - zpad), z + patch[0] - zpad - b), mode="replicate")
        row = [w[1:] for w in windows if w[0][0] == z]
        for j in range(0, len(row), batch):
            group = row[j : j + batch]
            out = predictor(torch.cat([x[:, :, :, y0:y1, x0:x1] for (y0, y1), (x0, x1) in group]))
            for p, ((y0, y1), (x0, x1)) in zip(out, group, strict=True):
                acc[:, :, y0:y1, x0:x1].addcmul_(p, weight)
                count[:, y0:y1, x0:x1] += weight
        done = (starts[i + 1] if i + 1 < len(starts) else z + patch[0]) - z
        p = acc[:, :done] / count[:done]
        a, b = max(0, z - zpad), min(shape[0], z + done - zpad)  # the finished rows, unpadded
        if b > a:
            yield a, b, p[:, a - z + zpad : b - z + zpad, ypad : ypad + shape[1], xpad : xpad + shape[2]]
        keep = patch[0] - done  # rows the next row of windows goes on adding to
        acc[:, :keep], count[:keep] = acc[:, done:].clone(), count[done:].clone()
        acc[:, keep:], count[keep:] = 0, 0


def _tile_layers(predictor, rows, shape: tuple, tile: tuple, halo: int, divisor: int, k: int):
    """Large tiles with a halo: yields ``(a, b, p)`` per layer of tiles (``tile[0]`` rows), in order."""
    depth = shape[0]
    for a in range(0, depth, tile[0]):
        b = min(depth, a + tile[0])
        lo, hi = max(0, a - halo), min(depth, b + halo)
        yield a, b, _tiled(predictor, rows(lo, hi), (a - lo, b - lo), tile, halo, divisor, k)


def _tiled(predictor, x, rows: tuple, tile: tuple, halo: int, divisor: int, k: int):
    """Probabilities ``(k, b - a, H, W)`` of rows ``rows = (a, b)`` of ``x`` ``(C, D, H, W)`` by in-plane tiles.

    ``x`` holds the rows' context along axis 0; each tile gets ``halo`` voxels of context in-plane.

    The network is fully convolutional: each tile's core is cropped from its output, so no
    voxel is computed twice except in the halos (no overlap, no blending). A tile is padded
    (replicate) to a multiple of ``divisor``, like MONAI pads a window.
    """
    import torch
    import torch.nn.functional as F

    _, _, height, width = x.shape
    a, b = rows
    out = torch.empty((k, b - a, height, width), dtype=torch.float32)
    for y0 in range(0, height, tile[1]):
        y1 = min(height, y0 + tile[1])
        ya, yb = max(0, y0 - halo), min(height, y1 + halo)
        for x0 in range(0, width, tile[2]):
            x1 = min(width, x0 + tile[2])
            xa, xb = max(0, x0 - halo), min(width, x1 + halo)
            block = x[:, :, ya:yb, xa:xb][None]
            pad = [(-n) % divisor for n in block.shape[2:]]
            if any(pad):
                block = F.pad(block, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
            p = predictor(block)[0]
            out[:, :, y0:y1, x0:x1] = p[:, a:b, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out


def _refined(p, channels, spacing, model: SegModel, cfg: PredictConfig, strokes):
    """The slab's probabilities after the dense CRF (:mod:`~napari_sparseseg.core.inference.refine`)."""
    import torch

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
                   spacing=None, features: FeatureCache | None = None) -> Prediction:
    """Synchronous :func:`predict` (same checks, same errors).

    Examples:
        ```python
        import napari_sparseseg as ss
        mask = ss.predict_volume(ss.load_model("round1"), image).labels
        ```
    """
    return run_to_end(predict(model, image, cfg, annotations, spacing, features))
