"""The tutorial's reverse-task encoder with TransformerLens hook points, and its checkpoint I/O.

Importing this package never imports Lightning: training lives in ``models.lightning_module``,
``models.datamodule`` and ``models.train``.
"""

from models.checkpoints import CheckpointError, load_model, save_model, sha256_file
from models.config import EncoderConfig
from models.encoder import HookedReverseEncoder

__all__ = [
    "CheckpointError",
    "EncoderConfig",
    "HookedReverseEncoder",
    "load_model",
    "save_model",
    "sha256_file",
]
