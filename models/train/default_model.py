"""The default model: the tutorial's recipe, trained once on first use and cached.

``models.load_model()`` with no path and every command without ``--checkpoint`` use it. It is the
``tutorial`` preset (``python -m models.train --preset tutorial --seed 0``) stopped at the first 100%
validation accuracy, in the run folder :func:`default_model_dir`:
``$REVERSE_ENCODER_INTERP_CACHE/models/tutorial-seed0`` (default ``${XDG_CACHE_HOME:-~/.cache}/
reverse-encoder-interp``). Training is the only step that imports Lightning, and only here. Each use
checks the cached ``model.pt`` against the sha256 recorded when it was written and retrains it, saying
so, when it does not match (bit rot in a cache is repaired, never analysed).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "REVERSE_ENCODER_INTERP_CACHE"
DEFAULT_MODEL_NAME = "tutorial-seed0"


class DefaultModelError(ValueError):
    """The default model's cache folder cannot be used; the message says what to do."""


def cache_dir() -> Path:
    """``$REVERSE_ENCODER_INTERP_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/reverse-encoder-interp``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "reverse-encoder-interp"


def default_model_dir() -> Path:
    """The run folder of the cached default model."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def _cache_problem(run: Path) -> str | None:
    """Why the cached run's model cannot be used as it is, or None when it can: its ``model.pt`` must
    match the sha256 recorded when it was written, and ``metrics.json`` (written last) must parse."""
    from models.storage.integrity import CheckpointError, ChecksumMismatch, verify_recorded

    try:
        if verify_recorded(run / "model.pt") is None:
            return "has no recorded sha256 (written by an older version), so it cannot be verified"
    except ChecksumMismatch as exc:
        return f"is corrupt (sha256 {exc.actual[:12]}..., {exc.expected[:12]}... recorded when written)"
    except CheckpointError as exc:
        return f"cannot be verified ({str(exc).removeprefix(f'{run}/')})"
    try:
        if not isinstance(json.loads((run / "metrics.json").read_text()), dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError):
        return "has an unreadable metrics.json"
    return None


def ensure_default_model(log: Callable[[str], None] | None = None) -> Path:
    """Path of the default model's ``model.pt``, training it on first use (logged through ``log``).

    A run counts as finished when it holds ``model.pt`` and ``metrics.json`` (written last); an
    interrupted run is continued by the trainer. A cached ``model.pt`` that does not match its
    recorded sha256, or has none (an older cache), is retrained from scratch, and ``log`` says so.
    """
    say = log if log is not None else (lambda message: None)
    target = default_model_dir()
    checkpoint = target / "model.pt"
    overwrite = False
    if checkpoint.is_file() and (target / "metrics.json").is_file():
        problem = _cache_problem(target)
        if problem is None:
            return checkpoint
        say(f"the cached default model {checkpoint} {problem}; retraining it (tutorial preset, seed 0)")
        overwrite = True
    else:
        say(f"no cached default model in {target}; training it (tutorial preset, seed 0, stop at 100%)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DefaultModelError(
            f"cannot create the model cache {target.parent}: {e.strerror or e} "
            f"(set {CACHE_ENV} to a writable folder)"
        ) from None
    from models.train.cli import train  # lazy: Lightning is imported only to train

    argv = ["--preset", "tutorial", "--stop-at-perfect", "--seed", "0"]
    if not sys.stdout.isatty():  # a progress bar redrawn into a log file or pipe is only noise
        argv.append("--no-progress-bar")
    if overwrite:
        argv.append("--overwrite")
    run = Path(train([*argv, "--out", str(target.parent), "--name", target.name]))
    if not (run / "model.pt").is_file():
        raise RuntimeError(f"training finished but wrote no model.pt into {run}")
    problem = _cache_problem(run)
    if problem is not None:
        raise DefaultModelError(
            f"the default model just trained into {run} {problem}: is the disk failing? "
            f"(set {CACHE_ENV} to a folder on another disk)"
        )
    return run / "model.pt"
