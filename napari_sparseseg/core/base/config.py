"""One typed settings source: every job's config dataclass, its defaults, ranges and options.

The command line derives its flags (default, type, help, choices) from these fields, the
widget its controls' bounds and choices, the session file stores :class:`RoundSettings`, and
the benchmarks construct the same classes. A default is written here and nowhere else.

Each field's ``metadata`` describes it (see :func:`setting`): ``help``, the bounds checked in
``__post_init__`` (``ge``/``gt``/``le``/``lt``) and ``choices`` (an option enum, looked up with
a "did you mean" message). How a setting is shown lives beside what shows it: the flag
names and metavars in ``napari_sparseseg/cli/flags.py``, the ranges a GUI control offers
(within the bounds) in ``napari_sparseseg/_qt/ranges.py``. An invalid value raises
:class:`~napari_sparseseg.core.base.errors.ConfigError`, which is also a ``ValueError``.

Importing this module is cheap (no torch, no MONAI): the CLI builds its parser from it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any

from napari_sparseseg.core.base.errors import ConfigError, brief

__all__ = [
    "MAX_BOXES",
    "MAX_CLICKS",
    "MAX_COHORT_SCANS",
    "MAX_FOREST_SAMPLES",
    "MAX_FOREST_TREES",
    "MAX_IN_CHANNELS",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_NETWORK_CHANNELS",
    "MAX_NETWORK_LEVELS",
    "MAX_NETWORK_STRIDE",
    "MAX_PATCH_SIDE",
    "MAX_PATCH_VOXELS",
    "MAX_RES_UNITS",
    "MAX_SCAN_VOXELS",
    "MAX_SECONDS",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_WORLD_MM",
    "BatchConfig",
    "ConfigError",
    "DemoConfig",
    "Device",
    "HintConfig",
    "Inferer",
    "Modality",
    "ModelSize",
    "PredictConfig",
    "Precision",
    "PretrainConfig",
    "Pretext",
    "RemoteConfig",
    "RoundSettings",
    "SuggestConfig",
    "TrainConfig",
    "WeightConfig",
    "check_option",
    "check_patch_size",
    "field_info",
    "option_values",
    "setting",
]


class _Options(str, enum.Enum):
    """String options (a ``StrEnum`` that also runs on Python 3.10)."""

    def __str__(self) -> str:
        return str(self.value)


class Device(_Options):
    """Compute device; ``auto`` picks CUDA, then MPS, then the CPU. ``cuda:N`` is accepted too."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class ModelSize(_Options):
    """Network size of a new model; ``auto`` is small on the CPU and medium on a GPU."""

    AUTO = "auto"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class Inferer(_Options):
    """How prediction covers a volume with the network."""

    TILES = "tiles"
    SLIDING_WINDOW = "sliding_window"


class Precision(_Options):
    """Arithmetic of the network at inference.

    ``auto``: bfloat16 on CUDA and on CPUs with native bfloat16 (AVX-512 BF16 / AMX, where oneDNN
    runs it faster), float32 elsewhere.
    """

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class Modality(_Options):
    """Intensity normalisation; ``auto`` detects CT by its Hounsfield range."""

    AUTO = "auto"
    CT = "ct"
    MRI = "mri"


class Pretext(_Options):
    """Self-supervised task of pretraining: restore a corrupted patch of the scan.

    ``inpaint`` blanks random boxes and shuffles voxels locally (Models Genesis' in-painting and
    local shuffling); ``denoise`` adds strong Gaussian noise.
    """

    INPAINT = "inpaint"
    DENOISE = "denoise"


def option_values(options: type[enum.Enum]) -> tuple[str, ...]:
    """The string values of an option enum, in declaration order."""
    return tuple(str(o.value) for o in options)


def check_option(value: Any, options: type[enum.Enum], what: str) -> str:
    """Return ``value`` as one of ``options``' strings, or raise with a "did you mean".

    Valid values are returned without importing anything; for an invalid one MONAI's
    ``look_up_option`` supplies the suggestion.

    Args:
        value: the user's choice (case is ignored; a device may carry an index, ``cuda:1``).
        options: the option enum (:class:`Device`, :class:`ModelSize`, :class:`Modality`).
        what: the setting's name for the message, e.g. ``"device"``.

    Raises:
        ConfigError: ``"unknown device 'gpu'; use one of auto, cpu, cuda, mps. Did you mean 'cpu'?"``.
    """
    allowed = option_values(options)
    text = str(getattr(value, "value", value)).strip().lower()
    base, _, index = text.partition(":")
    if options is Device and index and base in ("cuda", "mps") and index.isdigit():
        return text
    if text in allowed:
        return text
    hint = ""
    try:
        from monai.utils import look_up_option

        look_up_option(text, allowed)
    except ValueError as exc:  # MONAI's message starts "By 'x', did you mean 'y'?" when it has a guess
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "did you mean" in first:
            hint = " Did you mean " + first.split("did you mean", 1)[1].strip()
    except ImportError:  # pragma: no cover - MONAI is a dependency
        pass
    raise ConfigError(f"unknown {what} {str(value)!r}; use one of {', '.join(allowed)}.{hint}")


# ------------------------------------------------------------------------------------------ limits
# The bounds on every number that decides how much memory or time is spent, in one place. The
# settings below use them, and so does everything read back from a file (a model folder's
# model.json and forest.npz, a session's session.json and arrays: napari_sparseseg/io/models.py
# and io/sessions.py), before anything is allocated: a forged model.json with patch_size
# [4096]*3 asked for a 274 GB window, a forged forest for 10**9 trees. Each is far above what
# napari-sparseseg itself writes.
#: The most voxels of a training or inference patch (256^3; the "large" network trains on 96^3).
MAX_PATCH_VOXELS = 256**3
#: The longest side of a patch, in voxels.
MAX_PATCH_SIDE = 1024
#: The U-Net: most levels (``len(channels)``; "large" has 5), widest level ("large": 320), largest
#: stride, residual units per level (2 in every size) and input channels (a normalisation's, 1 or 2).
MAX_NETWORK_LEVELS, MAX_NETWORK_CHANNELS, MAX_NETWORK_STRIDE, MAX_RES_UNITS, MAX_IN_CHANNELS = 8, 1024, 4, 8, 16
#: The random forest: most trees (32 are fitted) and most stroke voxels it is fitted on and stores.
MAX_FOREST_TREES, MAX_FOREST_SAMPLES = 1024, 2_000_000
#: The most voxels of a scan or a session (2**31: a 512 x 512 x 8192 scan).
MAX_SCAN_VOXELS = 2**31
#: The longest time bound of a round or of pretraining (a week), and the most steps.
MAX_SECONDS, MAX_STEPS = 7 * 24 * 3600.0, 10**9

# Structured files (JSON, CSV) anyone may hand us, read through napari_sparseseg/io/schema.py: the
# size is checked before parsing, the depth after (linear), each list's length before its items.
#: The largest JSON file read (a boxes/clicks file, a batch summary, cohort.json, session.json, model.json).
MAX_JSON_BYTES = 256 * 2**20
#: The deepest nesting of lists and objects in a JSON file (napari-sparseseg writes 6 at most).
MAX_JSON_DEPTH = 64
#: The most characters of a text field (a path, a name, a reason) in a JSON file.
MAX_TEXT_CHARS = 65536
#: The most boxes and clicks in a ``--boxes``/``--clicks`` file or a session (each costs work on the
#: scan: 100,000 boxes ran for minutes; a box per structure, a click per mistake are the uses).
MAX_BOXES, MAX_CLICKS = 1000, 10000
#: The largest world coordinate of a box or click, in mm (10 km: any scanner's field of view is within 1 m).
MAX_WORLD_MM = 1e7
#: The most scans of a cohort: rows of a CSV manifest, records of a batch summary, scans of cohort.json.
MAX_COHORT_SCANS = 100_000
#: The largest CSV manifest read.
MAX_MANIFEST_BYTES = 64 * 2**20


def check_patch_size(patch, divisor: int = 1, what: str = "patch_size") -> tuple[int, int, int]:
    """``patch`` as three whole numbers within :data:`MAX_PATCH_SIDE` and :data:`MAX_PATCH_VOXELS`.

    Args:
        patch: three sides, array order.
        divisor: each side must be a multiple of it (the network's).
        what: the name in the message.

    Raises:
        ConfigError: not three positive whole numbers, not multiples of ``divisor``, or beyond the limits.
    """
    try:
        ps = tuple(patch)
    except TypeError:
        ps = ()
    if len(ps) != 3 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in ps):
        raise ConfigError(f"{what} must be three positive whole numbers, got {brief(patch)}.")
    if any(p % divisor for p in ps):
        raise ConfigError(f"{what} must be multiples of {divisor} for this network, got {list(ps)}.")
    if max(ps) > MAX_PATCH_SIDE or ps[0] * ps[1] * ps[2] > MAX_PATCH_VOXELS:
        raise ConfigError(f"{what} {list(ps)} is beyond the limits (at most {MAX_PATCH_SIDE} voxels a side and "
                          f"{MAX_PATCH_VOXELS} in all).")
    return ps


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, ge: float | None = None,  # noqa: A002
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            choices: type[enum.Enum] | None = None) -> Any:
    """A dataclass field that describes itself (see the module docstring).

    Args:
        default: the default value (the only place it is written).
        help: one line for ``--help`` and tooltips.
        factory: ``default_factory`` instead of ``default``.
        ge: inclusive lower bound (``None`` values are not checked).
        gt: exclusive lower bound.
        le: inclusive upper bound.
        lt: exclusive upper bound.
        choices: an option enum the value must belong to.

    Returns:
        A ``dataclasses.field``.
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    meta = {k: v for k, v in meta.items() if v is not None and v != ""}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _bound_text(meta: dict) -> str:
    parts = [f">= {meta['ge']}" if "ge" in meta else "", f"> {meta['gt']}" if "gt" in meta else "",
             f"<= {meta['le']}" if "le" in meta else "", f"< {meta['lt']}" if "lt" in meta else ""]
    return " and ".join(p for p in parts if p)


def _validate(obj) -> None:
    """Check every field of a config dataclass against its metadata; normalise options and ints."""
    for f in fields(obj):
        meta, value = f.metadata, getattr(obj, f.name)
        if value is None:
            continue
        if "choices" in meta:
            object.__setattr__(obj, f.name, check_option(value, meta["choices"], f.name.replace("_", " ")))
            continue
        bounds = [k for k in ("ge", "gt", "le", "lt") if k in meta]
        if not bounds:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ConfigError(f"{f.name} must be a number {_bound_text(meta)}, got {brief(value)}.")
        v = float(value)
        ok = (("ge" not in meta or v >= meta["ge"]) and ("gt" not in meta or v > meta["gt"])
              and ("le" not in meta or v <= meta["le"]) and ("lt" not in meta or v < meta["lt"]))
        if not ok:
            raise ConfigError(f"{f.name} must be {_bound_text(meta)}, got {value}.")
        if f.type in ("int", "int | None") and float(value) != int(value):
            raise ConfigError(f"{f.name} must be a whole number, got {value}.")
        if f.type in ("int", "int | None"):
            object.__setattr__(obj, f.name, int(value))


def field_info(cls, name: str) -> dataclasses.Field:
    """The dataclass field ``name`` of ``cls`` (its ``default`` and ``metadata``)."""
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def _from_dict(cls, d: dict | None, lenient: bool = False):
    """Build ``cls`` from a dict, ignoring keys it does not know (files from other versions).

    With ``lenient``, a key whose value is invalid is dropped (its default is used) instead of
    raising, so one damaged setting in a saved file does not cost the rest.
    """
    names = {f.name for f in fields(cls)}
    known = {k: v for k, v in dict(d or {}).items() if k in names} if isinstance(d, dict) or d is None else {}
    if not lenient:
        return cls(**known)
    good = {}
    for k, v in known.items():
        try:
            cls(**{**good, k: v})
        except (ValueError, TypeError):
            continue
        good[k] = v
    return cls(**good)


@dataclass(frozen=True)
class WeightConfig:
    """How labelled voxels are weighted in the loss (docs, Design: weight 0 on unlabelled voxels).

    Examples:
        >>> import napari_sparseseg as ss
        >>> cfg = ss.TrainConfig(time_budget=30, weights=ss.WeightConfig(w_correction=5.0))
        >>> cfg.weights.w_scribble, cfg.weights.w_correction
        (1.0, 5.0)
    """

    w_scribble: float = setting(1.0, "weight of a voxel labelled by a scribble", gt=0)
    w_correction: float = setting(3.0, "weight of a voxel labelled by a correction (overrides the scribble)", gt=0)
    w_hint: float = setting(0.3, "weight of a pseudo-label from a box or a click (strokes and corrections override "
                            "it)", gt=0)
    class_balance: bool = setting(True, "multiply by per-class factors so thin strokes of small structures count")
    max_balance: float = setting(50.0, "cap on a class factor, so one stray voxel of a class cannot dominate", ge=1)
    balance_power: float = setting(
        0.5, "1 gives every class equal total weight; 0.5 (square root of the inverse frequency) leaves more "
        "weight with large, varied classes such as background (full balancing over-segmented the CT)", ge=0, le=1)

    def __post_init__(self):
        _validate(self)


@dataclass
class TrainConfig:
    """One training round (``sparseseg segment``, the widget, sessions, benchmarks).

    Training stops at ``max_steps`` or ``time_budget`` seconds, whichever comes first; at
    least one of them must be set. Patches are automatic unless ``patch_size`` is given:
    ``patch_voxels`` (or the model size's budget: 40^3 small, 64^3 medium, 96^3 large) shaped
    after the voxel spacing. The model kept is the moving average of the weights
    (``weight_ema``); a fresh network starts out predicting background with probability
    ``background_prior`` (output-bias initialisation). Runs with the same ``seed`` and
    ``time_budget=None`` are identical on the CPU.

    Examples:
        >>> import napari_sparseseg as ss
        >>> cfg = ss.TrainConfig(time_budget=30, seed=1)
        >>> cfg.max_steps, cfg.weights.w_correction
        (1000, 3.0)
        >>> ss.TrainConfig(time_budget=-1)
        Traceback (most recent call last):
        ...
        napari_sparseseg.core.base.errors.ConfigError: time_budget must be > 0 and <= 604800.0, got -1.
    """

    max_steps: int | None = setting(1000, "training step bound", ge=1, le=MAX_STEPS)
    time_budget: float | None = setting(60.0, "training wall-time bound in seconds (the network's: the forest is fitted "
                                        "before it starts)", gt=0, le=MAX_SECONDS)
    batch_size: int = setting(2, "patches per step", ge=1)
    patch_voxels: int | None = setting(None, "voxel budget of an automatic patch (None: the model size's)", ge=16**3,
                                       le=MAX_PATCH_VOXELS)
    patch_size: tuple | None = setting(None, "explicit patch shape in voxels, array order (None: automatic)")
    learning_rate: float = setting(3e-3, "Adam learning rate", gt=0)
    warmup_steps: int = setting(20, "steps over which a warm-started round ramps its learning rate up from zero "
                                "(Adam restarts with empty moment estimates, and its first full steps made the "
                                "trained network forget: a correction round lowered the abdominal MRI's Dice by "
                                "0.027); 0: none", ge=0)
    keep_previous: float = setting(1.0, "in a correction round (a warm start with corrections), the weight of keeping the "
                                   "previous round's prediction on unlabelled voxels (learning without forgetting; a "
                                   "correction round drifted from what the last round got right: brain-tumour Dice 0.89 "
                                   "-> 0.33-0.48); 0: off", ge=0)
    background_prior: float = setting(0.9, "probability of background a fresh network starts with", gt=0, lt=1)
    weight_ema: float = setting(0.95, "decay of the moving average of the weights (0: the last step's)", ge=0, lt=1)
    seed: int = setting(0, "seeds numpy, torch and MONAI", ge=0, le=2**31 - 1)
    device: str = setting("auto", "compute device", choices=Device)
    precision: str = setting("auto", "the network's arithmetic while training: auto (bfloat16 mixed precision on CUDA and "
                             "on CPUs with native bfloat16, AVX-512 BF16 / AMX: 1.4-1.5x the steps per second of float32 on 2 "
                             "cores, the same Dice; float32 elsewhere), float32 or bfloat16; the weights stay float32",
                             choices=Precision)
    model_size: str = setting("auto", "network size of a new model (auto: small on CPU, medium on GPU)", choices=ModelSize)
    modality: str = setting("auto", "intensity normalisation (auto: detect CT by its HU range)", choices=Modality)
    weights: WeightConfig = setting(help="voxel weighting (scribble/correction weights, class balancing)",
                                    factory=WeightConfig)
    dice_weight: float = setting(0.0, "add this times a soft Dice on labelled voxels to the loss", ge=0)
    holdout_every: int | None = setting(None, "hold out one in this many stroke pieces of each class from the round "
                                        "(rotating with holdout_round) to estimate Dice on them; None: off", ge=2)
    holdout_round: int = setting(0, "which pieces are held out (the round's index)", ge=0)
    augment: bool = setting(True, "random affine + intensity augmentation (MONAI)")
    plateau: bool = setting(True, "end the round once the network has learned the strokes: its averaged weights, "
                            "checked on a fixed probe of stroke patches, reproduce them (mean F1 at least 1 - "
                            "plateau_tolerance) or stop getting closer (core/training/monitor.py); time_budget and "
                            "max_steps stay caps. Off: train to the caps")
    check_every: int | None = setting(None, "steps between plateau checks (None: the weights' moving-average horizon, "
                                      "1 / (1 - weight_ema) steps)", ge=1)
    plateau_tolerance: float = setting(0.01, "the round has learned at a mean agreement with the strokes of 1 - this; "
                                       "smaller rises are no progress", gt=0, lt=1)
    plateau_correction_tolerance: float = setting(0.02, "plateau_tolerance of a correction round (a warm start with "
                                                  "corrections): the keep term holds back the corrections' boundary "
                                                  "voxels, which rose to 0.97-0.98 agreement and stayed, so at 0.01 "
                                                  "every such round waited out the stall rule (200 steps) with its "
                                                  "Dice flat (docs/benchmarks.md, 'Round length')", gt=0, lt=1)
    plateau_patience: int = setting(2, "checks in a row at that agreement before the round ends", ge=1)
    plateau_stall: int = setting(10, "checks without progress after which a round that cannot reach it ends", ge=1)
    forest: bool = setting(True, "also fit a random forest on image filters to the same strokes; prediction fuses it "
                           "with the network (core/model/forest.py)")
    forest_weight: float = setting(0.5, "the forest's share of the fused (log-linear) probabilities", ge=0, le=1)
    forest_pseudo_labels: float = setting(1.0, "background pseudo-labels the network trains on where the forest is "
                                          "sure of background, per background stroke voxel (weight WeightConfig.w_hint; 0: none; "
                                          "core/model/forest.py, confident_labels)", ge=0, le=10)
    forest_pseudo_confidence: float = setting(0.95, "the forest's probability of background above which an unlabelled "
                                              "voxel may become a pseudo-label", gt=0.5, le=1)
    forest_max_samples: int = setting(60_000, "stroke voxels the forest is fitted on at most (even over classes)", ge=100,
                                      le=MAX_FOREST_SAMPLES)
    forest_max_feature_bytes: int = setting(3 * 2**30, "no forest for a scan whose filter features would need more memory",
                                            ge=0)
    working_voxels: int = setting(6_000_000, "a scan with more voxels is learned (network and forest) on whole-number "
                                  "blocks of its voxels, the finest axis coarsened first, until it has at most this many "
                                  "(a 0.7 x 0.7 x 1 mm CT: 2 mm blocks); its mask is still drawn on every voxel "
                                  "(core/model/resolution.py). 0: always the scan's own voxels", ge=0)

    def __post_init__(self):
        _validate(self)
        if self.max_steps is None and self.time_budget is None:
            raise ConfigError("set max_steps, time_budget or both; a round needs a bound.")
        if self.patch_size is not None:
            try:
                ps = tuple(int(p) if not isinstance(p, bool) and float(p).is_integer() else p for p in self.patch_size)
            except (TypeError, ValueError, OverflowError):
                ps = self.patch_size
            self.patch_size = check_patch_size(ps)
        if not isinstance(self.weights, WeightConfig):
            self.weights = WeightConfig(**dict(self.weights))


@dataclass
class PretrainConfig:
    """Self-supervised pretraining on the unlabelled scan (``--pretrain``, the widget, benchmarks).

    The network learns to restore corrupted patches of the scan itself (no labels), so the first
    round starts from features of this scan instead of random ones. ``seconds`` is the total
    pretraining a scan gets: a cached state with fewer seconds is trained further, one with as
    many is used as it is (:mod:`~napari_sparseseg.core.training.pretrain`).
    """

    seconds: float | None = setting(120.0, "pretraining wall time in seconds (total for the scan, cache included)", gt=0,
                                    le=MAX_SECONDS)
    max_steps: int | None = setting(None, "pretraining step bound (None: the time alone)", ge=1, le=MAX_STEPS)
    task: str = setting("inpaint", "pretext task", choices=Pretext)
    batch_size: int = setting(2, "patches per step", ge=1)
    learning_rate: float = setting(1e-3, "Adam learning rate", gt=0)
    seed: int = setting(0, "seeds the patches and corruptions", ge=0, le=2**31 - 1)
    device: str = setting("auto", "compute device", choices=Device)
    model_size: str = setting("auto", "network size (auto: small on CPU, medium on GPU)", choices=ModelSize)
    modality: str = setting("auto", "intensity normalisation (auto: detect CT by its HU range)", choices=Modality)

    def __post_init__(self):
        _validate(self)
        if self.max_steps is None and self.seconds is None:
            raise ConfigError("set seconds, max_steps or both; pretraining needs a bound.")


@dataclass
class PredictConfig:
    """Inference settings (``segment``, ``predict``, the widget, sessions, benchmarks).

    ``stroke_regions_only``: when the strokes are known, drop each connected region of a class
    that contains none of that class's strokes
    (:func:`~napari_sparseseg.core.inference.postprocess.keep_stroke_regions`); only the mask changes.

    Examples:
        >>> import napari_sparseseg as ss
        >>> cfg = ss.PredictConfig(refine=False, probabilities=True)  # the network's own outlines, and p * 255
        >>> cfg.stroke_regions_only
        True
    """

    device: str = setting("auto", "compute device", choices=Device)
    inferer: str = setting("sliding_window", "how the network covers the volume: 'sliding_window' (MONAI's Gaussian-"
                           "blended patch-sized windows, the same numbers as over the whole volume at once, streamed so "
                           "memory does not grow with the volume) or 'tiles' (large tiles with a halo of context, no "
                           "overlap; the masks differ more from the windows', see benchmarks/speed.py)",
                           choices=Inferer)
    tile_voxels: int = setting(2_400_000, "voxels of an inference tile's core (its shape follows the voxel spacing)",
                               ge=8**3)
    halo: int = setting(8, "voxels of context around each tile (cropped away after the network)", ge=0)
    overlap: float = setting(0.25, "overlap of the sliding windows (inferer 'sliding_window')", ge=0, lt=1)
    sw_batch_size: int = setting(4, "windows per forward pass (sliding_window; on 2 CPU cores 4 runs 1.1-1.5x the "
                                 "windows per second of 2, and 4x those of 1)", ge=1)
    precision: str = setting("auto", "the network's arithmetic: auto (bfloat16 on CUDA and on CPUs with native "
                             "bfloat16, float32 elsewhere; masks agree to Dice 0.99+), float32 (MONAI's numbers exactly) or bfloat16",
                             choices=Precision)
    probabilities: bool = setting(False, "also return per-class probabilities (uint8, p x 255)")
    uncertainty: bool = setting(True, "also return the normalised entropy (float16, 0 certain .. 1 uniform)")
    slab_voxels: int = setting(8_000_000, "voxels per slab before margins (at least twice the CRF's reach in rows); "
                               "bounds memory", ge=1)
    stroke_regions_only: bool = setting(True, "keep only predicted regions that touch a stroke of their class")
    refine: bool = setting(True, "refine the outlines with a dense CRF on the image's edges (core/inference/refine.py)")
    refine_weight: float = setting(15.0, "strength of the CRF's pairwise term against the network's log-probabilities",
                                   ge=0)
    refine_iterations: int = setting(10, "mean-field iterations of the CRF", ge=1, le=100)
    refine_radius_mm: float = setting(3.5, "reach of the CRF's neighbourhood in mm (at most 4 voxels a direction)", gt=0)
    forest: bool = setting(TrainConfig.forest, "fuse the model's random forest (if it has one) with the network "
                           "(core/model/forest.py)")
    forest_max_feature_bytes: int = setting(TrainConfig.forest_max_feature_bytes, "keep a scan's filter features up to "
                                            "this size (else they are computed per slab)", ge=0)
    working_voxels: int = setting(TrainConfig.working_voxels, "a scan with more voxels is predicted on whole-number "
                                  "blocks of its voxels (as it was trained, core/model/resolution.py), the probabilities "
                                  "interpolated back and the CRF, mask and uncertainty made on every voxel", ge=0)

    def __post_init__(self):
        _validate(self)


@dataclass
class RoundSettings:
    """What the user sets for the interactive rounds: the widget's controls and the session file.

    Defaults come from :class:`TrainConfig` and :class:`PredictConfig`. Interactive rounds are
    bounded by time (``max_steps`` None); Live mode retrains ``live_seconds`` after a stroke.

    Examples:
        ```python
        import napari_sparseseg as ss
        settings = ss.RoundSettings(time_budget=20, refine=False)
        session = ss.Session(image, scribbles, settings=settings)
        ```
    """

    device: str = setting(TrainConfig.device, "compute device", choices=Device)
    model_size: str = setting(TrainConfig.model_size, "network size of a new model", choices=ModelSize)
    time_budget: float = setting(TrainConfig.time_budget, "training time per round at most", gt=0, le=MAX_SECONDS)
    plateau: bool = setting(TrainConfig.plateau, "end a round as soon as the network has learned the strokes (the time "
                            "per round is then a cap)")
    seed: int = setting(TrainConfig.seed, "seed of the first round (round n uses seed + n)", ge=0, le=2**31 - 1)
    stroke_regions_only: bool = setting(PredictConfig.stroke_regions_only, "keep only regions touching a stroke")
    refine: bool = setting(PredictConfig.refine, "refine the outlines along the image's edges (dense CRF)")
    forest: bool = setting(TrainConfig.forest, "fuse a random forest on image filters, fitted to the same strokes, "
                           "with the network")
    pretrain: bool = setting(False, "pretrain on the scan itself while you paint (self-supervised, cached per scan); "
                             "the first round starts from it (off: it did not pay on the benchmark cases)")
    pretrain_seconds: float = setting(PretrainConfig.seconds, "pretraining time per scan, in all", gt=0, le=MAX_SECONDS)
    fill_between: bool = setting(False, "interpolate a structure outlined on two or more parallel slices between them "
                                 "(ITK's morphological contour interpolation, as Slicer's Fill between slices) into "
                                 "low-weight pseudo-labels")
    estimate: bool = setting(False, "hold out a fifth of the stroke pieces of each class each round (rotating) and "
                             "show the Dice on them: an estimate on your own strokes")
    live: bool = setting(False, "retrain for a few seconds after every finished stroke")
    live_seconds: float = setting(5.0, "training seconds of a Live round", gt=0, le=MAX_SECONDS)
    max_steps: int | None = setting(None, "step bound of a round (None: the time budget alone)", ge=1, le=MAX_STEPS)

    def __post_init__(self):
        _validate(self)

    def train_config(self, round_index: int = 0, time_budget: float | None = None) -> TrainConfig:
        """The :class:`TrainConfig` of round ``round_index`` (0-based).

        Args:
            round_index: rounds done so far; round n trains with ``seed + n``.
            time_budget: this round's seconds instead of :attr:`time_budget` (a Live round
                passes :attr:`live_seconds`).
        """
        return TrainConfig(max_steps=self.max_steps, time_budget=time_budget or self.time_budget, plateau=self.plateau,
                           seed=self.seed + round_index, device=self.device, model_size=self.model_size,
                           forest=self.forest, holdout_every=5 if self.estimate else None, holdout_round=round_index)

    def pretrain_config(self) -> PretrainConfig:
        """The :class:`PretrainConfig` of background pretraining (the first round's device and size)."""
        return PretrainConfig(seconds=self.pretrain_seconds, seed=self.seed, device=self.device, model_size=self.model_size)

    def predict_config(self) -> PredictConfig:
        """The :class:`PredictConfig` of a round: uncertainty on, for the viewer."""
        return PredictConfig(device=self.device, uncertainty=True, stroke_regions_only=self.stroke_regions_only,
                             refine=self.refine, forest=self.forest)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (stored in ``session.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, lenient: bool = False) -> RoundSettings:
        """From a stored dict; unknown keys (other versions) are ignored.

        Args:
            d: the stored settings.
            lenient: use the default for a key whose stored value is invalid instead of raising.

        Raises:
            ConfigError: a known key holds an invalid value (unless ``lenient``).
        """
        return _from_dict(cls, d, lenient)


@dataclass
class DemoConfig:
    """``sparseseg demo``: the whole loop on the bundled sample, headless."""

    rounds: int = setting(2, "training rounds: 1 + correction rounds", ge=1)
    time_budget: float = setting(TrainConfig.time_budget, "training seconds per round", gt=0)
    device: str = setting(TrainConfig.device, "compute device", choices=Device)
    seed: int = setting(TrainConfig.seed, "seed of the simulated annotator and the training", ge=0)

    def __post_init__(self):
        _validate(self)


@dataclass
class HintConfig:
    """How boxes and clicks become pseudo-labels (:mod:`~napari_sparseseg.core.annotations.hints`).

    A box of class c: an ellipsoid inscribed in it, scaled by ``box_core``, is likely c; the
    rest of the box is left unlabelled (uncertain); a band of ``box_band_mm`` just outside the
    box, where no other box lies, is background. A click: the voxels within ``click_radius_mm``
    connected to it through similar intensity (within ``click_tolerance`` local standard
    deviations, at least 2 % of the scan's range) get its class (0 = background, an "outside"
    click). Pseudo-labels weigh ``WeightConfig.w_hint``.
    """

    box_core: float = setting(0.6, "share of a box's half-sides the likely core (an inscribed ellipsoid) spans", gt=0,
                              le=1)
    box_band_mm: float = setting(5.0, "band just outside a box labelled background (where no other box lies)", ge=0)
    box_retire_mm: float = setting(10.0, "a box's core is dropped this far around a stroke of another class inside it "
                                   "(the whole core once its own class is painted in two orientations)", ge=0)
    click_radius_mm: float = setting(6.0, "reach of a click's blob", gt=0)
    click_tolerance: float = setting(3.0, "intensity tolerance of a click's blob, in local standard deviations", gt=0)

    def __post_init__(self):
        _validate(self)


@dataclass
class SuggestConfig:
    """Where to paint next (:func:`~napari_sparseseg.core.annotations.guide.suggest_slices`).

    Each voxel within ``band_mm`` of a predicted structure counts its uncertainty (normalised
    entropy) as a share of that structure's volume (an error costs Dice in inverse proportion to
    the structure's size), less near the strokes already drawn; a slice is worth what lies
    within about ``reach_mm`` of its plane. Slices are picked greedily, each pick discounting its
    neighbourhood like a stroke would, the first three in the three orientations.
    """

    count: int = setting(5, "slices to suggest", ge=1, le=100)
    band_mm: float = setting(2.0, "margin around the predicted structures whose uncertainty counts", ge=0)
    reach_mm: float = setting(10.0, "how far a stroke informs the next round: a voxel this far from every stroke (and "
                              "from every suggested slice) counts 63 % of its uncertainty, rising to all of it "
                              "further away; a slice gathers uncertainty from about this far on either side", gt=0)
    orthogonal: bool = setting(True, "the first three suggestions take the three orientations (a stroke in one plane "
                               "says little about a structure's extent across it)")

    def __post_init__(self):
        _validate(self)


@dataclass
class BatchConfig:
    """``sparseseg batch`` and the Cohort widget: one model over many scans, on Dask.

    ``workers`` ``None`` sizes a local cluster to the machine (:func:`local_workers`);
    ``threads`` ``None`` gives each worker its host's cores divided by the workers there, so
    workers never oversubscribe the cores. A scan with strokes is first fine-tuned from the
    shared model for ``fine_tune_seconds`` (warm start), then predicted.
    """

    workers: int | None = setting(None, "Dask workers of the local cluster (default: sized to the machine)", ge=1)
    threads: int | None = setting(None, "torch threads per worker (default: the host's cores / its workers)", ge=1)
    device: str = setting(PredictConfig.device, "compute device of each worker", choices=Device)
    probabilities: bool = setting(False, "also write each scan's class probabilities (uint8, p x 255)")
    dicom_seg: bool = setting(False, "also write NAME_mask.dcm, a DICOM SEG of its series, for each scan that is a DICOM "
                              "series folder (NAME_probabilities.dcm too with probabilities; needs the dicom extra)")
    overwrite: bool = setting(False, "re-run scans whose outputs exist and replace them (default: keep done scans, "
                              "refuse to replace anything else)")
    fine_tune_seconds: float = setting(30.0, "training seconds of a per-scan fine-tune from that scan's strokes", gt=0)
    seed: int = setting(TrainConfig.seed, "seed of the per-scan fine-tunes", ge=0, le=2**31 - 1)
    refine: bool = setting(PredictConfig.refine, "refine the outlines with the dense CRF")
    precision: str = setting(PredictConfig.precision, "the network's arithmetic (fine-tuning and inference)",
                             choices=Precision)
    forest: bool = setting(PredictConfig.forest, "fuse the model's forest (if it has one)")
    retries: int = setting(1, "times a scan is retried after an unexpected error or a lost worker", ge=0, le=10)
    connect_timeout: float = setting(10.0, "seconds to wait for a --scheduler to answer as a Dask scheduler and have a "
                                     "worker (a server that accepts the connection but never answers included)", gt=0,
                                     le=3600)
    worker_memory_gib: float = setting(6.0, "memory a local worker is given (bounds the workers sized to the machine)",
                                       gt=0)

    def __post_init__(self):
        _validate(self)


@dataclass
class RemoteConfig:
    """Rounds on a Dask cluster (``segment --scheduler``, the widget's "Train on a Dask cluster").

    A round (training, prediction, refinement, uncertainty, suggestions) runs as a task on a
    worker of the scheduler at ``scheduler``; on a worker offering the ``GPU`` resource when
    the device is ``auto`` or a GPU (``napari_sparseseg/remote/``, docs: Remote rounds). The
    scan is sent once and kept on that worker; each round sends the strokes and the model and
    brings back the model, the mask and the uncertainty. ``None`` (the default) trains here.
    The certificate files are paths to PEM files, read by Dask when connecting.
    """

    scheduler: str | None = setting(None, "a Dask scheduler (tls://HOST:PORT, or tcp://) whose worker runs each round "
                                    "(default: this computer)")
    tls_ca: str | None = setting(None, "the CA certificate (PEM) that signed the cluster's certificates (tls://)")
    tls_cert: str | None = setting(None, "this computer's certificate (PEM), signed by that CA (tls://)")
    tls_key: str | None = setting(None, "the private key (PEM) of that certificate (tls://)")
    connect_timeout: float = setting(10.0, "seconds to wait for the scheduler to answer and have a worker", gt=0,
                                     le=MAX_SECONDS)
    silence_timeout: float = setting(60.0, "seconds without word from the worker (it reports every 2 s while a round "
                                     "runs) or from the scheduler before a round is given up", gt=0, le=MAX_SECONDS)

    def __post_init__(self):
        _validate(self)
        for name in ("scheduler", "tls_ca", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be text, got {type(value).__name__}.")
            if isinstance(value, str):
                object.__setattr__(self, name, value.strip() or None)
