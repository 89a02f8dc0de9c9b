"""Which torch devices this machine can use, checked before any model is built on one."""

from __future__ import annotations

import torch


def check_device(name: str | torch.device) -> str:
    """``name`` as a device string if torch can use it here, else ``ValueError`` (one line).

    Accepted: ``cpu``, ``cuda[:N]`` (when CUDA and that device exist), ``mps`` (when available).
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(name)!r} is not a device torch knows") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name}: the toolkit runs on cpu, cuda[:N] or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name}: MPS is not available on this machine")
    return str(name)
