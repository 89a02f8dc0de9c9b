"""The tutorial's reverse-task encoder with TransformerLens hook points, and its checkpoint I/O.

The names below are imported on first use (PEP 562), so ``import models.default_model`` or
``models.config`` stays light (TransformerLens takes seconds to import). Importing this package never
imports Lightning: training lives in ``models.lightning_module``, ``models.datamodule`` and
``models.train``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "models.checkpoints",
    "load_model": "models.loading",
    "save_model": "models.checkpoints",
    "sha256_file": "models.checkpoints",
    "EncoderConfig": "models.config",
    "HookedReverseEncoder": "models.encoder",
}

__all__ = [
    "CheckpointError",
    "EncoderConfig",
    "HookedReverseEncoder",
    "load_model",
    "save_model",
    "sha256_file",
]

if TYPE_CHECKING:
    from models.checkpoints import CheckpointError, save_model, sha256_file
    from models.config import EncoderConfig
    from models.encoder import HookedReverseEncoder
    from models.loading import load_model


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
