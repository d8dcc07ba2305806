"""Which device a run trains on: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``mps``, checked to
exist before any work starts."""

from __future__ import annotations

import torch


def check_device(name: object) -> torch.device:
    """The ``torch.device`` for ``name``; ValueError naming it when it is not a device or is absent here."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"device must be a name like cpu, cuda, cuda:1 or mps, got {name!r}")
    try:
        device = torch.device(name.strip())
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: no CUDA device on this machine (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r}: MPS is not available on this machine")
        return device
    raise ValueError(f"device {name!r}: only cpu, cuda[:N] and mps are supported")


def describe(device: torch.device) -> str:
    """The device and, for a GPU, its model name (for results and reports)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
