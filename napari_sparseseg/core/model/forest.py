"""A random forest on image filters, trained on the same strokes as the network, fused with it.

Where intensity and local texture alone separate the classes, and on lesions of a few hundred
voxels, ilastik's pixel classifier (a random forest on a bank of Gaussian filters) is hard to
beat from a few strokes: it sees every labelled voxel at once and needs no optimisation. A
network trained for a minute on the same strokes makes different mistakes (it learns shape and
context, and lights up look-alike tissue it never saw labelled). Pooling the two models'
probabilities (a two-member ensemble, log-linear: :func:`fuse`) cancels part of each one's
independent error; the benchmark numbers are in ``models/README.md``. The forest is fitted at
the start of each round, inside its time budget, and its own mask can be shown a few seconds
after Train while the network trains on (``Trainer(preview=True)``).

Features (ilastik's default 3-D set without the structure tensor), on the scan's intensities
mapped linearly with the model's normalisation range (no clipping), at five scales: Gaussian
smoothing, Laplacian of Gaussian, gradient magnitude, difference of Gaussians and the three
Hessian eigenvalues, plus the intensity itself (36 features). The scales are in voxels of the
finest axis and stretched per axis by the spacing, so a 6.5 mm slice gap is not smoothed as if
it were 0.8 mm. They are computed once per scan in slabs along axis 0 (with a halo, so slab
edges are exact) and kept as float16 in the session's :class:`FeatureCache` (the command line also keeps them
on disk, :func:`napari_sparseseg.io.cache.cache_scan_features`); a scan whose features would exceed
``ForestConfig.max_feature_bytes`` gets no forest (the network alone predicts).

The forest is stored in the model folder as its training set (``forest.npz``: the stroke
voxels' features and classes, at most ``max_samples``) and its settings, and refit when the
model is loaded: no pickles, and the refit is deterministic (scikit-learn, fixed seed).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from napari_sparseseg.core.annotations.labels import class_counts
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.model.intensity import choose_normalization
from napari_sparseseg.core.model.resolution import working_scan

__all__ = ["FEATURES_VERSION", "N_FEATURES", "SIGMAS", "FeatureCache", "FeatureSource", "StrokeForest", "feature_halo",
           "confident_labels", "feature_key", "filter_features", "forest_input", "fuse", "scan_features"]

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)  # ilastik's default scales, in voxels of the finest axis
TRUNCATE = 3.0  # Gaussian kernels end at 3 sigma (ilastik's default)
N_FEATURES = 1 + 7 * len(SIGMAS)
# Bump when what filter_features computes changes: features cached on disk are checked against it.
FEATURES_VERSION = 1


def _axis_sigmas(s: float, spacing) -> tuple:
    fine = float(min(spacing))
    return tuple(s * fine / float(sp) for sp in spacing)


def feature_halo(spacing) -> int:
    """Voxels along axis 0 a slab needs on each side for its features to be exact."""
    # Second-order derivatives of the widest Gaussian reach TRUNCATE sigma + 0.5 voxels.
    return int(math.ceil(TRUNCATE * _axis_sigmas(max(SIGMAS), spacing)[0] + 0.5)) + 1


def _eigvals_sym3(a00, a01, a02, a11, a12, a22) -> list:
    """Eigenvalues (descending) of per-voxel symmetric 3x3 matrices (closed form, float32)."""
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    safe = np.where(p > 1e-12, p, 1.0)
    det = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02))
    r = np.clip(det / (2.0 * safe**3), -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return [e1, 3.0 * q - e1 - e3, e3]


def filter_features(x: np.ndarray, spacing) -> np.ndarray:
    """``(N_FEATURES, *x.shape)`` float32 filter responses of one block of intensities."""
    from scipy import ndimage as ndi  # here, not at import: io reads model folders through this module

    x = np.asarray(x, np.float32)
    feats = [x]
    for s in SIGMAS:
        sig = _axis_sigmas(s, spacing)
        g = ndi.gaussian_filter(x, sig, truncate=TRUNCATE)
        feats.append(g)
        feats.append(g - ndi.gaussian_filter(x, tuple(0.66 * v for v in sig), truncate=TRUNCATE))
        grads = [ndi.gaussian_filter(x, sig, order=o, truncate=TRUNCATE) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
        feats.append(np.sqrt(sum(gr * gr for gr in grads)))
        del grads
        h = [ndi.gaussian_filter(x, sig, order=o, truncate=TRUNCATE)
             for o in ((2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2))]
        feats.append(h[0] + h[3] + h[5])  # Laplacian of Gaussian
        feats += _eigvals_sym3(*h)
        del h
    return np.stack(feats).astype(np.float32, copy=False)


def forest_input(image: np.ndarray, ranges) -> np.ndarray:
    """The forest's intensities: the first normalisation range mapped linearly to [-1, 1], unclipped."""
    lo, hi = (float(v) for v in ranges[0])
    return ((np.asarray(image, np.float32) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32, copy=False)


def feature_bytes(shape) -> int:
    """Bytes of a scan's stored features (float16)."""
    return int(np.prod(shape)) * N_FEATURES * 2


def feature_key(image: np.ndarray, ranges, spacing) -> tuple:
    """What a scan's features depend on: a hash of its voxels, its shape and dtype, the ranges and spacing.

    :class:`FeatureCache` keeps features under it, and the cache on disk
    (:func:`napari_sparseseg.io.cache.cache_scan_features`) names its entries by it.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8).reshape(-1), digest_size=16).hexdigest()
    return digest, image.shape, str(image.dtype), tuple(tuple(r) for r in ranges), tuple(float(s) for s in spacing)


def scan_features(image: np.ndarray, ranges, spacing, slab: int = 16) -> np.ndarray:
    """``(N_FEATURES, *image.shape)`` float16 features of a whole scan, computed slab by slab (not kept)."""
    x = forest_input(image, ranges)
    halo = feature_halo(spacing)
    out = np.empty((N_FEATURES,) + image.shape, np.float16)
    depth = image.shape[0]
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        lo, hi = max(0, start - halo), min(depth, stop + halo)
        out[:, start:stop] = filter_features(x[lo:hi], spacing)[:, start - lo : stop - lo]
    return out


class FeatureCache:
    """The filter features of the scan last asked for, kept in memory (thread-safe).

    A :class:`~napari_sparseseg.core.session.state.Session` owns one, so every round and
    prediction on its scan pays once (the trainer and the prediction of a round share it),
    and a head start (:meth:`prepare`, the widget's while the user paints) is not repeated.
    Entries are keyed by a hash of the image, its normalisation range and spacing; one scan is
    kept at a time, so the memory is bounded by one scan's features.
    """

    def __init__(self):
        self._lock = threading.Lock()  # guards the dict
        self._compute = threading.Lock()  # one feature pass at a time: a second caller waits, then reads
        self._entries: dict = {}
        self._forest = None  # (forest, scan key, probabilities) of the last forest_probabilities call

    def get(self, image: np.ndarray, ranges, spacing, slab: int = 16) -> np.ndarray:
        """:func:`scan_features` of this scan, computed on the first call and kept."""
        key = feature_key(image, ranges, spacing)
        with self._compute:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            out = scan_features(image, ranges, spacing, slab)
            with self._lock:
                self._entries.clear()  # one scan at a time
                self._entries[key] = out
        return out

    def put(self, image: np.ndarray, ranges, spacing, features: np.ndarray) -> None:
        """Keep ``features`` as this scan's (read back from a cache on disk, :mod:`napari_sparseseg.io.cache`).

        Raises:
            ValueError: ``features`` are not ``(N_FEATURES, *image.shape)`` float16.
        """
        if features.shape != (N_FEATURES,) + image.shape or features.dtype != np.float16:
            raise ValueError(f"features must be ({N_FEATURES}, *{image.shape}) float16, got {features.shape} {features.dtype}.")
        key = feature_key(image, ranges, spacing)
        with self._lock:
            self._entries.clear()
            self._entries[key] = features

    def has(self, image: np.ndarray, ranges, spacing) -> bool:
        """Whether :meth:`get` of this scan would be read from memory."""
        key = feature_key(image, ranges, spacing)
        with self._lock:
            return key in self._entries

    def prepare(self, image: np.ndarray, spacing, modality: str = "auto", max_bytes: int | None = None,
                working_voxels: int | None = None) -> bool:
        """Compute a scan's features ahead of the first round.

        Uses the grid and normalisation a new model of this scan gets (a large scan's blocks,
        :mod:`~napari_sparseseg.core.model.resolution`, ``working_voxels`` default
        ``TrainConfig.working_voxels``), so the first round finds them here. Returns whether
        they were computed (``False`` when they would exceed ``max_bytes``, default
        ``TrainConfig.forest_max_feature_bytes``).
        """
        limit = TrainConfig.forest_max_feature_bytes if max_bytes is None else max_bytes
        image, spacing = working_scan(image, spacing, TrainConfig.working_voxels if working_voxels is None else working_voxels)
        if feature_bytes(image.shape) > limit:
            return False
        self.get(image, choose_normalization(image, modality).ranges(image), spacing)
        return True

    def forest_probabilities(self, forest: StrokeForest, image: np.ndarray, ranges, spacing) -> np.ndarray:
        """``(num_classes, *image.shape)`` float16 probabilities of the whole scan by ``forest``, kept.

        A round computes them once, when its forest is fitted (its early preview, before the
        network has trained), and the round's prediction reads them here instead of running
        the forest again while the user waits. One forest's are kept, beside one scan's features.
        """
        key = feature_key(image, ranges, spacing)
        with self._lock:
            kept = self._forest
            if kept is not None and kept[0] is forest and kept[1] == key:
                return kept[2]
        feats = self.get(image, ranges, spacing)
        out = np.empty((forest.num_classes,) + image.shape, np.float16)
        for a in range(0, image.shape[0], 16):
            out[:, a : a + 16] = forest.probabilities(feats[:, a : a + 16])
        with self._lock:
            self._forest = (forest, key, out)
        return out

    def kept_forest_probabilities(self, forest: StrokeForest, image: np.ndarray, ranges, spacing) -> np.ndarray | None:
        """What :meth:`forest_probabilities` holds for this forest and scan, or ``None`` (nothing computed)."""
        with self._lock:
            kept = self._forest
        if kept is None or kept[0] is not forest or kept[1] != feature_key(image, ranges, spacing):
            return None
        return kept[2]

    def clear(self) -> None:
        """Forget the features and forest probabilities kept (they are recomputed when asked for again)."""
        with self._lock:
            self._entries.clear()
            self._forest = None


class FeatureSource:
    """Features of axis-0 ranges of a scan.

    The whole scan's features (kept in ``cache`` when given, else computed for this source only)
    when they fit in ``max_bytes``, else computed per range with its halo (memory bounded by
    the range).
    """

    def __init__(self, image: np.ndarray, ranges, spacing, max_bytes: int, cache: FeatureCache | None = None):
        self.image, self.ranges, self.spacing, self.cache = image, ranges, spacing, cache
        self._kept_for, self._kept = None, None  # the forest probabilities the cache holds, and whose
        fits = feature_bytes(image.shape) <= max_bytes
        whole = cache.get if cache is not None else scan_features
        self.cached = whole(image, ranges, spacing) if fits else None

    def block(self, lo: int, hi: int) -> np.ndarray:
        """``(N_FEATURES, hi - lo, ...)`` features of ``image[lo:hi]``."""
        if self.cached is not None:
            return self.cached[:, lo:hi]
        halo = feature_halo(self.spacing)
        a, b = max(0, lo - halo), min(self.image.shape[0], hi + halo)
        return filter_features(forest_input(self.image[a:b], self.ranges), self.spacing)[:, lo - a : hi - a]

    def probabilities(self, forest: StrokeForest, lo: int, hi: int, chunk_voxels: int = 1 << 22) -> np.ndarray:
        """``(num_classes, hi - lo, ...)`` forest probabilities of ``image[lo:hi]``.

        Without the cache the features are made a few planes at a time (at least the halo's
        depth, about ``chunk_voxels`` voxels), so the float32 features of a large slab are
        never held at once: memory stays bounded as the network's prediction is.
        """
        if self.cache is not None and self._kept_for is not forest:  # looked up once per forest, not per slab
            self._kept_for = forest
            self._kept = self.cache.kept_forest_probabilities(forest, self.image, self.ranges, self.spacing)
        if self._kept is not None and self._kept_for is forest:  # the round's own forest: computed when it was fitted
            return self._kept[:, lo:hi].astype(np.float32)
        plane = int(np.prod(self.image.shape[1:]))
        step = hi - lo if self.cached is not None else max(feature_halo(self.spacing), chunk_voxels // max(plane, 1), 1)
        out = np.empty((forest.num_classes, hi - lo) + self.image.shape[1:], np.float32)
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            out[:, a - lo : b - lo] = forest.probabilities(self.block(a, b))
        return out


def fuse(p_net, p_forest, weight: float, trust=None, eps: float = 1e-6):
    """Log-linear pooling of two ``(C, ...)`` torch probability maps: ``p ∝ p_net^((1-w) t) p_forest^w``.

    A product of experts keeps a class only where neither model rules it out, which on the
    multi-class benchmark cases beat the plain average; for two classes the two agree.
    ``trust`` (per class, in [0, 1]; ``None``: all 1) is how well the network agreed with this
    scan's strokes on each class when its round ended
    (:mod:`~napari_sparseseg.core.training.monitor`). It scales the network's term of each class,
    so a network that has not learned a class yet (a fresh one predicts background everywhere)
    cannot veto the forest's mask of it; and at each voxel the network's whole vote is scaled by
    its trust on the class it predicts there, so it cannot paint a class it has not learned
    either. Scaling only the class's own term left a network warm-started from another patient
    (trust 0.92 on background, 0 on a tumour it had not learned on this patient) its vote
    against background in full wherever it marked the first patient's look-alike tissue: it
    painted 5,451 voxels for a 453-voxel lesion (docs/cohorts.md, "Across patients").
    """
    import torch

    scale = torch.full((p_net.shape[0],) + (1,) * (p_net.dim() - 1), 1.0 - weight, dtype=p_net.dtype)
    if trust is not None:
        t = torch.as_tensor(np.asarray(trust, np.float32), dtype=p_net.dtype)
        # max's indices are argmax's (the first of equal maxima); torch's argmax over dim 0 is 20x slower
        scale = scale * t.reshape(scale.shape) * t[p_net.max(0).indices].unsqueeze(0)
    log = scale * p_net.clamp_min(eps).log() + weight * p_forest.clamp_min(eps).log()
    return log.softmax(0)


def confident_labels(probs: np.ndarray, y: np.ndarray, ratio: float, confidence: float, rng, classes=None,
                     exclude: np.ndarray | None = None) -> tuple:
    """Pseudo-labels where the forest is sure: ``(flat indices, scribble values)`` of unlabelled voxels.

    For each class ``c`` (all, or those in ``classes``), at most ``ratio`` times its stroke
    voxels are drawn at random among the unlabelled voxels (``y == 0``) whose forest probability
    of ``c`` is at least ``confidence``; their value is ``c + 1`` (scribble convention). Their
    number follows the strokes', not the scan's size, so they add a bounded share of the loss.

    Args:
        probs: ``(num_classes, *y.shape)`` forest probabilities of the scan.
        y: the round's strokes (scribble convention: 0 unlabelled, ``c + 1`` class ``c``).
        ratio: pseudo-labels per stroke voxel of each class.
        confidence: the least forest probability of the class.
        rng: a ``numpy.random.RandomState``.
        classes: class indices to draw (``None``: every class).
        exclude: voxels never to draw (``y``'s shape; e.g. strokes held out of the round).
    """
    flat = np.asarray(y).reshape(-1)
    free = flat == 0
    if exclude is not None:
        free &= ~np.asarray(exclude, bool).reshape(-1)
    counts = class_counts(flat, probs.shape[0])
    picked, values = [], []
    for c in range(probs.shape[0]) if classes is None else classes:
        n = int(round(ratio * counts[c]))
        if n <= 0:
            continue
        candidates = np.flatnonzero(free & (probs[c].reshape(-1) >= confidence))
        if len(candidates) > n:
            candidates = rng.choice(candidates, n, replace=False)
        picked.append(candidates)
        values.append(np.full(len(candidates), c + 1, flat.dtype))
    if not picked:
        return np.zeros(0, np.int64), np.zeros(0, flat.dtype)
    return np.concatenate(picked), np.concatenate(values)


@dataclass
class StrokeForest:
    """A random forest fitted on the feature vectors of the stroke voxels.

    Args:
        samples: ``(n, N_FEATURES)`` float16 features of the training voxels.
        classes: ``(n,)`` class index (0 = background) of each.
        num_classes: classes of the model it is fused with (background included).
        n_estimators: trees.
        seed: the forest's random state.
        weight: its share of the fused probabilities (the network gets ``1 - weight``).
        trust: per class, how far the network is trusted in the fusion (:func:`fuse`; the
            agreement of the round's network with the strokes); ``None``: fully.

    32 trees: on the three shared scans (k = 3 strokes) 64 trees gave the same forest Dice
    (±0.002) in 1.7-1.9x the prediction time.
    """

    samples: np.ndarray
    classes: np.ndarray
    num_classes: int
    n_estimators: int = 32
    seed: int = 0
    weight: float = 0.5
    fit_seconds: float = 0.0
    trust: np.ndarray | None = None
    _model: object = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, features: np.ndarray, annotations: np.ndarray, num_classes: int, *, max_samples: int = 60_000,
            n_estimators: int = 32, seed: int = 0, weight: float = 0.5) -> StrokeForest:
        """Fit on the labelled voxels of ``annotations`` (scribble convention, corrections merged).

        At most ``max_samples`` voxels are used, drawn evenly over classes (every voxel of a
        class with fewer), so a large background stroke does not drown a small lesion's.
        """
        return cls.fit_many([(features, annotations)], num_classes, 1, max_samples=max_samples,
                            n_estimators=n_estimators, seed=seed, weight=weight)

    @classmethod
    def fit_many(cls, pairs, num_classes: int, n_scans: int, *, max_samples: int = 60_000, n_estimators: int = 32,
                 seed: int = 0, weight: float = 0.5) -> StrokeForest:
        """Fit on the labelled voxels of several scans: ``(features, annotations)`` pairs, read one at a time.

        Each of the ``n_scans`` scans gets an even share of ``max_samples``, drawn evenly over
        the classes it holds; only the samples are kept, not a scan's features.
        """
        rng = np.random.RandomState(seed)
        budget = max(1, max_samples // max(1, n_scans))
        samples, classes = [], []
        for features, strokes in pairs:
            flat = strokes.reshape(-1)
            picked = []
            labelled = [np.flatnonzero(flat == c + 1) for c in range(num_classes)]
            present = [idx for idx in labelled if idx.size]
            share = max(1, budget // max(1, len(present)))
            for idx in present:
                picked.append(idx if idx.size <= share else rng.choice(idx, share, replace=False))
            index = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
            samples.append(features.reshape(features.shape[0], -1)[:, index].T.copy())
            classes.append((flat[index] - 1).astype(np.uint8))
        forest = cls(np.concatenate(samples), np.concatenate(classes), num_classes, n_estimators, seed, weight)
        _ = forest.model  # fit now (before the network's time starts)
        return forest

    @property
    def model(self):
        """The fitted scikit-learn forest (fitted on first use)."""
        if self._model is None:
            from sklearn.ensemble import RandomForestClassifier

            t = time.perf_counter()
            threads = max(1, min(os.cpu_count() or 1, _torch_threads()))
            rf = RandomForestClassifier(n_estimators=self.n_estimators, n_jobs=threads, random_state=self.seed)
            rf.fit(self.samples.astype(np.float32), self.classes)
            self._model = rf
            self.fit_seconds = time.perf_counter() - t
        return self._model

    def probabilities(self, features: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """``(num_classes, *shape)`` float32 class probabilities for ``(N_FEATURES, *shape)`` features."""
        rf = self.model
        shape = features.shape[1:]
        flat = features.reshape(features.shape[0], -1)
        out = np.zeros((self.num_classes, flat.shape[1]), np.float32)
        for s in range(0, flat.shape[1], chunk):
            p = rf.predict_proba(flat[:, s : s + chunk].T.astype(np.float32))
            out[rf.classes_.astype(np.int64), s : s + chunk] = p.T
        return out.reshape((self.num_classes,) + shape)

    def to_arrays(self) -> dict:
        """What ``forest.npz`` holds."""
        out = {"samples": self.samples, "classes": self.classes,
               "settings": np.array([self.num_classes, self.n_estimators, self.seed], np.int64),
               "weight": np.array([self.weight], np.float64)}
        if self.trust is not None:
            out["trust"] = np.asarray(self.trust, np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> StrokeForest:
        """Inverse of :meth:`to_arrays` (the forest is refit on first use)."""
        num_classes, n_estimators, seed = (int(v) for v in arrays["settings"])
        trust = np.asarray(arrays["trust"], np.float64) if "trust" in arrays else None
        return cls(np.asarray(arrays["samples"], np.float16), np.asarray(arrays["classes"], np.uint8), num_classes,
                   n_estimators, seed, float(arrays["weight"][0]), trust=trust)


def _torch_threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return os.cpu_count() or 1
