"""Training dynamics over seeds: the pointer-before-weight crossing order of every run with snapshots.

Each run trained with ``--save-every-log-steps K`` (``python -m models.zoo ... --save-every-log-steps K``)
holds ``snapshots/step_*.pt``. ``analyses.training_dynamics`` — run as a child process, exactly as a user
runs it (an analysis never imports another) — finds, per run, the step at which each progress curve
crosses half its rise and the paired difference of two crossings with its bootstrap CI over evaluation
sequences and a verdict (before / with / after / unresolved / undetermined). The atlas collects two:

- ``argmax_hit_rate − accuracy``: the pointer (the row maximum lands on the flipped key) against accuracy;
- ``flip_mass − accuracy``: the weight (half the flip mass's rise) against accuracy.

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
    """``python -m analyses.training_dynamics --run RUN --out OUT ...`` in a child process, then the
    crossing differences of ``PAIRS`` at half rise from its metrics.json: {"first−second": {difference,
    ci_low, ci_high, verdict}}."""
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
    return crossing_differences(json.loads((out / "metrics.json").read_text()))


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
