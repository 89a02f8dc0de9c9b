"""Which torch devices this machine can use, checked before any model is built on one."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch

# Environment variables that send this process down other kernel paths (docs/reproducibility.md).
KERNEL_OVERRIDES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


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


def kernel_paths() -> dict[str, Any]:
    """What decides the last bits of a float32 result computed here (docs/reproducibility.md): the CPU,
    the vector instructions ATen's own kernels use (``torch.backends.cpu.get_cpu_capability()``), the BLAS
    that computes the matrix products and its version, torch's version, and any environment variable
    of ``KERNEL_OVERRIDES`` that forces another path. Two runs whose records are equal (and whose
    package versions and thread counts are equal) compute the same bits; otherwise they may differ in
    the last bits, and training grows that difference."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.group(1) if blas else None,
        "blas_version": mkl.group(1) if mkl else None,
        "torch": torch.__version__,
        "overrides": {k: os.environ[k] for k in KERNEL_OVERRIDES if k in os.environ},
    }
