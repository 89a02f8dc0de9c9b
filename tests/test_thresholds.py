"""Threshold crossings on hand-made accuracy curves (exact interpolation, censoring, bootstrap) and
the verdict rules on hand-made thresholds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from interp.pattern_families import PatternFamily
from interp.stats import Estimate, bootstrap_distribution
from interp.thresholds import (
    CROSSED,
    NEVER_CROSSED,
    STARTS_BELOW,
    Threshold,
    censored_interval,
    crossings,
    family_threshold,
)
from interp.tolerance_verdict import LABELS, make_verdict

GRID = np.array([0.0, 0.1, 0.2, 0.3])
FLIP = np.array([0.6, 0.5, 0.4, 0.3])


def test_crossing_is_the_linear_interpolation_between_the_grid_points_around_it():
    m, th, status, j = crossings(np.array([1.0, 1.0, 0.98, 0.5]), FLIP, GRID, 0.99)
    assert status == CROSSED and j == 2
    assert m == pytest.approx(0.45) and th == pytest.approx(0.15)  # half-way: (1 − .99)/(1 − .98)
    # temperature grids interpolate in log τ: the geometric mean half-way
    _, th, _, _ = crossings(np.array([1.0, 0.98]), np.array([0.6, 0.4]), np.array([1.0, 4.0]), 0.99, True)
    assert th == pytest.approx(2.0)
    # the *first* drop counts even if accuracy recovers later
    m, *_ = crossings(np.array([1.0, 0.9, 1.0, 1.0]), FLIP, GRID, 0.95)
    assert m == pytest.approx(0.55)


def test_censored_outcomes_are_infinities_not_nan():
    m, th, status, j = crossings(
        np.array([[1.0, 1.0, 0.995, 0.99], [0.9, 0.8, 0.7, 0.6]]), np.tile(FLIP, (2, 1)), GRID, 0.99
    )
    assert status.tolist() == [NEVER_CROSSED, STARTS_BELOW] and j.tolist() == [-1, 0]
    assert m.tolist() == [-math.inf, math.inf] and th.tolist() == [math.inf, -math.inf]
    _, th, _, _ = crossings(np.array([0.5, 0.4]), np.array([0.6, 0.4]), np.array([1.0, 2.0]), 0.99, True)
    assert th == -math.inf  # log grid: starting below stays −∞, not exp(−∞) = 0
    assert censored_interval(np.array([-math.inf] * 10 + [0.4] * 90), 0.9) == (-math.inf, 0.4)
    assert math.isnan(censored_interval(np.array([math.nan]), 0.9)[0])


def _table(kinds: list[list[float]], copies: list[int], flip=FLIP) -> tuple[np.ndarray, np.ndarray]:
    acc = np.vstack([np.tile(k, (c, 1)) for k, c in zip(kinds, copies)])
    return acc, np.tile(flip, (len(acc), 1))


def test_bootstrap_recomputes_the_crossing_per_resample():
    fam = PatternFamily("uniform", tuple(GRID))
    # 60 sequences stay right, 40 drop to 0.9 at grid point 2: the mean curve 1, 1, 0.96, 0.96
    acc, fm = _table([[1, 1, 1, 1], [1, 1, 0.9, 0.9]], [60, 40])
    t = family_threshold(fam, acc, fm, 0.99, resamples=400, seed=3)
    assert t.status == "crossed" and t.bracket == (0.1, 0.2)
    assert t.flip_mass.mean == pytest.approx(0.5 - 0.1 * 0.01 / 0.04)
    # the CI holds the grid bracket: between grid points 1 and 2 the curve was never observed
    assert (t.flip_mass.ci_low, t.flip_mass.ci_high) == pytest.approx((0.4, 0.5))
    assert (t.parameter.ci_low, t.parameter.ci_high) == pytest.approx((0.1, 0.2))
    assert t.margin.mean == pytest.approx(0.6 - t.flip_mass.mean)
    assert t.shares == {"crossed": 1.0, "never_crossed": 0.0, "starts_below": 0.0}
    again = family_threshold(fam, acc, fm, 0.99, resamples=400, seed=3)
    assert again == t  # same seed, same numbers
    fam, acc, fm = sigmoid_family(np.round(np.arange(0.0, 1.0001, 0.02), 10))  # crossings that vary
    assert (
        family_threshold(fam, acc, fm, 0.9, resamples=100, seed=4).flip_mass
        != family_threshold(fam, acc, fm, 0.9, resamples=100, seed=5).flip_mass
    )


def sigmoid_family(values: np.ndarray, sequences: int = 400, seed: int = 0):
    """A uniform-mixing family whose accuracy falls steeply (logistic in the weight, centre 0.43) and
    whose flip mass falls linearly, 0.6 → 0.1: per-sequence accuracy = mean of 16 Bernoulli positions."""
    rng = np.random.default_rng(seed)
    rate = 1.0 / (1.0 + np.exp((values - 0.43) / 0.01))
    acc = rng.binomial(16, np.tile(rate, (sequences, 1))) / 16
    flip = np.tile(0.6 - 0.5 * values, (sequences, 1))
    return PatternFamily("uniform", tuple(values)), acc, flip


def test_thresholds_are_stable_under_a_five_times_finer_grid():
    """Same sequences (same seed), grid refined 5× to include the old points: each resample's bracket
    lies inside its old one, so the fine interval lies inside the coarse one; the fine estimate, and the
    true crossing (weight 0.43 + 0.01·logit(0.9)... at level 0.9), lie inside both."""
    coarse = np.round(np.arange(0.0, 1.0001, 0.1), 10)
    fine = np.round(np.arange(0.0, 1.0001, 0.02), 10)
    rng_acc = {}
    for name, grid in (("coarse", coarse), ("fine", fine)):
        fam, acc, flip = sigmoid_family(grid, seed=1)
        rng_acc[name] = family_threshold(fam, acc, flip, 0.9, resamples=300, seed=2)
    c, f = rng_acc["coarse"].flip_mass, rng_acc["fine"].flip_mass
    truth = 0.6 - 0.5 * (0.43 + 0.01 * math.log(1 / 9))  # rate(w) = 0.9
    assert c.ci_low <= f.ci_low <= f.mean <= f.ci_high <= c.ci_high
    assert c.ci_low <= truth <= c.ci_high and f.ci_low - 0.01 <= truth <= f.ci_high + 0.01
    assert f.ci_high - f.ci_low < c.ci_high - c.ci_low  # the finer grid is sharper
    # the interpolated points alone (no bracket) exclude the fine grid's estimate: the mutant fails
    fam, acc, flip = sigmoid_family(coarse, seed=1)
    point, reps = bootstrap_distribution(np.hstack([acc, flip]), None, resamples=300, seed=2)
    p = len(fam.values)
    ms_rep = crossings(reps[:, :p], reps[:, p:], np.asarray(fam.values), 0.9)[0]
    low, high = censored_interval(ms_rep, 0.95)
    assert not low <= f.mean <= high


def test_the_temperature_search_starts_at_the_models_own_point():
    """A model worse when sharpened (τ < 1) but fine at τ = 1: the search walks from τ = 1 upwards, so it
    finds the crossing at larger τ instead of 'starting below' at τ = 0.25 with a margin of −∞."""
    fam = PatternFamily("temperature", (0.25, 0.5, 1.0, 2.0, 4.0))
    acc = np.tile([0.5, 0.9, 1.0, 1.0, 0.6], (20, 1))
    flip = np.tile([0.95, 0.8, 0.6, 0.4, 0.2], (20, 1))
    t = family_threshold(fam, acc, flip, 0.99, resamples=20)
    assert t.status == "crossed" and t.bracket == (2.0, 4.0) and math.isfinite(t.margin.mean)
    assert t.tested_flip_mass == pytest.approx((0.2, 0.6))  # the searched part of the curve: τ ≥ 1
    m, _, status, j = crossings(acc[0], flip[0], np.asarray(fam.values), 0.99, True)
    assert status == STARTS_BELOW and j == 0  # the old walk from the grid's start: the −∞ margin


def test_a_curve_that_only_sometimes_crosses_reports_a_censored_bound():
    fam = PatternFamily("uniform", tuple(GRID))
    # 98 good sequences and 2 that fail at the last point: mean 0.99 − a resample may stay ≥ 0.99
    acc, fm = _table([[1, 1, 1, 1], [1, 1, 1, 0.5]], [98, 2])
    t = family_threshold(fam, acc, fm, 0.99, resamples=400, seed=0)
    assert t.status == "never_crossed" and t.flip_mass.mean == -math.inf and t.bracket is None
    assert 0 < t.shares["crossed"] < 1 and t.shares["never_crossed"] == 1 - t.shares["crossed"]
    assert t.flip_mass.ci_low == -math.inf and 0.3 <= t.flip_mass.ci_high < 0.4
    doc = t.to_dict()
    json.dumps(doc, allow_nan=False)  # no NaN or Infinity reaches JSON
    assert doc["flip_mass"]["mean"] is None and doc["flip_mass"]["below_range"]
    assert doc["margin"]["mean"] is None and doc["margin"]["above_range"]
    assert "below the smallest flip mass tested, 0.300" in t.reason


def test_starting_below_and_a_single_point_grid_state_their_reason():
    acc, fm = _table([[0.9, 0.8, 0.7, 0.6]], [5])
    t = family_threshold(PatternFamily("uniform", tuple(GRID)), acc, fm, 0.99, resamples=20)
    assert t.status == "starts_below" and t.flip_mass.mean == math.inf and t.margin.mean == -math.inf
    assert "already at the start" in t.reason
    single = PatternFamily("temperature", (1.0,))
    t = family_threshold(single, np.ones((5, 1)), np.full((5, 1), 0.57), 0.99, resamples=20)
    assert t.status == "single_point" and "one point" in t.reason and "below" in t.reason
    assert t.flip_mass.mean == -math.inf and t.margin.mean == math.inf  # censored, never NaN


def test_threshold_rejects_bad_input():
    fam = PatternFamily("uniform", tuple(GRID))
    with pytest.raises(ValueError, match="sequence, 4 points"):
        family_threshold(fam, np.ones((5, 3)), np.ones((5, 3)), 0.99)
    with pytest.raises(ValueError, match="level"):
        crossings(np.ones(4), FLIP, GRID, 1.5)


# --- the verdict ----------------------------------------------------------------------------------
def E(x: float, half: float = 0.01) -> Estimate:
    return Estimate(x, x - half, x + half)


def threshold(family: str, margin: float, status: str = "crossed", level: float = 0.99) -> Threshold:
    flip = 0.57 - margin
    return Threshold(
        family=family,
        parameter_name="tau" if family == "temperature" else "s",
        level=level,
        statistic="accuracy",
        status=status,
        flip_mass=E(flip),
        parameter=E(1.3),
        margin=E(margin),
        own_flip_mass=0.57,
        tested_flip_mass=(0.2, 0.96),
        bracket=(1.2, 1.4),
        shares={"crossed": 1.0, "never_crossed": 0.0, "starts_below": 0.0},
        reason="" if status == "crossed" else f"{family} reason",
    )


def test_verdict_labels_follow_the_documented_rules():
    acc, own = E(1.0, 0.0), E(0.57)
    right = make_verdict(acc, own, [threshold("uniform", 0.09), threshold("temperature", 0.08)])
    assert right.label == "right" and "smallest margin: temperature" in right.text
    partly = make_verdict(acc, own, [threshold("uniform", 0.09), threshold("single_key+1", 0.03)])
    assert partly.label == "partly right" and "single_key+1 leaves a margin of only 0.030" in partly.text
    strict = make_verdict(acc, E(0.95), [threshold("uniform", 0.02)])
    assert strict.label == "wrong" and "near-strict" in strict.text
    strict_tolerant = make_verdict(acc, E(0.95), [threshold("uniform", 0.3)])
    assert strict_tolerant.label == "right"
    failing = make_verdict(E(0.9), own, [threshold("uniform", 0.09)])
    assert failing.label == "wrong" and "below 99%" in failing.text
    nothing = make_verdict(acc, own, [threshold("temperature", math.inf, status="single_point")])
    assert nothing.label == "undetermined" and "temperature reason" in nothing.text
    assert {v.label for v in (right, partly, strict, nothing)} <= set(LABELS)


def test_verdict_slack_is_a_tenth_of_the_own_flip_mass_and_a_straddling_margin_is_not_resolved():
    acc, own = E(1.0, 0.0), E(0.57)
    borderline = make_verdict(acc, own, [threshold("uniform", 0.06)])  # CI [0.05, 0.07] ∋ 0.057
    assert borderline.label == "partly right" and "not resolved" in borderline.text
    assert "slack 0.057 = 0.1 × the own flip mass 0.570" in borderline.rule
    given = make_verdict(acc, own, [threshold("uniform", 0.06)], slack=0.04)
    assert given.label == "right" and "slack 0.040 (given)" in given.rule
    weak_head = make_verdict(acc, E(0.3), [threshold("uniform", 0.045)])  # slack 0.03: a tenth of 0.3
    assert weak_head.label == "right"


def test_verdict_quotes_numbers_breaking_points_and_untested_families():
    acc, own = E(1.0, 0.0), E(0.57)
    never = threshold("uniform", math.inf, status="never_crossed")
    never = Threshold(**{**vars(never), "flip_mass": Estimate(-math.inf, -math.inf, -math.inf)})
    v = make_verdict(
        acc,
        own,
        [never, threshold("temperature", 0.08), threshold("neighbours", 0.0, status="single_point")],
        breaking=[threshold("temperature", 0.3, level=0.5)],
    )
    assert v.label == "right"
    assert "0.570 [0.560, 0.580]" in v.text and "τ = 1.30" in v.text
    assert "falls below 50% temperature at flip mass 0.270" in v.text
    assert "Not tested: neighbours reason" in v.text and "nowhere in the grid (uniform reason)" in v.text
    assert json.loads(json.dumps(v.to_dict()))["label"] == "right"
    with pytest.raises(ValueError, match="level"):
        make_verdict(acc, own, [threshold("uniform", 0.1, level=0.5)])
