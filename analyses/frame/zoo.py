"""The finished runs of a zoo folder written by ``python -m models.zoo`` (shared by the zoo analyses).

A run is finished when its folder holds ``model.pt`` and ``metrics.json``. ``zoo.json`` (the zoo's
manifest) lists the grid and each run's role ("grid" or "control"); without one, every run folder
inside (one holding ``config.json``) is used, a run without positional encoding counting as a control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from machine.cluster import first_line as cluster_first_line
from machine.names import unique_components


def discover(zoo: str | Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(finished run folders with their role, names of unfinished runs) of a zoo folder."""
    zoo = Path(zoo)
    if zoo.exists() and not zoo.is_dir():
        raise UserError(f"zoo folder {zoo}: is a file, not a folder written by python -m models.zoo")
    if not zoo.is_dir():
        raise UserError(f"zoo folder {zoo}: no such folder")
    manifest = zoo / "zoo.json"
    if manifest.is_file():
        try:
            records = json.loads(manifest.read_text())["runs"]
            names, roles = [r["name"] for r in records], [r.get("role", "grid") for r in records]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{manifest}: not a zoo manifest ({type(e).__name__}: {e})") from None
        try:  # each name becomes zoo / name: one path component, and each run once (n per architecture)
            listed = list(zip([zoo / n for n in unique_components(names, str(manifest))], roles))
        except ValueError as e:
            raise UserError(f"{e}; python -m models.zoo writes each run once, by its folder name") from None
    else:
        listed = []
        for folder in sorted(p for p in zoo.iterdir() if (p / "config.json").is_file()):
            pe = read_object(folder / "config.json").get("encoder", {}).get("positional_embedding")
            listed.append((folder, "control" if pe == "none" else "grid"))
    done = [(p, role) for p, role in listed if (p / "model.pt").is_file() and (p / "metrics.json").is_file()]
    finished = {p for p, _ in done}
    missing = [p.name for p, _ in listed if p not in finished]
    if not done:
        raise UserError(
            f"zoo folder {zoo}: no finished run (model.pt + metrics.json); train with python -m models.zoo"
        )
    return done, missing


def read_object(path: Path) -> dict[str, Any]:
    """A run folder's JSON object (config.json, metrics.json), or a one-line UserError naming the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else cluster_first_line(e)
        raise UserError(f"{path}: unreadable or truncated ({reason}); train the run again") from None
    if not isinstance(document, dict):
        raise UserError(f"{path}: holds a JSON {type(document).__name__}, not the object a run writes")
    return document
