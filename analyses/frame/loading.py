"""How an analysis gets its model: the one door, ``models.load_model``, from the CLI and from Python.

- :func:`resolve_model` (CLI): ``--checkpoint`` — anything ``models.load_model`` reads — or, without
  one, the cached default model (trained on first use, ``models.train.default_model``); a file that cannot be
  read is a :class:`UserError` naming ``--checkpoint``.
- :func:`records_source` (Python): decorates an analysis' ``run(model, ...)`` so that ``model`` may also
  be a checkpoint path (str or Path, loaded with ``models.load_model``) and the result carries a
  provenance record naming the file the weights came from.
- :func:`evaluating`: the model in eval and inference mode for the length of a block.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from analyses.frame.provenance import provenance
from models.train.default_model import ensure_default_model


@dataclass
class ResolvedModel:
    """A model in eval mode and where it came from."""

    model: Any  # models.HookedReverseEncoder
    path: Path
    sha256: str


def resolve_model(
    checkpoint: str | Path | None,
    n_heads: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    seq_len: int | None = None,
) -> ResolvedModel:
    """Load ``checkpoint`` (our ``model.pt`` or run folder, the tutorial's Lightning ``.ckpt``, its Flax
    msgpack) or, when None, the cached default model (training it on first use, logged to ``log``).

    ``n_heads`` only matters for Flax files (which do not store it). The loader's guess of a Flax file's
    head count reaches ``log`` as a ``note:`` line in the command line's words (``--n-heads``); other
    warnings (and that one without a ``log``) are raised again as they were. The quick check that the
    model is trained runs at ``seq_len`` tokens, the length being analysed (None: the model's recorded
    length).
    """
    from models.storage.checkpoints import CheckpointError, load_model

    path = Path(checkpoint).expanduser() if checkpoint is not None else ensure_default_model(log)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_model(path, n_heads=n_heads, device=device, check_length=seq_len)
    except CheckpointError as e:
        raise UserError(f"{'--checkpoint' if checkpoint is not None else 'default model:'} {e}") from None
    for w in caught:  # the head-count guess in the command line's words, as one "note:" line
        text = str(w.message)
        if log is not None and "does not store its head count" in text:
            cli = text.replace("assumed n_heads=1 (pass n_heads= if", "assumed 1 head (pass --n-heads if")
            log(f"note: {cli}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    # The file read (a run folder's model.pt) and its sha256, as load_model noted them: the same
    # provenance whether a result is made here or in Python from load_model.
    return ResolvedModel(model=model.eval(), path=Path(model.checkpoint_path), sha256=model.checkpoint_sha256)


def as_model(model: Any) -> Any:
    """``model`` itself, or the model ``models.load_model`` reads from a checkpoint path."""
    if isinstance(model, str | os.PathLike):
        from models.storage.checkpoints import load_model

        return load_model(model)
    return model


def records_source(analysis: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an analysis' ``run(model, ...)``: ``model`` may be a checkpoint path, and the result gets
    a provenance record naming the checkpoint the model was loaded from (``models.load_model`` notes
    path and sha256 on the model; an in-memory model has neither). A notebook user's
    ``write_outputs(run("runs/fast-seed0"), out)`` then says which weights it measured. The CLI
    replaces this record by its own, which adds the command line."""

    def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(run)
        def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
            model = as_model(model)
            result = run(model, *args, **kwargs)
            result.provenance = provenance(
                analysis=analysis,
                checkpoint=getattr(model, "checkpoint_path", None),
                checkpoint_sha256=getattr(model, "checkpoint_sha256", None),
                config=result.config,
                seed=result.seed,
                num_sequences=result.num_sequences,
                from_cli=False,
            )
            return result

        return wrapper

    return decorate


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """The model in eval mode under ``torch.inference_mode()`` inside the block; its training flag is
    restored afterwards, also when the block raises."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)
