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


def bfloat16_native(device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively.

    True on CUDA, and on a CPU whose oneDNN has AVX-512 BF16 / AMX (elsewhere bfloat16 is
    emulated and slower than float32).
    """
    import torch

    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bfloat16(precision: str, device) -> bool:
    """Whether the network runs in bfloat16 on ``device`` for the setting ``precision`` (``auto|float32|bfloat16``).

    ``auto`` is bfloat16 where :func:`bfloat16_native` (a CUDA card, a CPU with AVX-512 BF16 /
    AMX), float32 elsewhere.

    Raises:
        ConfigError: ``bfloat16`` asked for on a device that cannot run it (Apple MPS).
    """
    bf16 = precision == "bfloat16" or (precision == "auto" and bfloat16_native(device))
    if bf16 and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision 'bfloat16' is not supported on {device.type}; choose float32 or auto.")
    return bf16


def memory_format(device):
    """The tensor layout the network runs in on ``device``: channels-last 3-D on the CPU, else the default.

    channels-last is oneDNN's native layout for 3-D convolutions; prediction runs in it. (Training
    in it was 1.15-1.30x faster on 2 cores, but its sums depend on the thread count, so training
    stays in the default layout: docs/benchmarks.md, "Layout and optimiser".)
    """
    import torch

    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def adam(parameters, device, **kwargs):
    """``torch.optim.Adam`` over ``parameters``, fused into one kernel where ``device`` has it (CPU, CUDA).

    On 2 CPU cores a small network's update took 4 ms a step one tensor at a time and 1.4 ms
    fused.
    """
    import torch

    return torch.optim.Adam(parameters, fused=True if device.type in ("cpu", "cuda") else None, **kwargs)
