"""What produced a result: checkpoint, configuration, seed, data size, package versions, command line.

Every metrics.json carries this record as ``provenance`` (and ``reports.build`` one for the whole
report), so a number can always be traced back to the weights and the code that made it.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_VERSIONED_PACKAGES = ("torch", "numpy", "transformer-lens", "matplotlib", "jinja2", "scipy")


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape the numbers (read from metadata, no imports)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("reverse-encoder-interp", *_VERSIONED_PACKAGES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(
    *,
    analysis: str,
    checkpoint: str | Path | None,
    checkpoint_sha256: str | None,
    config: dict[str, Any],
    seed: int,
    num_sequences: int,
    argv: Sequence[str] | None = None,
    from_cli: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """What produced a result: checkpoint (path + sha256; None for an in-memory model), model config,
    seed, data size, package versions, the command line and a UTC timestamp (the only field that
    differs between reruns).

    ``argv`` is the analysis CLI's argument list (None: ``sys.argv[1:]``); pass ``from_cli=False``
    for a result made from Python, whose command is then None.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = (
        shlex.join([Path(sys.executable).name, "-m", f"analyses.{analysis}", *map(str, args)])
        if from_cli
        else None
    )
    return {
        "analysis": analysis,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "config": config,
        "seed": seed,
        "num_sequences": num_sequences,
        **extra,
        "packages": package_versions(),
        "command": command,
        "timestamp": timestamp(),
    }


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601): the only field that differs between reruns."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
