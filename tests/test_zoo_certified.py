"""``analyses.zoo_summary.certified``: the certified bounds of a zoo's runs against their flip mass,
neighbour mass and tolerance margin, on hand-built runs whose ranks are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.zoo_summary.certified import answer, associations, margin_rank_value, rankable, run_table
from analyses.zoo_summary.result import RunSummary
from interp.stats import Estimate


def run(
    k: int, flip: float, neighbour: float, lower: float | None, upper: float | None, margin: dict
) -> RunSummary:
    certified = (
        {"certified_lower": None, "certified_upper": None, "reason": "2 layers"}
        if lower is None
        else {"certified_lower": lower, "certified_upper": upper, "tolerance_margin": margin}
    )
    measured = {
        "flip_mass": Estimate(flip, flip, flip),
        "neighbour_mass": Estimate(neighbour, neighbour, neighbour),
    }
    return RunSummary(
        name=f"run{k}", seed=k, positional_embedding="sinusoidal", n_layers=1, n_heads=1, role="grid",
        measured=measured,
        training={}, best_head=(0, 0), mean_pattern=np.zeros((2, 2)), sha256="", d_vocab=3,
        certified=certified,
    )  # fmt: skip


def crossed(x: float) -> dict:
    return {"mean": x, "status": "crossed"}


def test_censored_margins_rank_beyond_every_measured_one():
    assert margin_rank_value(crossed(0.2)) == 0.2
    assert margin_rank_value({"mean": None, "status": "never_crossed"}) == math.inf
    assert margin_rank_value({"mean": None, "status": "starts_below"}) == -math.inf
    assert math.isnan(margin_rank_value(None))
    v = rankable(np.array([0.3, math.inf, -0.1, -math.inf, math.nan, math.inf]))
    assert v[[0, 2]].tolist() == [0.3, -0.1] and v[1] == v[5] > 0.3 and v[3] < -0.1 and math.isnan(v[4])


def test_rho_and_verdicts_on_runs_whose_ranks_are_known():
    # flip mass orders the lower bounds exactly; neighbour mass reverses them; margins: one censored high
    runs = [
        run(0, 0.30, 0.50, 0.20, 0.90, crossed(-0.05)),
        run(1, 0.40, 0.45, 0.40, 0.80, crossed(0.01)),
        run(2, 0.50, 0.40, 0.60, 0.95, {"mean": None, "status": "never_crossed"}),
        run(3, 0.60, 0.35, 0.80, 0.85, crossed(0.02)),
        run(4, 0.70, 0.30, 0.90, 0.99, crossed(0.03)),
        run(5, 0.20, 0.60, None, None, {}),  # not certified (two layers): not counted
    ]
    table = run_table(runs)
    assert table["name"].tolist() == [f"run{k}" for k in range(5)]
    assert table["certified_gap"] == pytest.approx([0.7, 0.4, 0.35, 0.05, 0.09])
    rows = {(r["scalar"], r["outcome"]): r for r in associations(runs, 0.95)}
    flip = rows["flip_mass", "certified_lower"]
    assert flip["rho"] == pytest.approx(1.0) and flip["n"] == 5 and flip["ci_high"] == 1.0
    assert flip["verdict"].startswith("a higher flip mass goes with a higher certified per-digit lower bound")
    neighbour = rows["neighbour_mass", "certified_lower"]
    assert neighbour["rho"] == pytest.approx(-1.0)
    assert neighbour["verdict"].startswith(
        "a higher neighbour mass goes with a lower certified per-digit lower"
    )
    # margins ranked −0.05 < 0.01 < 0.02 < 0.03 < +∞ against lower bounds ranked 1 2 4 5 3: Σd² = 6
    margin = rows["tolerance_margin", "certified_lower"]
    assert margin["rho"] == pytest.approx(1 - 6 * 6 / (5 * 24))
    assert "no association resolved" in margin["verdict"] and margin["ci_low"] < 0 < margin["ci_high"]
    # gaps 0.7, 0.4, 0.35, 0.05, 0.09 against flip mass ranks 1..5: ranks 5 4 3 1 2, Σd² = 16 + 4 + 0 + 9 + 9
    gap = rows["flip_mass", "certified_gap"]
    assert gap["rho"] == pytest.approx(1 - 6 * 38 / (5 * 24))
    text = answer(list(rows.values()), "2,000 boxes")
    assert text.startswith(
        "Across the zoo's certified runs (Spearman ρ, 95% Fisher-z interval; per-run budget 2,000"
    )
    assert flip["verdict"] in text and gap["verdict"] in text


def test_too_few_runs_say_so():
    runs = [run(k, 0.1 * k, 0.5, 0.5, 0.5, crossed(0.0)) for k in range(3)]
    rows = {(r["scalar"], r["outcome"]): r for r in associations(runs, 0.95)}
    assert rows["flip_mass", "certified_lower"]["note"] == "one side is constant: ρ is undefined"
    assert "not measurable here" in rows["flip_mass", "certified_lower"]["verdict"]
    runs[0].certified["certified_lower"] = 0.4
    row = {(r["scalar"], r["outcome"]): r for r in associations(runs, 0.95)}["flip_mass", "certified_lower"]
    assert row["n"] == 3 and row["ci_low"] is None and row["note"] == "fewer than 4 pairs"
