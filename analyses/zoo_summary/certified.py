"""Does a higher flip mass buy a tighter proof? The certified bounds of a zoo's runs against their
mechanism scalars (``zoo_summary --certify``).

Per certified run k (1-layer runs; two-layer runs are not certified and not counted) the outcomes are its
certified per-digit lower bound L_k and the gap U_k − L_k (what the budget left undecided: 0 when the
proof or the enumeration resolved every input; differences at the float bounds' last bits count as 0), set
against three scalars of the same run: the best head's flip mass and neighbour mass (means over the
evaluation sequences) and its tolerance margin (own flip mass − the flip mass at which accuracy falls
below 99% under uniform mixing, :func:`analyses.zoo_summary.runs.tolerance_margin`).

The association is Spearman's ρ with a Fisher-z interval inside [−1, 1]
(:func:`interp.rank_correlation.spearman`; n = the runs with both values). It uses only ranks, so a
censored margin keeps its place: "accuracy never below 99% on the grid" (+∞) ranks above every measured
margin, "below 99% already at the model's own pattern" (−∞) below every one, tied among themselves. The
verdict per pair: the interval excludes 0 → "higher … goes with a higher/lower …"; it holds 0 → "no
association resolved"; no interval (n < 4, or a constant side) → says why. It is an association across
runs of one zoo, not an effect of flip mass: runs differ in everything training varies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from interp.rank_correlation import spearman

SCALARS = ("flip_mass", "neighbour_mass", "tolerance_margin")
# Bounds of a resolved run (exact count) differ by their outward float rounding, ~1e-16: a gap that small
# is 0. (One undecided pair among N·C^N is below float64's resolution too, so no real gap is lost.)
RESOLVED_GAP = 1e-12
OUTCOMES = ("certified_lower", "certified_gap")
NAMES = {
    "flip_mass": "flip mass",
    "neighbour_mass": "neighbour mass",
    "tolerance_margin": "tolerance margin",
    "certified_lower": "certified per-digit lower bound",
    "certified_gap": "gap between the certified bounds",
}


def margin_rank_value(margin: dict[str, Any] | None) -> float:
    """A run's tolerance margin as a number that ranks right: the margin, +∞ when accuracy never fell
    below the level on the grid (``never_crossed``), −∞ when it was below already at the model's own
    pattern (``starts_below``); NaN when not measured."""
    if not margin:
        return math.nan
    if margin.get("mean") is not None:
        return float(margin["mean"])
    return {"never_crossed": math.inf, "starts_below": -math.inf}.get(margin.get("status"), math.nan)


def rankable(values: np.ndarray) -> np.ndarray:
    """``values`` with +∞ / −∞ replaced by numbers just above / below every finite value (ranks kept;
    NaN stays NaN)."""
    v = np.asarray(values, dtype=np.float64).copy()
    finite = v[np.isfinite(v)]
    low, high = (finite.min() - 1.0, finite.max() + 1.0) if len(finite) else (-1.0, 1.0)
    v[v == np.inf], v[v == -np.inf] = high, low
    return v


def run_table(runs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per certified run (``RunSummary`` with ``certified_lower`` not None), in ``runs``' order:
    ``name``, the outcomes (``certified_lower``, ``certified_upper``, ``certified_gap``) and the scalars
    (``tolerance_margin`` with ±∞ for censored margins)."""
    rows = [r for r in runs if r.certified and r.certified.get("certified_lower") is not None]
    lower = np.array([r.certified["certified_lower"] for r in rows], dtype=np.float64)
    upper = np.array([r.certified["certified_upper"] for r in rows], dtype=np.float64)
    gap = upper - lower
    gap[gap <= RESOLVED_GAP] = 0.0  # resolved: the bounds differ only by their outward rounding
    return {
        "name": np.array([r.name for r in rows], dtype=object),
        "architecture": np.array([r.architecture for r in rows], dtype=object),
        "certified_lower": lower,
        "certified_upper": upper,
        "certified_gap": gap,
        "flip_mass": np.array([r.value("flip_mass") for r in rows], dtype=np.float64),
        "neighbour_mass": np.array([r.value("neighbour_mass") for r in rows], dtype=np.float64),
        "tolerance_margin": np.array(
            [margin_rank_value(r.certified.get("tolerance_margin")) for r in rows], dtype=np.float64
        ),
    }


def verdict(scalar: str, outcome: str, rho: Any) -> str:
    """One sentence on one (scalar, outcome) pair from its :class:`RankCorrelation`."""
    what = f"{NAMES[scalar]} and {NAMES[outcome]}"
    if not math.isfinite(rho.rho) or not math.isfinite(rho.ci_low):
        return f"{what}: not measurable here ({rho.text()})"
    if rho.ci_low > 0 or rho.ci_high < 0:
        direction = "higher" if rho.rho > 0 else "lower"
        return f"a higher {NAMES[scalar]} goes with a {direction} {NAMES[outcome]} ({rho.text()})"
    return f"{what}: no association resolved, the interval holds 0 ({rho.text()})"


def associations(runs: Sequence[Any], confidence: float) -> list[dict[str, Any]]:
    """Spearman's ρ of every (scalar, outcome) pair over the certified runs, with its verdict:
    ``[{"scalar", "outcome", "rho", "ci_low", "ci_high", "n", "confidence", "note", "text", "verdict"}]``."""
    table = run_table(runs)
    out = []
    for outcome in OUTCOMES:
        for scalar in SCALARS:
            rho = spearman(rankable(table[scalar]), table[outcome], confidence)
            out.append(
                {
                    "scalar": scalar,
                    "outcome": outcome,
                    **rho.to_dict(),
                    "text": rho.text(),
                    "verdict": verdict(scalar, outcome, rho),
                }
            )
    return out


def answer(rows: list[dict[str, Any]], budget: str) -> str:
    """The answer to "does a higher flip mass buy a tighter proof?" from :func:`associations`' rows,
    naming the regime (the per-run budget) and n."""
    by = {(r["scalar"], r["outcome"]): r for r in rows}
    lower, gap = by["flip_mass", "certified_lower"], by["flip_mass", "certified_gap"]
    return (
        f"Across the zoo's certified runs (Spearman ρ, {lower['confidence']:.0%} Fisher-z interval; per-run "
        f"budget {budget}): {lower['verdict']}; {gap['verdict']}. An association across runs, not an effect "
        "of flip mass."
    )
