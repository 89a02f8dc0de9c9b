"""``models.load_model``: load a checkpoint, or with no path the cached default model.

It sits above :mod:`models.storage.checkpoints` (which reads files) and
:mod:`models.train.default_model` (which trains the default model on first use, through
:mod:`models.train.cli`, which saves with
:mod:`models.storage.checkpoints`), so that no module imports its own importer.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.encoder.hooked import HookedReverseEncoder


def load_model(
    path: str | os.PathLike | None = None,
    *,
    n_heads: int | None = None,
    device: str = "cpu",
    check_accuracy: bool = True,
    check_length: int | None = None,
) -> HookedReverseEncoder:
    """Load any supported checkpoint as a model in eval mode; ``path`` None: the default model.

    The default model is the tutorial's recipe with seed 0, cached (see :mod:`models.train.default_model`)
    and trained on first use (about 15 s). ``n_heads`` is needed only for Flax files, which do not
    store it (default 1, with a warning saying so); for the other formats it is read from the file,
    and a different explicit value is an error. ``device``: cpu, cuda[:N] or mps, checked first. With
    ``check_accuracy`` the model reverses 256 random sequences once and a warning says so when its
    accuracy is near chance (an untrained model, or a Flax file loaded with the wrong head count), at
    ``check_length`` tokens (the length being analysed; default: the model's recorded length).
    Errors are :class:`models.storage.checkpoints.CheckpointError`, one line naming the file.
    """
    from models.storage import checkpoints

    if path is None:
        from models.train.default_model import ensure_default_model

        path = ensure_default_model(log=lambda message: sys.stderr.write(message + "\n"))
    return checkpoints.load_model(
        path, n_heads=n_heads, device=device, check_accuracy=check_accuracy, check_length=check_length
    )
