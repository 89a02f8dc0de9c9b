"""Checking arguments, on the command line and in Python, with the same one-line messages.

- argparse types: :func:`path_arg`, :func:`positive_int`, :func:`non_negative_int`, :func:`seed_int`;
  :class:`ArgumentParser` reports a bad flag as one ``error: ...`` line and exit code 2 (no usage
  dump); :func:`check_device` refuses a device torch cannot use before any work is done.
- ``run()`` arguments: :func:`positive_ints`, :func:`non_negative_ints` and :func:`check_confidence`
  raise ``ValueError("<name> must be a positive integer, got <value>")`` and the like, so every
  analysis words a bad argument the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError

MAX_SEED = 2**32 - 1  # numpy's seeds: every generator here accepts 0 .. 2^32 - 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``error: ...`` line (no usage dump) and exits with 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


# --- argparse types -------------------------------------------------------------------------------
def _int_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
    return value


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in 0 .. 2^32 - 1."""
    value = _int_at_least(text, 0, "non-negative")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0, "non-negative")


def check_device(name: str) -> str:
    """The device name if torch can use it, else :class:`UserError` (before any work is done)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device torch knows") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: the analyses run on cpu, cuda[:N] or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return name


# --- run() arguments ------------------------------------------------------------------------------
def _check_ints(values: dict[str, Any], minimum: int, kind: str) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be a {kind} integer, got {value!r}")


def positive_ints(**values: Any) -> None:
    """``ValueError`` naming the first argument that is not an integer ≥ 1 (``True`` is not one)."""
    _check_ints(values, 1, "positive")


def non_negative_ints(**values: Any) -> None:
    """``ValueError`` naming the first argument that is not an integer ≥ 0."""
    _check_ints(values, 0, "non-negative")


def check_confidence(confidence: float) -> None:
    """``ValueError`` unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
