"""Training dynamics over seeds: the pointer-before-weight crossing order of every run with snapshots.

Each run trained with ``--save-every-log-steps K`` (``python -m models.zoo ... --save-every-log-steps K``)
holds ``snapshots/step_*.pt``. ``analyses.training_dynamics`` — run as a child process, exactly as a user
runs it (an analysis never imports another) — finds, per run, the step at which each progress curve
crosses half its rise and the paired difference of two crossings with its bootstrap CI over evaluation
sequences and a verdict (before / with / after / unresolved / undetermined). The atlas collects two:

- ``argmax_hit_rate − accuracy``: the pointer (the row maximum lands on the flipped key) against accuracy;
- ``flip_mass − accuracy``: the weight (half the flip mass's rise) against accuracy;

and the flip mass at the last snapshot: the weights training ended with, which can differ from the
run's ``model.pt`` (the best checkpoint: the first to reach the best validation accuracy).

Over the seeds of a cell: the mean difference with a t-interval (how a new seed would vary) and the
share of seeds whose own verdict is "before", with a Wilson interval.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError

PAIRS: tuple[tuple[str, str], ...] = (("argmax_hit_rate", "accuracy"), ("flip_mass", "accuracy"))
FRACTION = 0.5


def run_dynamics(
    run_folder: Path, out: Path, num_sequences: int, seed: int, resamples: int
) -> dict[str, Any]:
    """``python -m analyses.training_dynamics --run RUN --out OUT ...`` in a child process, then from its
    metrics.json the crossing differences of ``PAIRS`` at half rise, {"crossings": {"first−second":
    {difference, ci_low, ci_high, verdict}}, "final": :func:`final_flip_mass`}."""
    command = [
        sys.executable, "-m", "analyses.training_dynamics", "--run", str(run_folder), "--out", str(out),
        "--num-sequences", str(num_sequences), "--seed", str(seed),
        "--bootstrap-resamples", str(resamples), "--fractions", str(FRACTION), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode in (130, 143):
        raise KeyboardInterrupt
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        reason = errors[-1] if errors else f"exit code {done.returncode}"
        raise UserError(f"training dynamics of {run_folder}: {reason}")
    document = json.loads((out / "metrics.json").read_text())
    return {"crossings": crossing_differences(document), "final": final_flip_mass(document)}


def final_flip_mass(document: dict[str, Any]) -> dict[str, Any]:
    """Flip mass of the run's flip head at its last snapshot (the weights training ended with, which may
    be later than its model.pt: ``models.train`` keeps the best checkpoint, the first to reach the best
    validation accuracy), from a training_dynamics metrics.json: {"step", "flip_mass"}."""
    head = document["flip_head"]
    last = document["snapshots"][-1]
    row = next(h for h in last["heads"] if (h["layer"], h["head"]) == (head["layer"], head["head"]))
    return {"step": last["step"], "flip_mass": row["flip_mass"]["mean"]}


def crossing_differences(document: dict[str, Any]) -> dict[str, Any]:
    """The ``PAIRS`` comparisons at ``FRACTION`` of a training_dynamics metrics.json."""
    found = {}
    for c in document["comparisons"]:
        if (c["first"], c["second"]) in PAIRS and abs(c["fraction"] - FRACTION) < 1e-9:
            d = c["difference"]
            found[f"{c['first']}−{c['second']}"] = {
                "difference": d["mean"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "verdict": c["verdict"],
            }
    return found
