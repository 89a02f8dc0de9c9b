"""One run of the atlas: what the zoo folder says about it (recipe, architecture, training numbers).

The *recipe* of a run is its ``models.train`` preset plus every recipe field its ``config.json``
records with another value than the preset gives (e.g. ``tutorial (stop_at_perfect=True)``): runs of
one architecture and one recipe that differ only in seed form one *cell* of the phase diagram.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from analyses.frame.zoo import discover

# The fields of a recipe (how a run is trained); the rest of config.json says where and how long it ran.
RECIPE_FIELDS = (
    "lr", "warmup", "batch_size", "epochs", "max_steps", "train_size", "val_check_interval",
    "stop_at_perfect",
)  # fmt: skip
TRAINING_NUMBERS = (
    "test_acc",
    "first_perfect_step",
    "steps",
    "fit_seconds",
    "stop_reason",
    "best_checkpoint",
)


@dataclass(frozen=True)
class RunInfo:
    """A finished run folder and what its files say (no model loaded)."""

    folder: Path
    name: str
    zoo: str
    role: str
    seed: int
    recipe: str
    encoder: dict[str, Any]
    training: dict[str, Any]  # TRAINING_NUMBERS from metrics.json
    snapshots: int  # files in snapshots/ (training dynamics need at least two)

    @property
    def cell(self) -> str:
        """Architecture and recipe: ``"<recipe> · <pe> L<layers> H<heads>[ D<width>]"``."""
        e = self.encoder
        width = "" if e["d_model"] == 32 else f" D{e['d_model']}"
        return f"{self.recipe} · {e['positional_embedding']} L{e['n_layers']} H{e['n_heads']}{width}"


def recipe_label(config: dict[str, Any]) -> str:
    """The preset, with the recipe fields whose recorded value differs from the preset's."""
    from models.train.args import TrainArgs

    preset = str(config.get("preset", "?"))
    recorded = config.get("training", {})
    try:
        defaults = TrainArgs(preset=preset).resolve()
    except ValueError:
        return preset
    changed = [
        f"{k}={recorded[k]}"
        for k in RECIPE_FIELDS
        if k in recorded and recorded[k] is not None and recorded[k] != getattr(defaults, k)
    ]
    return preset + (f" ({', '.join(changed)})" if changed else "")


def read_run(folder: Path, role: str, zoo: Path) -> RunInfo:
    """The :class:`RunInfo` of one finished run folder (a UserError naming a broken file)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        encoder = config["encoder"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"run {folder}: unreadable config.json/metrics.json ({type(e).__name__}: {e})"
        ) from None
    snapshots = folder / "snapshots"
    return RunInfo(
        folder=folder,
        name=folder.name,
        zoo=str(zoo),
        role=role,
        seed=int(config.get("seed", 0)),
        recipe=recipe_label(config),
        encoder=encoder,
        training={k: metrics.get(k) for k in TRAINING_NUMBERS},
        snapshots=len(list(snapshots.glob("step_*.pt"))) if snapshots.is_dir() else 0,
    )


def find_runs(zoos: list[Path]) -> tuple[list[RunInfo], list[str]]:
    """Every finished run of every zoo folder, and the unfinished. A run name found in several zoos
    (e.g. ``tutorial_..._seed0`` of two zoos trained with different flags) is qualified with its zoo
    folder's name, ``<zoo>/<run>``; the zoo folders' names must then differ."""
    if len({Path(z).absolute() for z in zoos}) != len(zoos):
        raise UserError("a zoo folder is given twice: give each zoo once")
    runs, missing = [], []
    for zoo in zoos:
        done, unfinished = discover(zoo)
        missing += [f"{zoo}/{name}" for name in unfinished]
        runs += [read_run(folder, role, zoo) for folder, role in done]
    names = [r.name for r in runs]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        runs = [
            dataclasses.replace(r, name=f"{Path(r.zoo).name}/{r.name}") if r.name in clashes else r
            for r in runs
        ]
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise UserError(f"runs named {sorted(clashes)[0]} in zoo folders of the same name: rename one")
    return runs, missing
