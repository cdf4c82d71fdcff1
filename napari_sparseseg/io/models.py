"""Model folders on disk: check, save (in one rename) and load a :class:`~napari_sparseseg.core.model.checkpoint.SegModel`.

The folder layout and ``model.json`` content are the model's format
(:mod:`napari_sparseseg.core.model.checkpoint`); here they are written atomically
(:mod:`napari_sparseseg.io.atomic`) and every field read back is checked, so a damaged or
forged folder is refused with a message that names it, and never runs code (weights load with
``weights_only=True``, the forest with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.annotations.labels import MAX_CLASSES
from napari_sparseseg.core.base.config import (
    MAX_FOREST_SAMPLES,
    MAX_FOREST_TREES,
    MAX_IN_CHANNELS,
    MAX_NETWORK_CHANNELS,
    MAX_NETWORK_LEVELS,
    MAX_NETWORK_STRIDE,
    MAX_RES_UNITS,
    check_patch_size,
)
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.errors import CheckpointError, ConfigError, InputError, OutputError, brief
from napari_sparseseg.core.base.grid import validate_spacing
from napari_sparseseg.core.model.checkpoint import (
    CONFIG_NAME,
    FOREST_NAME,
    FORMAT_VERSION,
    MODEL_FILES,
    WEIGHTS_NAME,
    SegModel,
)
from napari_sparseseg.core.model.forest import N_FEATURES, StrokeForest
from napari_sparseseg.core.model.intensity import Normalization
from napari_sparseseg.core.model.network import NORMS, NetworkConfig, build_network
from napari_sparseseg.io.atomic import check_ours, check_written, recover_folder, replace_folder
from napari_sparseseg.io.schema import read_json

__all__ = ["check_model_folder", "load_model", "npy_shapes", "read_tagged_json", "save_model", "save_tensors"]


#: What the binary files of a model folder start with (both are zip archives), checked before one is replaced.
MODEL_MAGIC = {WEIGHTS_NAME: b"PK\x03\x04", FOREST_NAME: b"PK\x03\x04"}


def check_model_folder(folder: str | os.PathLike, what: str = "model folder") -> Path:
    """Check that a model may be written at ``folder`` before any work starts.

    Allowed: a path that does not exist yet (in an existing folder), an empty folder, or a
    folder holding a model of ours and nothing else (it is replaced as a whole). Anything
    else is refused, so writing a model never deletes a file of the user's.

    Raises:
        OutputError: a file is there, the folder holds other files, or the parent is missing.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise OutputError(f"the folder {folder.parent} does not exist; create it first.", path=folder)
    recover_folder(folder)  # a save that crashed between its two renames (not on Linux)
    check_ours(folder, MODEL_FILES, CONFIG_NAME, what, "give a new or empty folder, or one written by --model-out",
               magic=MODEL_MAGIC)
    return folder


def save_model(model: SegModel, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder``, replacing it in one rename (see :mod:`.atomic`).

    ``folder`` must pass :func:`check_model_folder`: new, empty, or an earlier model of ours.

    Raises:
        OutputError: the folder may not be written (says why), or the write failed (the
            previous model, if any, is then still there).

    Examples:
        ```python
        import napari_sparseseg as ss
        result = ss.run_to_end(ss.train(image, scribbles, ss.TrainConfig(time_budget=60), spacing=geom.spacing))
        ss.save_model(result.model, "round1")   # a new or empty folder, or an earlier model of ours
        ```
    """
    folder = check_model_folder(folder)
    state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
    meta = json.dumps(model.metadata(), indent=2)

    def build(tmp: Path) -> None:
        save_tensors(state, tmp / WEIGHTS_NAME, folder)
        if model.forest is not None:
            with open(tmp / FOREST_NAME, "wb") as f:
                np.savez_compressed(f, **model.forest.to_arrays())
        (tmp / CONFIG_NAME).write_text(meta)

    return replace_folder(folder, build, check=check_model_folder)


# Less free space than this after a failed write means the disk is full.
_FULL_BYTES = 1 << 20


def save_tensors(state: dict, path: Path, target: str | os.PathLike | None = None) -> None:
    """``torch.save`` a dict of tensors (weights, a pretrained state) into a folder being built, and read it back.

    torch reports a full disk as a ``RuntimeError`` ("PytorchStreamWriter failed writing file",
    "unexpected pos ..."), which would end the command in a traceback; it becomes an
    :class:`OutputError` saying which file and what to do. The file written is then opened
    again (memory-mapped, ``weights_only``) and must hold every tensor with its shape.

    Args:
        state: name -> tensor.
        path: the file to write (inside the temporary folder of :func:`~napari_sparseseg.io.atomic.replace_folder`).
        target: the folder the user named, for the message (default ``path``'s folder).

    Raises:
        OutputError: the write failed or did not read back (the disk is full, or the folder not writable).
    """
    import torch

    target = Path(target) if target is not None else path.parent
    name = path.name

    def failed(exc: BaseException, what: str) -> OutputError:
        try:
            full = shutil.disk_usage(path.parent).free < _FULL_BYTES
        except OSError:
            full = False
        text = " ".join(str(exc).split())[:160]
        cause = "the disk is full" if full or "No space left" in text else f"{what}: {text}; is the disk full?"
        return OutputError(f"cannot write {name} ({cause}); the previous files, if any, are unchanged. Free some space or "
                           "choose a folder on another disk.", path=target)

    try:
        torch.save(state, path)
    except RuntimeError as exc:
        raise failed(exc, "torch could not write it") from exc
    check_written(path, name, target=target)
    try:
        back = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ok = isinstance(back, dict) and set(back) == set(state) and all(
            tuple(back[k].shape) == tuple(v.shape) for k, v in state.items())
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged zip: the write failed
        raise failed(exc, "it does not read back") from exc
    if not ok:
        raise OutputError(f"cannot write {name} (it does not read back whole; is the disk full?); the previous files, if "
                          "any, are unchanged. Free some space or choose a folder on another disk.", path=target)


def read_tagged_json(path: Path, folder: Path, kind: str, expected_format: int, remedy: str) -> dict:
    """Parse a metadata file (``model.json``, ``session.json``), checking its tag and format.

    Read through :func:`napari_sparseseg.io.schema.read_json` (``MAX_JSON_BYTES``, ``MAX_JSON_DEPTH``).

    Raises:
        CheckpointError: too large, nested too deep, unparsable, not written by this package, or
            another format version.
    """
    try:  # within the size and depth limits of every JSON file read (io/schema.py)
        meta = read_json(path, path.name, error=CheckpointError, at=folder)
    except CheckpointError as exc:
        raise CheckpointError(f"corrupt {kind}: {path.name} cannot be parsed ({exc.message.rstrip('.')}).",
                              path=folder) from None
    if not isinstance(meta, dict) or meta.get("package") != "napari-sparseseg":
        raise CheckpointError(f"not a napari-sparseseg {kind} ({path.name} lacks the package tag).", path=folder)
    fmt = meta.get("format_version")
    if fmt != expected_format:
        raise CheckpointError(
            f"{kind} format {fmt} (saved by napari-sparseseg {meta.get('package_version', '?')}) cannot be read by "
            f"napari-sparseseg {__version__}, which reads format {expected_format}; {remedy}.",
            path=folder,
        )
    return meta


def _corrupt(folder: Path, what: str) -> CheckpointError:
    return CheckpointError(f"corrupt model: {what}", path=folder)


def _is_int(v, low: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _int_list(v, length: int | None = None, low: int = 1) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(x, low) for x in v) and (length is None or len(v) == length)


def _network_config(meta: dict, folder: Path) -> NetworkConfig:
    """The ``network`` entry of ``model.json``, every field checked."""
    net = meta.get("network")
    if not isinstance(net, dict):
        raise _corrupt(folder, f"{CONFIG_NAME} is incomplete (no 'network' entry); save the model again.")
    missing = [k for k in ("in_channels", "out_channels", "channels", "strides") if k not in net]
    if missing:
        raise _corrupt(folder, f"{CONFIG_NAME} is incomplete (the network lacks {', '.join(missing)}); save the model again.")
    arch = net.get("architecture", "monai.networks.nets.UNet")
    if arch != "monai.networks.nets.UNet":
        raise _corrupt(folder, f"{CONFIG_NAME} names the network {brief(arch)}; this version builds monai.networks.nets.UNet only.")
    channels, strides = net["channels"], net["strides"]
    checks = [  # the limits: core/base/config.py
        ("in_channels", _is_int(net["in_channels"]) and net["in_channels"] <= MAX_IN_CHANNELS,
         f"a whole number in 1..{MAX_IN_CHANNELS}"),
        ("out_channels", _is_int(net["out_channels"], 2) and net["out_channels"] <= MAX_CLASSES, f"a whole number in 2..{MAX_CLASSES}"),
        ("channels", _int_list(channels) and 2 <= len(channels) <= MAX_NETWORK_LEVELS
         and max(channels) <= MAX_NETWORK_CHANNELS,
         f"a list of 2..{MAX_NETWORK_LEVELS} whole numbers in 1..{MAX_NETWORK_CHANNELS}"),
        ("strides", _int_list(strides) and max(strides) <= MAX_NETWORK_STRIDE,
         f"a list of whole numbers in 1..{MAX_NETWORK_STRIDE}"),
        ("num_res_units", _is_int(net.get("num_res_units", 2), 0) and net.get("num_res_units", 2) <= MAX_RES_UNITS,
         f"a whole number in 0..{MAX_RES_UNITS}"),
        ("norm", net.get("norm", "none") in NORMS, f"one of {', '.join(NORMS)}"),
    ]
    for key, ok, want in checks:
        if not ok:
            raise _corrupt(folder, f"{CONFIG_NAME} gives network {key} = {brief(net.get(key))}; it must be {want}.")
    if len(net["strides"]) != len(net["channels"]) - 1:
        raise _corrupt(folder, f"{CONFIG_NAME} gives {len(net['channels'])} channel counts but {len(net['strides'])} strides; "
                               "a U-Net needs one stride fewer than channel counts.")
    try:
        return NetworkConfig.from_dict(net)
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(folder, f"{CONFIG_NAME} is incomplete ({exc}).") from exc


def _model_fields(meta: dict, folder: Path) -> tuple:
    """``(config, normalization, class_names, patch_size, spacing, history, intensity_scale)`` from ``model.json``, checked."""
    config = _network_config(meta, folder)
    norm = meta.get("normalization")
    if not isinstance(norm, dict):
        raise _corrupt(folder, f"{CONFIG_NAME} is incomplete (no 'normalization' entry); save the model again.")
    try:
        normalization = Normalization.from_dict(norm)
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(folder, f"{CONFIG_NAME} has an unusable normalisation ({exc}).") from exc
    if normalization.n_channels != config.in_channels:
        raise _corrupt(folder, f"{CONFIG_NAME} contradicts itself: its {normalization.modality} normalisation makes "
                               f"{normalization.n_channels} input channel(s) but the network takes {config.in_channels}.")
    names = meta.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _corrupt(folder, f"{CONFIG_NAME} gives class_names = {brief(names)}; it must be a list of names.")
    if len(names) != config.out_channels:
        raise _corrupt(folder, f"{CONFIG_NAME} contradicts itself: {len(names)} class names for {config.out_channels} "
                               "network outputs.")
    patch = meta.get("patch_size")
    try:
        check_patch_size(patch if isinstance(patch, list) else None, config.divisor)
    except ConfigError as exc:
        raise _corrupt(folder, f"{CONFIG_NAME} gives patch_size = {brief(patch)}; it must be 3 positive whole numbers, "
                               f"multiples of {config.divisor} for this network ({exc.message})") from None
    try:
        spacing = validate_spacing(meta.get("spacing", (1.0, 1.0, 1.0)), what="training voxel spacing")
    except InputError as exc:
        raise _corrupt(folder, f"{CONFIG_NAME}: {exc.message}") from None
    history = meta.get("history", [])
    if not isinstance(history, list):
        raise _corrupt(folder, f"{CONFIG_NAME} gives history = {brief(history)}; it must be a list.")
    scale = meta.get("intensity_scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
                              or scale <= 0):
        raise _corrupt(folder, f"{CONFIG_NAME} gives intensity_scale = {brief(scale)}; it must be a positive number.")
    return config, normalization, list(names), tuple(patch), spacing, list(history), scale


def npy_shapes(path: Path) -> dict[str, tuple]:
    """The shape of every array in a ``.npz`` (or of the one ``.npy``), read from the headers alone.

    Lets a reader refuse an array of a forged size before NumPy allocates it.

    Raises:
        ValueError: not an ``.npz``/``.npy`` NumPy can read (a damaged file).
    """
    import zipfile

    fmt = np.lib.format

    def header(f) -> tuple:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return tuple(int(n) for n in read(f)[0])

    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            f.seek(0)
            return {"": header(f)}
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for name in z.namelist():
                with z.open(name) as f:
                    out[name[:-4] if name.endswith(".npy") else name] = header(f)
            return out
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"not a NumPy archive ({exc})") from exc


def _load_weights(path: Path, folder: Path, config: NetworkConfig):
    """The network ``model.json`` describes with the weights of ``model.pt``, explaining a file that does not fit.

    The weights are checked against the network built on torch's ``meta`` device (no memory)
    before the real one is built, so a forged ``model.json`` describing a huge network is
    refused without allocating it.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, not a torch file
        text = " ".join(str(exc).split())[:200]
        raise _corrupt(folder, f"the weights in {WEIGHTS_NAME} cannot be loaded ({type(exc).__name__}: {text}); "
                               "the file is truncated or damaged: copy the model folder again or retrain.") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _corrupt(folder, f"{WEIGHTS_NAME} does not hold a network's weights (got {type(state).__name__}).")
    with torch.device("meta"):
        expected = build_network(config).state_dict()
    described = f"{CONFIG_NAME} describes a network with {config.in_channels} input channel(s) and {config.out_channels} classes"
    missing, extra = [k for k in expected if k not in state], [k for k in state if k not in expected]
    if missing or extra:
        example = (missing or extra)[0]
        raise _corrupt(folder, f"{described}, but {WEIGHTS_NAME} holds the weights of another network ({len(missing)} "
                               f"missing and {len(extra)} unexpected entries, e.g. {example!r}); the two files do not "
                               "belong together: copy the whole model folder again or retrain.")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise _corrupt(folder, f"{described}, but in {WEIGHTS_NAME} {key!r} has shape {tuple(state[key].shape)} where "
                                   f"that network needs {tuple(tensor.shape)}; the two files do not belong together: "
                                   "copy the whole model folder again or retrain.")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise _corrupt(folder, f"{WEIGHTS_NAME} holds NaN or infinite weights (e.g. {bad[0]!r}); the training that saved "
                               "it diverged: retrain.")
    network = build_network(config)
    try:
        network.load_state_dict(state)
    except Exception as exc:  # dtype or other mismatch the checks above did not see
        raise _corrupt(folder, f"the weights in {WEIGHTS_NAME} cannot be loaded ({exc}).") from exc
    return network


def load_model(folder: str | os.PathLike, device="cpu") -> SegModel:
    """Load a model folder written by :func:`save_model`, checking that its two files agree.

    Args:
        folder: the model folder (``model.json`` + ``model.pt``).
        device: where to put the network (``cpu``, ``cuda``, ``auto``... or a ``torch.device``).

    Raises:
        CheckpointError: missing folder/files; a format version this package does not read
            (names both versions); ``model.json`` unparsable, incomplete or with a field of
            the wrong type (network sizes, class names, patch size not 3 positive multiples of
            the network's divisor, spacing, history); ``model.json`` contradicting itself
            (normalisation channels vs network inputs, class names vs outputs) or ``model.pt``
            (another architecture or shape); ``model.pt`` truncated, not weights, or NaN/inf.
            Every message names the folder and the file.
        DeviceError: ``device`` is unknown or not available.

    Examples:
        ```python
        import napari_sparseseg as ss
        model = ss.load_model("round1")                      # on the CPU
        trainer = ss.Trainer(image, scribbles, init=model)    # warm start: the correction loop
        ```
    """
    folder = Path(folder)
    if not folder.exists():
        recover_folder(folder)  # a save that crashed between its two renames (not on Linux)
    if not folder.is_dir():
        raise CheckpointError("model folder not found; give a folder holding a saved model (model.json and model.pt).",
                              path=folder)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"not a napari-sparseseg model: {p.name} is missing.", path=folder)
    meta = read_tagged_json(cfg_path, folder, "model", FORMAT_VERSION, "use a matching version or retrain")
    config, normalization, class_names, patch_size, spacing, history, scale = _model_fields(meta, folder)
    target = resolve_device(str(device))
    network = _load_weights(w_path, folder, config)
    network.to(target).eval()
    forest = _load_forest(folder, meta, config) if meta.get("forest") else None
    return SegModel(network, config, normalization, class_names, patch_size, spacing, history,
                    None if scale is None else float(scale), forest)


def _load_forest(folder: Path, meta: dict, config: NetworkConfig):
    """The model's :class:`~napari_sparseseg.core.model.forest.StrokeForest` from ``forest.npz`` (refit on first use)."""
    path = folder / FOREST_NAME
    if not path.is_file():
        raise _corrupt(folder, f"{CONFIG_NAME} names a forest but {FOREST_NAME} is missing; retrain, or remove "
                               f"\"forest\" from {CONFIG_NAME} to predict with the network alone.")
    try:
        shapes = npy_shapes(path)
        n = shapes.get("samples", (0,))[0]
        sizes = [int(np.prod(v, dtype=np.int64)) for v in shapes.values()]
        if n > MAX_FOREST_SAMPLES or max(sizes, default=0) > MAX_FOREST_SAMPLES * N_FEATURES:
            raise _corrupt(folder, f"{FOREST_NAME} claims {n} samples (arrays of {shapes}); at most {MAX_FOREST_SAMPLES} "
                                   "are read: retrain.")
        with np.load(path, allow_pickle=False) as z:
            keys = ("samples", "classes", "settings", "weight") + (("trust",) if "trust" in z.files else ())
            arrays = {k: z[k] for k in keys}
        settings = np.asarray(arrays["settings"]).reshape(-1)
        if settings.size != 3 or not (0 < int(settings[1]) <= MAX_FOREST_TREES and 0 <= int(settings[2]) < 2**32
                                      and 0 < int(settings[0]) <= MAX_CLASSES):
            raise _corrupt(folder, f"{FOREST_NAME} gives the forest's settings (classes, trees, seed) = "
                                   f"{settings.tolist()}; at most {MAX_CLASSES} classes and {MAX_FOREST_TREES} trees: "
                                   "retrain.")
        forest = StrokeForest.from_arrays(arrays)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated, not an npz, a key missing
        raise _corrupt(folder, f"{FOREST_NAME} cannot be read ({exc}).") from exc
    ok = (forest.samples.ndim == 2 and forest.samples.shape[1] == N_FEATURES and len(forest.classes) == len(forest.samples)
          and forest.num_classes == config.out_channels and len(forest.classes) > 0
          and int(forest.classes.max()) < config.out_channels and 0 <= forest.weight <= 1
          and bool(np.isfinite(forest.samples).all())
          and (forest.trust is None or (forest.trust.shape == (forest.num_classes,)
                                        and bool(((forest.trust >= 0) & (forest.trust <= 1)).all()))))
    if not ok:
        raise _corrupt(folder, f"{FOREST_NAME} does not fit the network ({forest.samples.shape} samples, "
                               f"{forest.num_classes} classes, weight {forest.weight}); retrain.")
    return forest
