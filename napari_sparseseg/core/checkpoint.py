"""Saved models: weights + network config + normalisation + class names + version, one folder.

Layout of a model folder::

    model.json   format version, package version, network, normalisation, classes, patch size
    model.pt     the network's state_dict (loaded with ``weights_only=True``)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_sparseseg import __version__
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
        return self.config.out_channels

    def metadata(self) -> dict:
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
    return ["background"] + [f"structure {i}" for i in range(1, num_classes)]


def save_model(model: SegModel, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder`` atomically (a temporary folder renamed into place).

    Raises:
        OutputError: the parent folder is missing or not writable.
    """
    import torch

    folder = Path(folder)
    parent = folder.parent
    if not parent.is_dir():
        raise OutputError(f"the folder {parent} does not exist; create it first.", path=folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError("a file exists where the model folder should go; choose another path.", path=folder)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {parent} ({exc.strerror}).", path=folder) from exc
    try:
        state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(model.metadata(), indent=2))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise OutputError(f"cannot save the model ({exc.strerror or exc}).", path=folder) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
