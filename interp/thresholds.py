"""The flip mass at which accuracy falls below a level along a pattern family, with bootstrap CIs.

A family's grid p = 0..P−1 (in degradation order: parameter increasing) gives an accuracy curve
a_p and a flip-mass curve m_p (means over sequences). The *threshold* at level L (e.g. 0.99) is the
flip mass where the curve first leaves {a ≥ L}, walking from the model's own point (s = 0, τ = 1;
temperatures below 1 sharpen the map and are shown on the curve but not searched):

    j  = min {p : a_p < L}
    t  = (a_{j−1} − L) / (a_{j−1} − a_j)
    m* = m_{j−1} + t · (m_j − m_{j−1})            (linear interpolation between the two grid points)
    θ* = θ_{j−1} + t · (θ_j − θ_{j−1})            (the family parameter there; in log θ for temperature)

"The smallest flip mass at which accuracy stays ≥ L" along the family. Two outcomes have no crossing
inside the grid, and are kept as censored values instead of NaN:

- ``never_crossed``: a_p ≥ L at every grid point; the threshold lies below the smallest flip mass
  tested, coded m* = −∞ (θ* = +∞);
- ``starts_below``: a < L already at the model's own point; the threshold lies above the largest flip
  mass tested (m* = +∞, θ* = −∞);
- a family with a single grid point (its identity point) cannot locate a crossing at all: status
  ``single_point``, censored on the side its one accuracy value says.

Bootstrap. One resample of sequences (counts c, :func:`interp.stats.resample_counts`) gives a whole
resampled accuracy curve and flip-mass curve; the crossing is recomputed on that curve (its own j, its
own interpolation), so the CI covers both where the curve crosses and which grid interval it crosses
in. Censored replicates are kept as ±∞ and the interval is read from order statistics
(``np.quantile(method="inverted_cdf")``), so a bound that falls in a censored tail is reported as
"below / above the tested range" rather than as a number. The margin is the model's own flip mass
(the family's identity point) minus the threshold, per resample.

The grid's own error is in the interval. Between two grid points the curve is not observed, so the
linear interpolation is one guess inside the *bracket* [m_{j−1}, m_j] (and [θ_{j−1}, θ_j]): wherever the
resampled curve really crosses, it crosses there (if accuracy falls monotonically between the two grid
points). So the CI is read from the brackets, not from the interpolated points (:func:`brackets`):

    low  = quantile_{α/2}   of min(m_{j−1}, m_j) over resamples,
    high = quantile_{1−α/2} of max(m_{j−1}, m_j) over resamples,

which holds both the sampling error and the search's own; the point estimate stays the interpolation.
On a grid refined to include the old points, every resample's bracket lies inside its old one, so the
new interval lies inside the old: a 5× finer grid cannot move the threshold out of the interval
(``tests/test_thresholds.py`` checks it, and that the interpolated-only interval fails it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp.pattern_families import PatternFamily
from interp.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Estimate, bootstrap_distribution

CROSSED, NEVER_CROSSED, STARTS_BELOW = 0, 1, 2
STATUS_NAMES = {CROSSED: "crossed", NEVER_CROSSED: "never_crossed", STARTS_BELOW: "starts_below"}


def crossings(
    accuracy: np.ndarray,
    flip: np.ndarray,
    parameter: np.ndarray,
    level: float,
    log_parameter: bool = False,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(m*, θ*, status, j) for every curve of ``accuracy`` / ``flip`` ``[..., point]`` (see the module
    docstring); ``parameter`` is the grid ``[point]``. The walk starts at grid point ``start`` (the
    model's own point: points before it, e.g. sharper temperatures, are not degradations and are not
    searched); j is the first grid point from there below L (−1 if none), status ``starts_below`` when
    point ``start`` itself is."""
    acc = np.asarray(accuracy, dtype=np.float64)
    fm = np.asarray(flip, dtype=np.float64)
    theta = np.log(parameter) if log_parameter else np.asarray(parameter, dtype=np.float64)
    if acc.shape != fm.shape or acc.shape[-1] != len(theta) or len(theta) < 1:
        raise ValueError(f"accuracy {acc.shape}, flip mass {fm.shape} and grid {len(theta)} disagree")
    if not 0.0 < level <= 1.0:
        raise ValueError(f"the accuracy level must be in (0, 1], got {level!r}")
    if not 0 <= start < len(theta):
        raise ValueError(f"start must be a grid point 0..{len(theta) - 1}, got {start}")
    below = acc[..., start:] < level
    any_below = below.any(-1)
    j = np.where(any_below, np.argmax(below, axis=-1) + start, -1)
    status = np.where(~any_below, NEVER_CROSSED, np.where(j == start, STARTS_BELOW, CROSSED))
    prev = np.maximum(j - 1, 0)
    nxt = np.maximum(j, 0)

    def at(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, k[..., None], -1)[..., 0]

    a0, a1 = at(acc, prev), at(acc, nxt)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip((a0 - level) / (a0 - a1), 0.0, 1.0)
    t = np.where(np.isfinite(t), t, 1.0)
    m_star = at(fm, prev) + t * (at(fm, nxt) - at(fm, prev))
    th_star = theta[prev] + t * (theta[nxt] - theta[prev])
    m_star = np.where(status == NEVER_CROSSED, -np.inf, np.where(status == STARTS_BELOW, np.inf, m_star))
    th_star = np.where(status == NEVER_CROSSED, np.inf, np.where(status == STARTS_BELOW, -np.inf, th_star))
    if log_parameter:
        th_star = np.exp(th_star)  # exp(±∞) = ∞ / 0: map −∞ back below
        th_star = np.where(status == STARTS_BELOW, -np.inf, th_star)
    return m_star, th_star, status, j


def brackets(
    flip: np.ndarray, parameter: np.ndarray, status: np.ndarray, j: np.ndarray, log_parameter: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The grid bracket of each crossing of :func:`crossings` (``status``, ``j``): (m_lo, m_hi, θ_lo, θ_hi),
    the flip masses and parameters of grid points j − 1 and j (ordered); censored crossings keep their
    ±∞ on both ends. ``flip`` is ``[..., point]``, ``parameter`` the grid ``[point]``."""
    fm = np.asarray(flip, dtype=np.float64)
    theta = np.asarray(parameter, dtype=np.float64)
    prev, nxt = np.maximum(j - 1, 0), np.maximum(j, 0)

    def at(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, k[..., None], -1)[..., 0]

    m0, m1 = at(fm, prev), at(fm, nxt)
    t0, t1 = theta[prev], theta[nxt]
    m_lo, m_hi = np.minimum(m0, m1), np.maximum(m0, m1)
    t_lo, t_hi = np.minimum(t0, t1), np.maximum(t0, t1)
    never, above = status == NEVER_CROSSED, status == STARTS_BELOW
    m_lo = np.where(never, -np.inf, np.where(above, np.inf, m_lo))
    m_hi = np.where(never, -np.inf, np.where(above, np.inf, m_hi))
    t_lo = np.where(never, np.inf, np.where(above, -np.inf, t_lo))
    t_hi = np.where(never, np.inf, np.where(above, -np.inf, t_hi))
    return m_lo, m_hi, t_lo, t_hi


def censored_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval from order statistics, so ±∞ replicates (censored) stay ±∞."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(low), float(high)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def censored_dict(est: Estimate) -> dict[str, Any]:
    """JSON form: ±∞ bounds become null, and ``below_range`` / ``above_range`` say which side."""
    values = (est.mean, est.ci_low, est.ci_high)
    return {
        "mean": _finite(est.mean),
        "ci_low": _finite(est.ci_low),
        "ci_high": _finite(est.ci_high),
        "below_range": any(v == -math.inf for v in values),
        "above_range": any(v == math.inf for v in values),
    }


@dataclass(frozen=True)
class Threshold:
    """The crossing of one family's accuracy curve at one level (see the module docstring).

    ``flip_mass``, ``parameter`` and ``margin`` may hold ±∞ (censored: beyond the tested range);
    ``tested_flip_mass`` is the (smallest, largest) flip mass on the point curve, ``bracket`` the two
    grid parameters around the point crossing, ``shares`` how often each status occurred in the
    resamples, ``reason`` a sentence for every status other than ``crossed``.
    """

    family: str
    parameter_name: str
    level: float
    statistic: str
    status: str
    flip_mass: Estimate
    parameter: Estimate
    margin: Estimate
    own_flip_mass: float
    tested_flip_mass: tuple[float, float]
    bracket: tuple[float, float] | None
    shares: dict[str, float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "parameter_name": self.parameter_name,
            "level": self.level,
            "statistic": self.statistic,
            "status": self.status,
            "flip_mass": censored_dict(self.flip_mass),
            "parameter": censored_dict(self.parameter),
            "margin": censored_dict(self.margin),
            "own_flip_mass": self.own_flip_mass,
            "tested_flip_mass": list(self.tested_flip_mass),
            "bracket": None if self.bracket is None else list(self.bracket),
            "shares": dict(self.shares),
            "reason": self.reason,
        }


def _reason(status: str, family: PatternFamily, level: float, tested: tuple[float, float]) -> str:
    if status.startswith("single_point"):
        side = "below" if status.endswith("never_crossed") else "above"
        return (
            f"the {family.name} grid has one point ({family.parameter} = {family.values[0]:g}), so no "
            f"crossing of {level:.0%} can be located: the threshold is only known to lie {side} its flip "
            f"mass, {tested[0]:.3f}"
        )
    if status == "never_crossed":
        return (
            f"accuracy stays ≥ {level:.0%} over the whole {family.name} grid: the threshold lies below "
            f"the smallest flip mass tested, {tested[0]:.3f}"
        )
    if status == "starts_below":
        return (
            f"accuracy is below {level:.0%} already at the start of the {family.name} search, the "
            f"model's own point ({family.parameter} = {family.identity:g}): the threshold lies above the "
            f"largest flip mass tested, {tested[1]:.3f}"
        )
    return ""


def family_threshold(
    family: PatternFamily,
    accuracy: np.ndarray,
    flip: np.ndarray,
    level: float,
    statistic: str = "accuracy",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
    counts: np.ndarray | None = None,
) -> Threshold:
    """:class:`Threshold` of one family from per-sequence ``accuracy`` and ``flip`` ``[sequence, point]``
    (e.g. :func:`interp.tolerance.family_sweep`'s arrays), resampling sequences ``resamples`` times.
    With ``counts`` [unit], the rows are sums over that many sequences per resampling unit
    (:class:`interp.stats.UnitSums`) and each curve point is a ratio of sums."""
    acc = np.asarray(accuracy, dtype=np.float64)
    fm = np.asarray(flip, dtype=np.float64)
    p = len(family.values)
    if acc.ndim != 2 or acc.shape != fm.shape or acc.shape[1] != p:
        raise ValueError(
            f"accuracy {acc.shape} and flip mass {fm.shape} must be [sequence, {p} points] for {family.name}"
        )
    own = family.values.index(family.identity)
    table = np.hstack([acc, fm])
    den = None if counts is None else np.broadcast_to(np.asarray(counts, np.float64)[:, None], table.shape)
    point, reps = bootstrap_distribution(table, den, resamples=resamples, seed=seed)
    a_pt, m_pt = point[:p], point[p:]
    a_rep, m_rep = reps[:, :p], reps[:, p:]
    grid = np.asarray(family.values)
    log = family.kind == "temperature"
    # The walk starts at the model's own point: a sharper temperature is not a degradation (a curve that
    # is worse when sharpened would otherwise "start below" at τ = 0.25 and report a margin of −∞).
    tested = (float(m_pt[own:].min()), float(m_pt[own:].max()))
    m_star, th_star, status, j = crossings(a_pt, m_pt, grid, level, log, start=own)
    ms_rep, th_rep, st_rep, _j_rep = crossings(a_rep, m_rep, grid, level, log, start=own)
    own_pt, own_rep = float(m_pt[own]), m_rep[:, own]
    shares = {name: float(np.mean(st_rep == code)) for code, name in STATUS_NAMES.items()}
    name = STATUS_NAMES[int(status)]
    # The CI from the resamples' grid brackets: sampling error and the grid's own (module docstring).
    m_lo, m_hi, t_lo, t_hi = brackets(m_rep, grid, st_rep, _j_rep)
    flip_est = Estimate(
        float(m_star), censored_interval(m_lo, confidence)[0], censored_interval(m_hi, confidence)[1]
    )
    param_est = Estimate(
        float(th_star), censored_interval(t_lo, confidence)[0], censored_interval(t_hi, confidence)[1]
    )
    with np.errstate(invalid="ignore"):  # ∞ − ∞ cannot occur: own_rep is finite
        margin_est = Estimate(
            own_pt - float(m_star),
            censored_interval(own_rep - m_hi, confidence)[0],
            censored_interval(own_rep - m_lo, confidence)[1],
        )
    bracket = (float(grid[j - 1]), float(grid[j])) if name == "crossed" else None
    reason = _reason(f"single_point/{name}" if p == 1 else name, family, level, tested)
    return Threshold(
        family=family.name,
        parameter_name=family.parameter,
        level=float(level),
        statistic=statistic,
        status="single_point" if p == 1 else name,
        flip_mass=flip_est,
        parameter=param_est,
        margin=margin_est,
        own_flip_mass=own_pt,
        tested_flip_mass=tested,
        bracket=bracket,
        shares=shares,
        reason=reason,
    )
