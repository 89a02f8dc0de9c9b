"""The tutorial's reverse-task encoder with TransformerLens hook points, and its checkpoint I/O.

The names below are imported on first use (PEP 562), so ``import models.train.default_model`` or
``models.encoder.config`` stays light (TransformerLens takes seconds to import). Importing this package never
imports Lightning: training lives in ``models.train.lightning_module``, ``models.train.datamodule`` and
``models.train.cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "models.storage.checkpoints",
    "load_model": "models.loading",
    "save_model": "models.storage.checkpoints",
    "sha256_file": "models.storage.checkpoints",
    "EncoderConfig": "models.encoder.config",
    "HookedReverseEncoder": "models.encoder.hooked",
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
    from models.encoder.config import EncoderConfig
    from models.encoder.hooked import HookedReverseEncoder
    from models.loading import load_model
    from models.storage.checkpoints import CheckpointError, save_model, sha256_file


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
