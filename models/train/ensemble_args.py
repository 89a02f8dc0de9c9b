"""Which runs may train together in one ensemble (``models.train.ensemble``), without importing torch: the
zoo's planner (``models.zoo.plan``) groups runs by :func:`ensemble_key` before anything trains."""

from __future__ import annotations

import json

from models.train.args import TrainArgs, recorded_config

__all__ = ["ensemble_blocker", "ensemble_key"]


def ensemble_blocker(args: TrainArgs) -> str | None:
    """Why the resolved run ``args`` cannot be trained in an ensemble, or None if it can."""
    if args.dropout or args.input_dropout:
        return "dropout"
    if args.max_time is not None:
        return "--max-time"
    if args.strategy != "auto" or args.num_nodes != 1 or str(args.devices) not in ("auto", "1"):
        return "--devices/--strategy/--num-nodes"
    return None


def ensemble_key(args: TrainArgs) -> str:
    """Runs with equal keys differ only in seed and name (and where they are written)."""
    config = recorded_config(args)
    config.pop("seed")
    for field in ("seed", "name", "out", "overwrite", "progress_bar"):
        config["training"].pop(field, None)
    return json.dumps(config, sort_keys=True)
