"""Compute device selection."""

from __future__ import annotations

from napari_sparseseg.core.base.config import Device, check_option, option_values
from napari_sparseseg.core.base.errors import ConfigError, DeviceError

DEVICES = option_values(Device)


def resolve_device(name: str = "auto"):
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:N``) into an available ``torch.device``.

    Raises:
        DeviceError: unknown name (with a "did you mean"), or the device is not available here.
    """
    import torch

    try:
        name = check_option(name, Device, "device")
    except ConfigError as exc:
        raise DeviceError(exc.message) from None
    base = name.split(":")[0]
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available here; choose the device auto or cpu.")
    if base == "mps" and not mps_ok:
        raise DeviceError("device 'mps' requested but Apple MPS is not available here; choose the device auto or cpu.")
    return torch.device(name)
