"""The finished runs of a zoo folder written by ``python -m models.zoo`` (shared by the zoo analyses).

A run is finished when its folder holds ``model.pt`` and ``metrics.json``. ``zoo.json`` (the zoo's
manifest) lists the grid and each run's role ("grid" or "control"); without one, every run folder
inside (one holding ``config.json``) is used, a run without positional encoding counting as a control.
"""

from __future__ import annotations

import json
from pathlib import Path

from analyses.frame.cli import UserError


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
            listed = [
                (zoo / r["name"], r.get("role", "grid")) for r in json.loads(manifest.read_text())["runs"]
            ]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{manifest}: not a zoo manifest ({type(e).__name__}: {e})") from None
    else:
        listed = []
        for folder in sorted(p for p in zoo.iterdir() if (p / "config.json").is_file()):
            pe = (
                json.loads((folder / "config.json").read_text())
                .get("encoder", {})
                .get("positional_embedding")
            )
            listed.append((folder, "control" if pe == "none" else "grid"))
    done = [(p, role) for p, role in listed if (p / "model.pt").is_file() and (p / "metrics.json").is_file()]
    finished = {p for p, _ in done}
    missing = [p.name for p, _ in listed if p not in finished]
    if not done:
        raise UserError(
            f"zoo folder {zoo}: no finished run (model.pt + metrics.json); train with python -m models.zoo"
        )
    return done, missing
