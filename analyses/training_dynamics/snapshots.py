"""The snapshots of a training run: ``RUN/snapshots/step_XXXXXX.pt`` and the run's own ``model.pt``.

``python -m models.train ... --save-every-log-steps K`` writes the encoder at log-spaced steps and at
the step training ended; ``model.pt`` (the best checkpoint) joins them when it holds a step no
snapshot covers.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from analyses.frame.cli import UserError
from models.storage.checkpoints import CheckpointError

_SNAPSHOT = re.compile(r"step_(\d+)\.pt")


def _recorded_step(path: Path) -> int | None:
    """The optimizer step of a run's model.pt (``models.train.cli`` records it as ``metadata["step"]``), or
    None when the file does not say."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__})") from None
    meta = document.get("metadata", {}) if isinstance(document, dict) else {}
    step = meta.get("step") if isinstance(meta, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def find_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every ``snapshots/step_XXXXXX.pt`` of a run folder (the trainer also snapshots
    the step training ended at), plus its ``model.pt`` (the best checkpoint's weights) when that holds
    a step no snapshot covers. Sorted by step; a :class:`UserError` when there is nothing to read."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise UserError(f"--run {run_dir}: is a file, not a run folder (give the folder holding snapshots/)")
    if not run_dir.is_dir():
        raise UserError(f"--run {run_dir}: no such folder")
    folder = run_dir / "snapshots"
    found = (
        {int(m.group(1)): p for p in folder.glob("step_*.pt") if (m := _SNAPSHOT.fullmatch(p.name))}
        if folder.is_dir()
        else {}
    )
    if not found:
        raise UserError(f"--run {run_dir}: no snapshots/step_*.pt (train with --save-every-log-steps K)")
    final = run_dir / "model.pt"
    if final.is_file():
        step = _recorded_step(final)
        if step is not None and step not in found:
            found[step] = final
    if len(found) < 2:
        raise UserError(f"--run {run_dir}: need at least two snapshots, found {len(found)}")
    return sorted(found.items())
