"""When does a progress curve cross a threshold, and which of two curves crosses first?

Crossing steps. For a progress curve v(s_0), ..., v(s_T) measured at the snapshot steps s_0 < ... < s_T,
with initial value v_0 = v(s_0) and final value v_T = v(s_T), the threshold at fraction f ∈ (0, 1] is

    θ_f = v_0 + f · (v_T − v_0)                     (f = 0.5: the half-way point)

and the curve *crosses* it at the first snapshot j with (v(s_j) − θ_f) · sign(v_T − v_0) ≥ 0 (so a falling
curve such as the loss crosses when it drops to θ_f). Between the last snapshot before, j − 1, and j the
crossing step is interpolated linearly in log(1 + s):

    log(1 + s*) = log(1 + s_{j−1}) + t · (log(1 + s_j) − log(1 + s_{j−1})),
    t = (θ_f − v(s_{j−1})) / (v(s_j) − v(s_{j−1}))          (s* = s_0 when j = 0)

Every snapshot is evaluated on the same sequences, so one bootstrap resample of sequences gives a whole
resampled curve of every metric; the crossing step of each resampled curve (with its own θ_f) gives
the CI of s*, and of the difference s*_A − s*_B between two metrics (paired, same resamples).

What the snapshots can resolve. Those CIs cover evaluation noise only. Whether A crossed before B is
known from the data when A's first snapshot past its threshold comes before B's (j_A < j_B: at step
s_{j_A} A is past θ and B is not); when both first pass at the same snapshot (j_A = j_B) the two
crossings lie between the same two snapshots s_{j−1} and s_j, and their order comes from the
interpolation alone, an assumption about the curves between snapshots, not a measurement. So a
comparison whose crossings share their snapshot pair in at least ``UNRESOLVED_SHARE`` of the resamples
gets the verdict "unresolved" whatever its CI says; more snapshots (``--save-every-log-steps``) resolve it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from analyses.training_dynamics.result import Comparison, Crossing
from interp.stats import Estimate

# A comparison whose two crossings fall between the same pair of snapshots in at least this share of
# the resamples is "unresolved": its order rests on the interpolation (see the module docstring).
UNRESOLVED_SHARE = 0.5


# --- crossing maths (pure numpy) -----------------------------------------------------------------
def crossing_steps(
    curves: np.ndarray, steps: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolated crossing step s*, the index j of the first snapshot past θ_f, and θ_f itself, for
    every curve in ``curves [..., snapshot]`` (see the module docstring). A curve with v_T = v_0 (or a
    NaN end point) has no crossing: s* = NaN and j = −1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"threshold fraction must be in (0, 1], got {fraction!r}")
    curves = np.asarray(curves, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    if curves.shape[-1] != len(steps) or len(steps) < 2:
        raise ValueError(
            f"need ≥ 2 snapshots and one value per snapshot, got {curves.shape} for {len(steps)}"
        )
    if np.any(np.diff(steps) <= 0):
        raise ValueError("snapshot steps must be strictly increasing")
    first, last = curves[..., 0], curves[..., -1]
    theta = first + fraction * (last - first)
    direction = np.sign(last - first)
    past = (curves - theta[..., None]) * direction[..., None] >= 0
    past[..., -1] = True  # θ_1 = v_T up to rounding: the last snapshot is always past it
    j = np.argmax(past, axis=-1)
    undefined = (direction == 0) | ~np.isfinite(direction)
    log_steps = np.log1p(steps)
    before = np.maximum(j - 1, 0)
    v_prev = np.take_along_axis(curves, before[..., None], -1)[..., 0]
    v_next = np.take_along_axis(curves, j[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip((theta - v_prev) / (v_next - v_prev), 0.0, 1.0)
    t = np.where(np.isfinite(t), t, 1.0)
    log_star = np.where(j == 0, log_steps[0], log_steps[before] + t * (log_steps[j] - log_steps[before]))
    star = np.where(undefined, np.nan, np.expm1(log_star))
    return star, np.where(undefined, -1, j), theta


def interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN if all are)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def shared_interval(
    j_first: np.ndarray, j_second: np.ndarray, steps: Sequence[int], point: tuple[int, int]
) -> tuple[float, tuple[int, int] | None]:
    """(share of resamples in which both curves first pass their thresholds at the same snapshot,
    the pair of snapshot steps (s_{j−1}, s_j) they then cross between). The pair is the point curves'
    when they share one, else the one shared most often; None when no resample shares one."""
    j_first, j_second = np.asarray(j_first), np.asarray(j_second)
    same = (j_first == j_second) & (j_first > 0)  # j = 0 never happens for f > 0; −1: no crossing
    share = float(np.mean(same)) if same.size else 0.0
    if point[0] == point[1] and point[0] > 0:
        j = point[0]
    elif same.any():
        j = int(np.bincount(j_first[same]).argmax())
    else:
        return share, None
    return share, (int(steps[j - 1]), int(steps[j]))


def verdict(low: float, high: float, same_snapshot_share: float) -> str:
    """The verdict: "undetermined" (a curve never crosses), "unresolved" (the crossings share their
    snapshot pair in ≥ ``UNRESOLVED_SHARE`` of resamples), else "before" / "after" / "with" as the CI of
    the difference lies below 0 / above 0 / around 0."""
    if np.isnan(low) or np.isnan(high):
        return "undetermined"
    if same_snapshot_share >= UNRESOLVED_SHARE:
        return "unresolved"
    return "before" if high < 0 else "after" if low > 0 else "with"


def find_crossings(
    steps: Sequence[int],
    curves: dict[str, tuple[np.ndarray, np.ndarray, tuple[int | None, int | None]]],
    fractions: Sequence[float],
    confidence: float,
    compared: Sequence[tuple[str, str]],
) -> tuple[list[Crossing], list[Comparison]]:
    """Crossings of every curve at every fraction, and the paired comparisons ``compared``.

    ``curves`` maps a metric to (point curve [snapshot], bootstrap curves [resample, snapshot], its
    (layer, head) or (None, None)). A comparison's verdict is given by :func:`verdict`."""
    step_array = np.asarray(steps, dtype=np.float64)
    crossings, found = [], {}
    for name, (point, reps, (layer, head)) in curves.items():
        for f in fractions:
            star, j, theta = crossing_steps(point, step_array, f)
            star_reps, j_reps, _ = crossing_steps(reps, step_array, f)
            j = int(j)
            found[name, f] = (float(star), star_reps, j_reps, j)
            crossings.append(
                Crossing(
                    metric=name,
                    layer=layer,
                    head=head,
                    fraction=f,
                    initial=float(point[0]),
                    final=float(point[-1]),
                    threshold=float(theta),
                    step=Estimate(float(star), *interval(star_reps, confidence)),
                    first_snapshot_past=int(steps[j]) if j >= 0 else None,
                    last_snapshot_before=int(steps[j - 1]) if j > 0 else None,
                )
            )
    comparisons = []
    for first, second in compared:
        if first not in curves or second not in curves:
            continue
        for f in fractions:
            (pa, a, ja, point_a), (pb, b, jb, point_b) = found[first, f], found[second, f]
            diff = a - b
            lo, hi = interval(diff, confidence)
            share, between = shared_interval(ja, jb, steps, (point_a, point_b))
            comparisons.append(
                Comparison(
                    first=first,
                    second=second,
                    fraction=f,
                    difference=Estimate(pa - pb, lo, hi),
                    share_before=float(np.mean(diff < 0)),
                    same_snapshot_share=share,
                    verdict=verdict(lo, hi, share),
                    shared_interval=between,
                )
            )
    return crossings, comparisons
