"""Saved models: weights + network config + normalisation + class names + version, one folder.

Layout of a model folder::

    model.json   format version, package version, network, normalisation, classes, patch size
    model.pt     the network's state_dict (loaded with ``weights_only=True``)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_sparseseg import __version__
from napari_sparseseg.core.atomic import recover_folder, replace_folder
from napari_sparseseg.core.errors import CheckpointError, OutputError
from napari_sparseseg.core.intensity import Normalization
from napari_sparseseg.core.network import NetworkConfig, build_network

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "model.json", "model.pt"


@dataclass
class SegModel:
    """A trained (or training) segmentation model and everything needed to apply it.

    Args:
        network: the torch module (MONAI UNet).
        config: rebuilds ``network``.
        normalization: maps raw intensities to input channels.
        class_names: index 0 is background; ``len == config.out_channels``.
        patch_size: training/inference window in voxels, array order.
        spacing: voxel size (mm) of the training image, array order.
        history: one dict per training round (steps, seconds, loss).
    """

    network: object
    config: NetworkConfig
    normalization: Normalization
    class_names: list
    patch_size: tuple
    spacing: tuple = (1.0, 1.0, 1.0)
    history: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Classes the network predicts, background included."""
        return self.config.out_channels

    def metadata(self) -> dict:
        """The ``model.json`` content: versions, network, normalisation, classes, patch, history."""
        return {
            "format_version": FORMAT_VERSION,
            "package": "napari-sparseseg",
            "package_version": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "network": {"architecture": "monai.networks.nets.UNet", **self.config.to_dict()},
            "normalization": self.normalization.to_dict(),
            "class_names": list(self.class_names),
            "patch_size": list(self.patch_size),
            "spacing": list(self.spacing),
            "history": list(self.history),
        }


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "structure 1", ...]`` for ``num_classes`` classes."""
    return ["background"] + [f"structure {i}" for i in range(1, num_classes)]


MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME})


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
    if not os.path.lexists(folder):
        return folder
    if not folder.is_dir():
        raise OutputError(f"a file exists where the {what} should go; choose another path.", path=folder)
    names = {p.name for p in folder.iterdir()}
    if not names:
        return folder
    others = sorted(names - MODEL_FILES)
    if others or CONFIG_NAME not in names:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise OutputError(
            f"the {what} already holds other files ({shown or 'no model.json'}); give a new or empty folder, "
            "or one written by --model-out (nothing here is deleted).", path=folder)
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("package") != "napari-sparseseg":
        raise OutputError(f"the {what} holds a {CONFIG_NAME} that napari-sparseseg did not write; give a new or "
                          "empty folder (nothing here is deleted).", path=folder)
    return folder


def save_model(model: SegModel, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder``, replacing it in one rename (see :mod:`.atomic`).

    ``folder`` must pass :func:`check_model_folder`: new, empty, or an earlier model of ours.

    Raises:
        OutputError: the folder may not be written (says why), or the write failed (the
            previous model, if any, is then still there).
    """
    import torch

    folder = check_model_folder(folder)
    state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
    meta = json.dumps(model.metadata(), indent=2)

    def build(tmp: Path) -> None:
        torch.save(state, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(meta)

    return replace_folder(folder, build, check=check_model_folder)


def read_tagged_json(path: Path, folder: Path, kind: str, expected_format: int, remedy: str) -> dict:
    """Parse a metadata file (``model.json``, ``session.json``), checking its tag and format.

    Raises:
        CheckpointError: unparsable, not written by this package, or another format version.
    """
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt {kind}: {path.name} cannot be parsed ({exc}).", path=folder) from exc
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


def load_model(folder: str | os.PathLike, device="cpu") -> SegModel:
    """Load a model folder written by :func:`save_model`.

    Raises:
        CheckpointError: missing folder/files, unreadable or corrupt content, or a format
            version this package does not read (names both versions).
    """
    import torch

    folder = Path(folder)
    if not folder.exists():
        recover_folder(folder)  # a save that crashed between its two renames (not on Linux)
    if not folder.is_dir():
        raise CheckpointError("model folder not found; give a folder written by --model-out.", path=folder)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"not a napari-sparseseg model: {p.name} is missing.", path=folder)
    meta = read_tagged_json(cfg_path, folder, "model", FORMAT_VERSION, "use a matching version or retrain")
    try:
        config = NetworkConfig.from_dict(meta["network"])
        normalization = Normalization.from_dict(meta["normalization"])
        class_names = list(meta["class_names"])
        patch_size = tuple(int(p) for p in meta["patch_size"])
        spacing = tuple(float(s) for s in meta.get("spacing", (1, 1, 1)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"corrupt model: {CONFIG_NAME} is incomplete ({exc}).", path=folder) from exc
    if len(class_names) != config.out_channels:
        raise CheckpointError(
            f"corrupt model: {len(class_names)} class names for {config.out_channels} outputs.", path=folder
        )
    network = build_network(config)
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # truncated zip, pickle error, missing/mismatched keys
        raise CheckpointError(f"corrupt model: the weights in {WEIGHTS_NAME} cannot be loaded ({exc}).", path=folder) from exc
    network.to(device).eval()
    return SegModel(network, config, normalization, class_names, patch_size, spacing, list(meta.get("history", [])))
