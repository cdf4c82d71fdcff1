"""Compute device selection."""

from __future__ import annotations

from napari_sparseseg.core.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto"):
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:N``) into an available ``torch.device``.

    Raises:
        DeviceError: unknown name, or the device is not available on this machine.
    """
    import torch

    base = str(name).split(":")[0].lower()
    if base not in DEVICES:
        import difflib

        close = difflib.get_close_matches(base, DEVICES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DeviceError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}.{hint}")
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available here; use --device auto or cpu.")
    if base == "mps" and not mps_ok:
        raise DeviceError("device 'mps' requested but Apple MPS is not available here; use --device auto or cpu.")
    return torch.device(name)
