"""Crossing order over several training runs (seeds): the median paired difference and its spread.

One run's comparison "crossing of A − crossing of B" has a bootstrap CI over *evaluation sequences*:
it says how precisely that run's order is measured, not how another training seed would order them
(seed 1 of the tutorial's recipe: 55 steps; seed 0: 74). Given several runs (``--run R1 R2 ...``,
each evaluated on the same sequences), per comparison (A, B, fraction f):

- d_r = s*_A − s*_B of each run r (its own point estimate) and its own verdict;
- the median of the d_r with the order-statistic interval [d_(k), d_(n+1−k)]
  (:func:`interp.seed_intervals.median_interval`: distribution-free, its ends are observed
  differences; with n ≤ 5 at 95% it is [min, max] *with its achieved confidence*, 93.75% for n = 5,
  and below 3 runs there is no interval);
- how many runs' own verdicts are before / with / after / unresolved / undetermined.

The seed-to-seed spread is the interval; the runs' own CIs stay in ``per_run``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from analyses.training_dynamics.result import VERDICTS
from interp.seed_intervals import median_interval


def _key(c: Any) -> tuple[str, str, float]:
    return c.first, c.second, round(float(c.fraction), 9)


def across_runs(results: Sequence[Any], confidence: float = 0.95) -> dict[str, Any]:
    """The across-run summary of :class:`~analyses.training_dynamics.result.TrainingDynamicsResult`
    objects (module docstring), as plain data for metrics.json: ``{"runs", "n", "confidence",
    "interval", "comparisons": [{"first", "second", "fraction", "median", "ci_low", "ci_high",
    "achieved_confidence", "reason", "verdicts", "per_run"}]}`` (NaN ends → None)."""
    if len(results) < 2:
        raise ValueError(f"an across-run summary needs at least two runs, got {len(results)}")
    keys = [_key(c) for c in results[0].comparisons]
    rows = []
    for key in keys:
        found = [next((c for c in r.comparisons if _key(c) == key), None) for r in results]
        per_run = [
            None if c is None else {"run": r.run, "difference": c.difference.to_dict(), "verdict": c.verdict}
            for r, c in zip(results, found)
        ]
        diffs = np.array([c.difference.mean if c is not None else math.nan for c in found])
        m = median_interval(diffs, confidence)
        verdicts = {v: sum(c is not None and c.verdict == v for c in found) for v in VERDICTS}
        rows.append(
            {
                "first": key[0],
                "second": key[1],
                "fraction": key[2],
                "median": _none(m.point),
                "ci_low": _none(m.low),
                "ci_high": _none(m.high),
                "achieved_confidence": _none(m.achieved),
                "n": m.n,
                "reason": m.reason,
                "verdicts": verdicts,
                "per_run": per_run,
            }
        )
    return {
        "runs": [r.run for r in results],
        "n": len(results),
        "confidence": confidence,
        "interval": "median over runs of each run's crossing difference, order-statistic interval "
        "(interp.seed_intervals.median_interval; [min, max] with its achieved confidence when n is small)",
        "comparisons": rows,
    }


def _none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
