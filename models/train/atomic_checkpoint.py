"""Lightning checkpoints of a run folder: written atomically and recorded, checked before a resume.

Lightning's own ``TorchCheckpointIO`` serialises a checkpoint in memory and lets fsspec write it to a
temp file under ``$TMPDIR`` that is then *copied* into the run folder: on a full disk the copy stops
half-way and a truncated ``.ckpt`` stays behind. :class:`AtomicCheckpointIO` writes the temp file in
the run folder itself and renames it (:func:`models.storage.integrity.atomic_write`), so a failed or killed
save leaves the previous file, and records each checkpoint's sha256 in ``checkpoints/SHA256SUMS``.

:func:`resume_checkpoint` picks the file a resumed run starts from: ``last.ckpt`` when it is intact
(recorded sha256, or the zip's CRC-32s for a run written before records existed, declared sizes, a
full training state), else the newest intact other checkpoint of the run — the best-on-validation
file, written at a validation just as ``last.ckpt`` is, so training continues from that step exactly
as the uninterrupted run did and loses only the steps since — and when none is intact one line says
to start over with ``--overwrite``. A corrupt ``last.ckpt`` costs some steps, never the run, and never
a traceback on every rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models.storage.integrity import CheckpointError, atomic_write, check_zip, remove, verify_recorded
from models.train.lightning_import import pl

LAST = "last.ckpt"


class AtomicCheckpointIO(pl.plugins.TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic in the target's folder and recorded in its
    ``SHA256SUMS``, and whose removals drop the record first (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda f: torch.save(checkpoint, f), record=True)

    def remove_checkpoint(self, path: Any) -> None:
        remove(path)


def inspect_checkpoint(path: Path) -> tuple[str | None, int | None]:
    """(why ``path`` cannot be resumed from, in words without the path, or None; its global step)."""
    try:
        recorded = verify_recorded(path)
        check_zip(path, crc=recorded is None)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        return str(exc).removeprefix(f"{path}: "), None
    except Exception as exc:  # unpickling errors of a file whose zip is intact
        return f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", None
    if not isinstance(state, dict) or not {"loops", "global_step", "state_dict"} <= set(state):
        return "is not a full Lightning checkpoint (no loop state to resume from)", None
    return None, int(state["global_step"])


def resume_checkpoint(run: Path, say: Callable[[str], None]) -> Path:
    """The checkpoint an interrupted run in ``run`` continues from (see the module docstring);
    ``ValueError`` (one line) when no checkpoint of the run is intact."""
    folder = run / "checkpoints"
    last = folder / LAST
    problem, _ = inspect_checkpoint(last)
    if problem is None:
        return last
    steps = {}
    for path in sorted(folder.glob("*.ckpt")):
        if path.name != LAST and (found := inspect_checkpoint(path))[0] is None:
            steps[path] = found[1]
    if not steps:
        raise ValueError(
            f"{last}: {problem}, and no other checkpoint in {folder} is intact: rerun with --overwrite to "
            "start the run over"
        )
    chosen = max(steps, key=steps.__getitem__)
    say(f"{last}: {problem}; resuming from {chosen.name} (step {steps[chosen]}) instead")
    return chosen
