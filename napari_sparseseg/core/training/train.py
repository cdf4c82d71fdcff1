"""Training from sparse scribbles: a generator that yields :class:`Progress`, returns :class:`TrainResult`.

The loss only sees labelled voxels (weight 0 elsewhere). Patches are centred on labelled
voxels with classes sampled evenly (MONAI's ``generate_label_classes_crop_centers``), shaped
after the voxel spacing (thin slices -> flat patches), and augmented with MONAI transforms.
Training stops when the network has learned what the strokes teach (a plateau of its
averaged weights on a probe of stroke patches, :mod:`~napari_sparseseg.core.training.monitor`),
at ``max_steps`` or after ``time_budget`` seconds, whichever comes first, or when the caller
closes the generator; the model kept is the moving average of the weights.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from napari_sparseseg.core.annotations.holdout import holdout_mask
from napari_sparseseg.core.annotations.labels import (
    SOURCE_CORRECTION,
    SOURCE_HINT,
    balance_factors,
    class_counts,
    label_dtype,
    merge_annotations,
    validate_class_names,
    validate_labels,
    validate_scribbles,
    weight_lookup,
)
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.device import adam, resolve_device, use_bfloat16
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError, ScribbleError, SparseSegError
from napari_sparseseg.core.base.grid import validate_spacing
from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
from napari_sparseseg.core.inference.predict import network_probabilities
from napari_sparseseg.core.inference.refine import intensity_scale
from napari_sparseseg.core.model.checkpoint import SegModel, default_class_names
from napari_sparseseg.core.model.forest import FeatureCache, StrokeForest, confident_labels, feature_bytes
from napari_sparseseg.core.model.intensity import check_modality, choose_normalization, detect_modality, validate_image
from napari_sparseseg.core.model.network import PATCH_VOXELS, NetworkConfig, build_network, size_for_device
from napari_sparseseg.core.model.patches import auto_patch_size
from napari_sparseseg.core.model.resolution import coarsen_labels, expand_labels, working_factors, working_scan
from napari_sparseseg.core.training.losses import keep_loss, sparse_loss
from napari_sparseseg.core.training.monitor import Plateau, Probe
from napari_sparseseg.core.training.pretrain import Pretrained, transfer


@dataclass
class TrainResult:
    """What a training round produced.

    Args:
        model: the trained model (moving average of the weights), in eval mode.
        steps: optimisation steps done.
        elapsed: seconds.
        stopped_by: ``"plateau"`` (the network had learned, :mod:`~napari_sparseseg.core.training.monitor`),
            ``"max_steps"``, ``"time_budget"`` or ``"cancelled"``.
        losses: the loss of every step.
        checks: the :class:`~napari_sparseseg.core.training.monitor.Check` of the averaged network
            on the probe, every ``check_every`` steps and at the end.
    """

    model: SegModel
    steps: int
    elapsed: float
    stopped_by: str
    losses: list
    checks: list = field(default_factory=list)

    @property
    def reason(self) -> str:
        """Why the round ended, in words (the widget's and the command line's status)."""
        return STOP_REASONS.get(self.stopped_by, self.stopped_by)


STOP_REASONS = {
    "plateau": "the network had learned the strokes (it reproduced them, or stopped getting closer)",
    "time_budget": "the time budget ran out",
    "max_steps": "the step bound was reached",
    "cancelled": "stopped by you; model kept",
}


@dataclass
class TrainingScan:
    """Another scan a :class:`Trainer` learns from (multi-scan training over a cohort).

    Args:
        image: raw intensities, 3-D, on its own grid.
        scribbles: its strokes (scribble convention), same shape; may hold only some classes.
        corrections: its correction strokes, if any.
        spacing: its voxel size in mm, array order.
        name: how messages name it (a file name).
    """

    image: np.ndarray
    scribbles: np.ndarray
    corrections: np.ndarray | None = None
    spacing: tuple = (1.0, 1.0, 1.0)
    name: str = ""


class _Checked(NamedTuple):
    """A :class:`TrainingScan` after the checks: the image, the merged target ``y`` and its source map."""

    image: np.ndarray
    y: np.ndarray
    source: np.ndarray
    spacing: tuple
    name: str | None


def _augmentation(spacing, seed: int, patch, soft: tuple[str, ...] = ()):
    """MONAI's random affine and intensity transforms of a training patch (``patch`` voxels).

    Keys: ``image`` (bilinear), ``label`` (the target and its source map as two channels,
    nearest) and ``soft``, further keys of class probabilities (a correction round's targets of
    the previous network) that move with the patch, interpolated like the image. The affine's
    sampling grid is cached (every patch has the same shape), and the strokes and their sources
    are resampled as one key: the affine took a fifth of a step's time on 2 cores.
    """
    from monai.transforms import Compose, RandAffined, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

    sp = np.asarray(spacing, float)
    anisotropic = sp.max() / sp.min() > 2.5
    # Thin slices: rotate within the slice plane only (about the thick axis).
    rot = (0.26, 0.0, 0.0) if anisotropic else (0.26, 0.26, 0.26)
    if anisotropic:
        thick = int(np.argmax(sp))
        rot = tuple(0.26 if i == thick else 0.0 for i in range(3))
    t = Compose(
        [
            RandAffined(
                keys=("image", "label", *soft),
                prob=0.5,
                spatial_size=tuple(int(p) for p in patch),
                cache_grid=True,
                rotate_range=rot,
                scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest", *("bilinear",) * len(soft)),
                padding_mode=("border", "zeros", *("border",) * len(soft)),
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            RandGaussianNoised(keys="image", std=0.03, prob=0.3),
        ]
    )
    t.set_random_state(seed=seed)
    return t



def with_background_hints(volume: tuple, at: tuple) -> tuple:
    """``volume`` ``(x, y, source, indices)`` with the voxels ``at`` (coordinates in the scan) labelled background, source ``SOURCE_HINT``.

    They also become background's patch centres (``indices[1]``). The arrays are copied, not
    changed; the volume is only padded at the far ends, so the scan's coordinates hold in it.
    """
    x, y, src, indices = volume
    y, src = y.copy(), src.copy()
    y[at], src[at] = 1, SOURCE_HINT
    indices = list(indices)
    indices[1] = np.concatenate([indices[1], np.ravel_multi_index(at, y.shape)])
    return x, y, src, indices


class Trainer:
    """One training round over one volume (or several, ``more_scans``); :meth:`run` is the generator.

    After the generator ends, is closed (Stop), or raises, :attr:`model` holds the averaged
    weights so far (or the initial model if no step finished), ready for prediction.

    Args:
        image: raw intensities, 3-D.
        scribbles: 0 = unlabelled, c + 1 = class c; same shape.
        cfg: the round's settings.
        corrections: optional, same convention; overrides scribbles with ``w_correction``.
        hints: optional pseudo-labels from boxes and clicks (same convention,
            :func:`~napari_sparseseg.core.annotations.hints.hint_labels`); weigh ``w_hint`` where no stroke
            or correction lies.
        init: warm start from this model (its classes, normalisation and patch size are kept).
        spacing: voxel size in mm, array order (drives the patch shape and augmentation).
        class_names: names with background first; defaults to "structure i".
        more_scans: further :class:`TrainingScan` items (their own grids and spacings): patches
            are drawn across all scans, a class evenly and then a scan holding it; the classes
            are those of all scans together, the normalisation policy and patch are the first
            scan's (each scan of the model's modality), and the forest is fitted on all strokes.
        pretrained: a new model starts from this self-supervised state of the same scan
            (:mod:`~napari_sparseseg.core.training.pretrain`): its architecture, normalisation and patch
            are kept and its weights copied except the class head. Ignored with ``init``.
        preview: yield the forest's mask as an early prediction
            (:attr:`Progress.preview <napari_sparseseg.core.base.progress.Progress.preview>`) as soon as
            it is fitted, a few seconds after the start; it costs the network that much training
            time, so the widget asks for it only while no prediction is shown.
        features: the :class:`~napari_sparseseg.core.model.forest.FeatureCache` the forest's filter
            features are read from and kept in (a session's, so the round's prediction reuses
            them); ``None``: a cache of this trainer's own.

    Every input is checked here, with the command line's checks, before any work starts.

    Raises:
        InputError: the image is not a 3-D real array, is too thin, or holds NaN/inf; the
            spacing is not three positive numbers.
        ScribbleError: scribbles or corrections not on the image's shape, not whole numbers,
            negative, boolean, above ``MAX_CLASSES`` (names the value and its voxel count), no
            strokes, one class only, a class the warm-start model lacks, or fewer class names
            than scribbled classes.
        ConfigError: ``cfg`` is not a :class:`TrainConfig`, the class names are not a list
            of distinct names, or ``pretrained`` was made on a scan of another shape or spacing.
        CheckpointError: ``init`` is not a model.
    """

    def __init__(self, image, scribbles, cfg: TrainConfig | None = None, *, corrections=None, init: SegModel | None = None, spacing=(1.0, 1.0, 1.0), class_names=None,
                 pretrained=None, preview: bool = False, more_scans=(), hints=None, features: FeatureCache | None = None):
        if cfg is not None and not isinstance(cfg, TrainConfig):
            raise ConfigError(f"cfg must be a TrainConfig, got {type(cfg).__name__}.")
        if init is not None and not isinstance(init, SegModel):
            raise CheckpointError(f"init must be a model (load_model or a training result), got {type(init).__name__}.")
        self.cfg = cfg or TrainConfig()
        image = validate_image(image)
        scribbles = validate_labels(scribbles, "scribbles", shape=image.shape)
        if corrections is not None:
            corrections = validate_labels(corrections, "corrections", shape=image.shape)
        if hints is not None:
            hints = validate_labels(hints, "hints", shape=image.shape)
        spacing = validate_spacing(spacing)
        if class_names is not None:
            class_names = validate_class_names(class_names)
        self.y, self.source = merge_annotations(scribbles, corrections, hints)
        self.y_all, self.heldout = self.y, None
        if self.cfg.holdout_every:  # kept out of training (and of the prediction's filter and CRF) this round

            held = holdout_mask(self.y, self.source, self.cfg.holdout_round, self.cfg.holdout_every)
            if held.any():
                self.heldout = held
                self.y = np.where(held, 0, self.y).astype(self.y.dtype)
                self.source = np.where(held, 0, self.source).astype(self.source.dtype)
        self.more = [self._check_scan(m) for m in more_scans]
        if self.more:  # the classes are those of all scans together; each scan holds some of them
            values = sorted(set(np.unique(self.y).tolist()).union(*(np.unique(m.y).tolist() for m in self.more)))
            n_classes = validate_scribbles(np.array(values, np.uint16).reshape(-1, 1, 1), init.num_classes if init else None)
        else:
            n_classes = validate_scribbles(self.y, init.num_classes if init else None)
        if init is None and class_names is not None:
            if len(class_names) < n_classes:
                raise ScribbleError(f"{len(class_names)} class names given but the scribbles use {n_classes} classes "
                                    f"(values up to {n_classes}); name every class, background first.")
            n_classes = len(class_names)
        self.image, self.spacing, self.init = image, spacing, init
        self.num_classes = init.num_classes if init else n_classes
        self.class_names = list(init.class_names) if init else list(class_names or default_class_names(n_classes))
        self.device = resolve_device(self.cfg.device)
        self._check_modalities()
        self.model: SegModel | None = init
        self.pretrained, self.preview = None, bool(preview)
        self.features = FeatureCache() if features is None else features
        # A large scan is learned on blocks of its voxels (core/model/resolution.py); y, source and
        # heldout stay on the scan's own voxels (the prediction's constraints and estimate).
        self.factors = working_factors(image.shape, spacing, self.cfg.working_voxels)
        self.work = self._working(_Checked(image, self.y, self.source, spacing, None))
        self.more_work = [self._working(m) for m in self.more]
        if pretrained is not None:
            self.use_pretrained(pretrained)

    def _check_scan(self, scan: TrainingScan) -> _Checked:
        """Another scan, checked like the first, with its strokes merged."""
        if not isinstance(scan, TrainingScan):
            raise ConfigError(f"more_scans must hold TrainingScan items, got {type(scan).__name__}.")
        name = scan.name or None
        image = validate_image(scan.image, path=name)
        scribbles = validate_labels(scan.scribbles, "scribbles", shape=image.shape, path=name)
        corrections = None
        if scan.corrections is not None:
            corrections = validate_labels(scan.corrections, "corrections", shape=image.shape, path=name)
        y, source = merge_annotations(scribbles, corrections)
        if not y.any():
            raise ScribbleError("this scan has no strokes; paint some or leave it out of the training.", path=name)
        return _Checked(image, y, source, validate_spacing(scan.spacing), name)

    def _working(self, scan: _Checked) -> _Checked:
        """``scan`` on its working grid: itself when small enough, else its blocks (coarse spacing)."""
        image, spacing = working_scan(scan.image, scan.spacing, self.cfg.working_voxels)
        if image is scan.image:
            return scan
        y, source = coarsen_labels(scan.y, working_factors(scan.image.shape, scan.spacing, self.cfg.working_voxels),
                                   scan.source)
        return _Checked(image, y, source, spacing, scan.name)

    def _check_modalities(self) -> None:
        """One normalisation policy per model: every scan must be of the model's modality."""
        if not self.more or (self.init is None and self.cfg.modality != "auto"):
            return  # a modality the user set applies to every scan

        want = self.init.normalization.modality if self.init is not None else detect_modality(self.image)
        for scan in self.more:
            check_modality(scan.image, want, scan.name, "the model is for", "train one model per modality")

    def use_pretrained(self, pretrained) -> None:
        """Start the new model from a self-supervised state of this scan (ignored with a warm start).

        Raises:
            ConfigError: ``pretrained`` is not a pretraining result, or was made on a scan with
                another spacing.
        """
        if self.init is not None:
            return

        if not isinstance(pretrained, Pretrained):
            raise ConfigError(f"pretrained must be a pretraining result, got {type(pretrained).__name__}.")
        if not np.allclose(pretrained.spacing, self.spacing, rtol=1e-4):
            raise ConfigError(f"the pretrained state was made on a scan with spacing {tuple(pretrained.spacing)}, "
                              f"not {tuple(self.spacing)}; pretrain on this scan.")
        self.pretrained = pretrained

    @property
    def normalization(self):
        """The intensity normalisation of the model this round trains.

        The warm start's, the pretrained state's, or the one chosen for the scan; the forest's
        features are computed in it.
        """
        if self.init is not None:
            return self.init.normalization
        if self.pretrained is not None:
            return self.pretrained.normalization
        return choose_normalization(self.work.image, self.cfg.modality)

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> SegModel:
        import torch

        if self.init is not None:
            model = copy.copy(self.init)
            model.network = copy.deepcopy(self.init.network).to(self.device)
            model.history = list(self.init.history)
            return model
        torch.manual_seed(self.cfg.seed)
        if self.pretrained is not None:

            pre = self.pretrained
            norm, patch = self.normalization, tuple(pre.patch_size)
            config = NetworkConfig.from_dict({**pre.config.to_dict(), "out_channels": self.num_classes})
        else:
            norm = self.normalization
            size = size_for_device(self.cfg.model_size, self.device.type)
            config = NetworkConfig.of_size(size, norm.n_channels, self.num_classes)
            budget = self.cfg.patch_voxels or PATCH_VOXELS[size]
            patch = self.cfg.patch_size or auto_patch_size(self.work.spacing, self.work.image.shape, config.divisor, budget)
            patch = tuple(int(math.ceil(p / config.divisor) * config.divisor) for p in patch)
        network = build_network(config, background_prior=self.cfg.background_prior)
        history = []
        if self.pretrained is not None:
            transfer(self.pretrained, network, config)
            history.append({"pretrained": self.pretrained.task, "steps": self.pretrained.steps,
                            "seconds": round(self.pretrained.seconds, 2)})
        return SegModel(network.to(self.device), config, norm, self.class_names, patch, self.work.spacing, history)

    def _volume(self, model: SegModel, image, y, source) -> tuple:
        """``(x, y, source, indices)`` of one scan: normalised channels, padded to the patch; voxels per value."""
        patch = model.patch_size
        x = model.normalization.apply(image)
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(patch, image.shape, strict=True)]
        if any(b for _, b in pad):
            x = np.pad(x, pad, mode="edge")
            y = np.pad(y, pad[1:], constant_values=0)
            source = np.pad(source, pad[1:], constant_values=0)
        flat = y.reshape(-1)
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(self.num_classes + 2))
        indices = [order[bounds[v] : bounds[v + 1]] if v > 0 else np.zeros(0, np.int64) for v in range(self.num_classes + 1)]
        return x, y, source, indices

    def _prepare_arrays(self, model: SegModel):
        w = self.work
        x, y, src, indices = self._volume(model, w.image, w.y, w.source)
        counts = class_counts(w.y, self.num_classes)
        for m in self.more_work:
            counts = counts + class_counts(m.y, self.num_classes)
        table = weight_lookup(balance_factors(counts, self.cfg.weights), self.cfg.weights)
        ratios = [0.0] + [1.0 if c > 0 else 0.0 for c in counts]
        return x, y, src, table, indices, ratios

    @staticmethod
    def _centres(volumes: list, patch, n: int, ratios, rng) -> list:
        """``n`` patch centres, each ``(volume, centre)``: a class drawn evenly, then a scan holding it, then a voxel."""
        from monai.transforms.utils import generate_label_classes_crop_centers

        if len(volumes) == 1:
            v = volumes[0]
            centres = generate_label_classes_crop_centers(patch, n, v[1].shape, v[3], ratios, rand_state=rng, warn=False)
            return [(v, c) for c in centres]
        present = [value for value, r in enumerate(ratios) if r > 0]
        out = []
        for _ in range(n):
            value = present[rng.randint(len(present))]
            holders = [v for v in volumes if len(v[3][value])]
            v = holders[rng.randint(len(holders))]
            only = [1.0 if i == value else 0.0 for i in range(len(ratios))]
            out.append((v, generate_label_classes_crop_centers(patch, 1, v[1].shape, v[3], only, rand_state=rng,
                                                               warn=False)[0]))
        return out

    def _fit_forest(self, model: SegModel):
        """A :class:`~napari_sparseseg.core.model.forest.StrokeForest` on this round's strokes.

        ``None`` when the scan's features would exceed ``forest_max_feature_bytes``.
        """
        cfg = self.cfg
        scans = [(w.image, w.y, w.spacing) for w in [self.work, *self.more_work]]
        if any(feature_bytes(image.shape) > cfg.forest_max_feature_bytes for image, _, _ in scans):
            return None
        norm = model.normalization

        def pairs():  # one scan's features at a time (the cache keeps one scan)
            for image, y, spacing in scans:
                yield self.features.get(image, norm.ranges(image), spacing), y

        return StrokeForest.fit_many(pairs(), self.num_classes, len(scans), max_samples=cfg.forest_max_samples,
                                     seed=cfg.seed, weight=cfg.forest_weight)

    def _forest_mask(self, probs: np.ndarray) -> np.ndarray:
        """The forest's mask of the scan from its probabilities (stroke regions only): the preview shown while the network trains."""
        labels = probs.argmax(0).astype(label_dtype(self.num_classes - 1))
        keep_stroke_regions(labels, self.work.y)
        return expand_labels(labels, self.factors, self.image.shape)

    def _with_forest_labels(self, probs: np.ndarray, volume: tuple) -> tuple:
        """``(volume, n)``: ``volume`` with ``n`` background pseudo-labels where its forest is sure of background (source ``SOURCE_HINT``).

        A network trained on a few slices' strokes paints tissue that looks like the structure
        and was never stroked (on the second brain-tumour patient, 3,000-10,000 voxels for a
        453-voxel lesion), and the fusion then carries part of it past the forest. The forest
        sees every stroke voxel's filters at once and is sure of background over most of that
        tissue: a few of its sure voxels (:func:`~napari_sparseseg.core.model.forest.confident_labels`,
        ``TrainConfig.forest_pseudo_labels`` per background stroke voxel, each weighing
        ``WeightConfig.w_hint``) teach the network where it is not. Background only: the forest's
        sure structure voxels are the core it already gets right, and teaching them too made the
        second brain patient's round 0 worse. One per stroke voxel: in all they weigh at most
        ``w_hint`` (0.3) of the background strokes; three (0.9) shifted the class balance enough to
        shrink the sample CT's structures (docs/benchmarks.md, "Round length").

        Background patches are centred on its strokes and its pseudo-labels alike (``volume``'s
        indices of background gain the pseudo-labels; the classes still get patches evenly): with
        centres on the strokes only, the network saw background only on the stroked slices and
        their surroundings, never the look-alike tissue elsewhere, and the pseudo-labels there
        reached it only when a patch happened to cover them (the first brain patient, two slices
        per axis, annotator 2: 37,935 false-positive voxels of the network alone with centres on
        the strokes, 2,027 with these). The probe judges the strokes alone.
        """
        cfg, w = self.cfg, self.work
        held = self.heldout  # never on a stroke held out of the round: its estimate is scored there
        if held is not None and held.shape != w.y.shape:
            held = coarsen_labels(held.astype(np.uint8), self.factors) > 0
        where, _ = confident_labels(probs, w.y, cfg.forest_pseudo_labels, cfg.forest_pseudo_confidence,
                                    np.random.RandomState(cfg.seed + 104729), classes=[0], exclude=held)
        if not len(where):
            return volume, 0
        return with_background_hints(volume, np.unravel_index(where, w.y.shape)), len(where)

    # ------------------------------------------------------------------ loop
    def run(self) -> Generator[Progress, None, TrainResult]:
        """Train; yield :class:`Progress` after every step, return a :class:`TrainResult`.

        Closing the generator (Stop) ends training after the current step; :attr:`model` then
        holds the averaged weights so far.

        Raises:
            SparseSegError: the loss diverged (says what to do).
        """
        import monai.transforms.utils  # noqa: F401 - the patch sampler's module: imported (~1 s cold) before the clock starts
        import torch


        cfg = self.cfg
        t0 = time.perf_counter()
        rng = np.random.RandomState(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = self._build_model()
        self.model = model
        x, y, src, table, indices, ratios = self._prepare_arrays(model)
        volumes = [(x, y, src, indices)] + [self._volume(model, m.image, m.y, m.source) for m in self.more_work]
        # The appearance scale of boundary refinement, from this round's strokes (stored with the model).
        model.intensity_scale = intensity_scale(x, y) or model.intensity_scale
        # Before the network's time starts: the budget is the network's, whatever the forest costs
        # (a large scan's filters took a whole budget before the first step). Off (or a scan too
        # large for its features), a warm start's forest of earlier strokes is dropped, not reused.
        model.forest = self._fit_forest(model) if cfg.forest else None
        pseudo = 0  # background pseudo-labels from the forest (recorded in the model's history)
        if model.forest is not None:
            # The forest's probabilities of the scan, once: kept for the round's prediction, its
            # preview (stroke regions only) and its pseudo-labels.
            w = self.work
            probs = self.features.forest_probabilities(model.forest, w.image, model.normalization.ranges(w.image), w.spacing)
            early = self._forest_mask(probs) if self.preview else None
            yield Progress("train", 0, cfg.max_steps or 0, time.perf_counter() - t0, None, cfg.time_budget, early)
            if cfg.forest_pseudo_labels > 0:
                volumes[0], pseudo = self._with_forest_labels(probs, volumes[0])
            del probs
        patch = model.patch_size
        # A correction round (a warm start whose strokes include corrections) keeps the previous
        # round's prediction where nothing is labelled (learning without forgetting): without it
        # the network drifted from what the last round got right while it learned the corrections.
        # The previous network's probabilities are computed once per scan, when the round
        # starts, and move with each patch through its affine; that network is neither run on
        # every batch nor held during the round. (Correction steps still cost 15-20 % more than
        # a first round's: resampling these targets and the KL term, measured by
        # benchmarks/correction_speed.py.)
        correcting = self.init is not None and bool(np.any(self.source == SOURCE_CORRECTION))
        keep = cfg.keep_previous > 0 and correcting
        # Structures only (background is 1 minus their sum, interpolation being linear): one
        # channel fewer to carry through each patch's affine.
        previous = [network_probabilities(self.init.network, v[0], patch, self.num_classes, self.device, cfg.precision)[1:]
                    if keep else None for v in volumes]
        volumes = [(*v, p) for v, p in zip(volumes, previous, strict=True)]
        soft = ("previous",) if keep else ()
        augment = _augmentation(self.work.spacing, cfg.seed, patch, soft) if cfg.augment else None
        table_t = torch.from_numpy(table)
        # The default layout: channels-last trained 1.15-1.30x faster on 2 cores in float32, but
        # its sums depend on the thread count, so a round on a one-thread Dask worker no longer
        # matched the local one (docs/benchmarks.md, "Layout and optimiser").
        net = model.network
        net.train()
        opt = adam(net.parameters(), self.device, lr=cfg.learning_rate, weight_decay=1e-5)
        # A warm start restarts Adam with empty moment estimates, whose first steps move every
        # weight of the trained network by about the learning rate: ramp the rate up instead.
        ramp = cfg.warmup_steps if self.init is not None else 0
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / ramp) if ramp else 1.0)
        # Mixed precision: bfloat16 where the device runs it natively (core/base/device.py), float16
        # with loss scaling on a CUDA card without it; the weights and the loss stay float32.
        if self.device.type == "cuda":
            amp = cfg.precision != "float32"
            bf16 = cfg.precision == "bfloat16" or torch.cuda.is_bf16_supported()
        else:
            amp = bf16 = use_bfloat16(cfg.precision, self.device)
        amp_dtype = torch.bfloat16 if bf16 else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

        # Exponential moving average of the weights (Polyak averaging): the model returned is
        # the average, which is far less sensitive to the last few noisy sparse-label steps.
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.weight_ema), use_buffers=True)
        losses: list[float] = []
        stopped_by, step = "max_steps", 0
        # Its own random state, so the patches drawn for training are those of a run without it.
        probe = Probe(x, y, src, patch, self.num_classes, np.random.RandomState(cfg.seed + 7919),
                      bf16=use_bfloat16(cfg.precision, self.device))
        every = cfg.check_every or max(1, round(1.0 / (1.0 - cfg.weight_ema)))
        tolerance = cfg.plateau_correction_tolerance if correcting else cfg.plateau_tolerance
        plateau, checks = Plateau(tolerance, cfg.plateau_patience, cfg.plateau_stall), []
        t_loop = time.perf_counter()  # after the setup (and the forest): what a step costs is measured from here
        try:
            for step in itertools.count(1):
                if cfg.max_steps is not None and step > cfg.max_steps:
                    step -= 1
                    break
                now = time.perf_counter()
                if cfg.time_budget is not None and step > 1:
                    # Stop when half another step would overrun the budget.
                    if now - t_loop + 0.5 * (now - t_loop) / (step - 1) > cfg.time_budget:
                        stopped_by, step = "time_budget", step - 1
                        break
                xs, ys, ws, ps = [], [], [], []
                for (vx, vy, vsrc, _, vprev), c in self._centres(volumes, patch, cfg.batch_size, ratios, rng):
                    # Jitter the centre so the labelled voxel is not always mid-patch (no position shortcut).
                    start = [int(ci) - p // 2 + int(rng.randint(-(p // 3), p // 3 + 1)) for ci, p in zip(c, patch, strict=True)]
                    start = [min(max(0, st), n - p) for st, n, p in zip(start, vy.shape, patch, strict=True)]
                    sl = tuple(slice(st, st + p) for st, p in zip(start, patch, strict=True))
                    sample = {"image": vx[(slice(None),) + sl], "label": np.stack([vy[sl], vsrc[sl]]).astype(np.int64)}
                    if keep:
                        sample["previous"] = vprev[(slice(None),) + sl].astype(np.float32)
                    if augment is not None:
                        sample = augment(sample)
                    lab, so = torch.as_tensor(np.asarray(sample["label"])).long()
                    xs.append(torch.as_tensor(np.asarray(sample["image"]), dtype=torch.float32))
                    ys.append((lab - 1).clamp_min(0))
                    ws.append(table_t[so, lab])
                    if keep:
                        rest = torch.as_tensor(np.asarray(sample["previous"]), dtype=torch.float32)
                        ps.append(torch.cat([(1.0 - rest.sum(0, keepdim=True)).clamp_min(0.0), rest]))
                xb = torch.stack(xs).to(self.device)
                yb = torch.stack(ys).to(self.device)
                wb = torch.stack(ws).to(self.device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp):
                    logits = net(xb)
                loss = sparse_loss(logits.float(), yb, wb, cfg.dice_weight)
                if keep:
                    loss = loss + cfg.keep_previous * keep_loss(logits.float(), torch.stack(ps).to(self.device), wb)
                if not torch.isfinite(loss):
                    raise SparseSegError(
                        f"training diverged at step {step} (loss {loss.item()}); lower the learning rate or check the image."
                    )
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # no blow-ups from one odd patch
                scaler.step(opt)
                scaler.update()
                schedule.step()
                averaged.update_parameters(net)
                value = float(loss.detach())
                losses.append(value)
                yield Progress("train", step, cfg.max_steps or 0, time.perf_counter() - t0, value, cfg.time_budget)
                if cfg.plateau and step % every == 0:
                    checks.append(probe.check(averaged.module, step, time.perf_counter() - t0))
                    if plateau.reached(checks[-1]):
                        stopped_by = "plateau"
                        break
        except GeneratorExit:
            stopped_by = "cancelled"
            raise
        finally:
            if losses:
                net.load_state_dict(averaged.module.state_dict())
            net.eval()
            if losses and (not checks or checks[-1].step != len(losses)):
                checks.append(probe.check(net, len(losses), time.perf_counter() - t0))
            if model.forest is not None and checks:  # how far prediction trusts the network, per class
                model.forest.trust = checks[-1].trust
            model.history.append(
                {"round": sum("round" in h for h in model.history) + 1, "steps": step if losses else 0, "seconds": round(time.perf_counter() - t0, 2),
                 "final_loss": losses[-1] if losses else None, "stopped_by": stopped_by,
                 "forest_samples": None if model.forest is None else int(len(model.forest.classes)),
                 "forest_pseudo_labels": pseudo,
                 "agreement": checks[-1].to_dict()["agreement"] if checks else None}
            )
        return TrainResult(model, len(losses), time.perf_counter() - t0, stopped_by, losses, checks)


def preload() -> None:
    """Import what a round needs (MONAI's networks and transforms, scikit-learn's forest, the optimiser).

    Cold, these imports take seconds (6 s of a round's start-up on a 2-core machine); a
    widget calls this in the background when a scan is picked, so Train does not wait for them.
    The first optimiser built in a process imports ``torch._dynamo`` (800 modules, sympy among
    them: 2-7 s); built here once, a round's thread no longer holds the GIL importing them
    while the GUI thread waits (0.8 s stalls of a widget's event loop).
    """
    import monai.networks.nets  # noqa: F401
    import monai.transforms  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import torch
    import torch.optim.swa_utils  # noqa: F401

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def train(image, scribbles, cfg: TrainConfig | None = None, **kwargs) -> Generator[Progress, None, TrainResult]:
    """Generator form of :class:`Trainer` (``yield`` progress, ``return`` the result)."""
    return Trainer(image, scribbles, cfg, **kwargs).run()
