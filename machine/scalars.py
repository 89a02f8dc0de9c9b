"""Integer and float arguments from any source: Python, numpy or torch scalars.

A sweep over ``np.arange(...)`` hands out ``np.int64``, a tensor's ``.max()`` a 0-d ``torch.Tensor``, and
``np.float32(0.5)`` is not a Python float; every public function of the toolkit that takes a count, an
index, a seed or a factor accepts them all through :func:`as_int` / :func:`as_float`, and refuses
booleans, fractional "integers" and non-finite factors with one line naming the argument.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np


def _scalar(value: Any) -> Any:
    """A 0-d tensor or numpy array as its Python value; anything else unchanged.

    torch is not imported here (2 s): a value can only be a tensor if its caller imported torch, so
    ``models.train.args`` and the zoo's planner answer ``--help`` and bad input without it."""
    torch = sys.modules.get("torch")
    tensor = torch is not None and isinstance(value, torch.Tensor)
    if (tensor or isinstance(value, np.ndarray)) and value.ndim == 0:
        return value.item()
    return value


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer scalar (Python, numpy or a 0-d integer tensor), not a bool."""
    value = _scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python ``int``, or ``ValueError`` naming ``name`` (bools and floats refused)."""
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    out = int(_scalar(value))
    if minimum is not None and out < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer ≥ {minimum}")
        raise ValueError(f"{name} must be {kind}, got {out}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {out}")
    return out


def as_float(value: Any, name: str, *, finite: bool = True) -> float:
    """``value`` (any real scalar, numpy or torch included) as a Python ``float``, or ``ValueError``."""
    value = _scalar(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out
