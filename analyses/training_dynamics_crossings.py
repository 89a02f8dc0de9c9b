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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from analyses.training_dynamics_result import Comparison, Crossing
from interp.stats import Estimate


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


def find_crossings(
    steps: Sequence[int],
    curves: dict[str, tuple[np.ndarray, np.ndarray, tuple[int | None, int | None]]],
    fractions: Sequence[float],
    confidence: float,
    compared: Sequence[tuple[str, str]],
) -> tuple[list[Crossing], list[Comparison]]:
    """Crossings of every curve at every fraction, and the paired comparisons ``compared``.

    ``curves`` maps a metric to (point curve [snapshot], bootstrap curves [resample, snapshot], its
    (layer, head) or (None, None)). A comparison's verdict is "before" / "after" when the CI of the
    difference of crossing steps lies below / above 0, "with" when it contains 0, "undetermined" when a
    curve has no crossing."""
    step_array = np.asarray(steps, dtype=np.float64)
    crossings, found = [], {}
    for name, (point, reps, (layer, head)) in curves.items():
        for f in fractions:
            star, j, theta = crossing_steps(point, step_array, f)
            star_reps, j_reps, _ = crossing_steps(reps, step_array, f)
            found[name, f] = (float(star), star_reps, j_reps)
            j = int(j)
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
            (pa, a, ja), (pb, b, jb) = found[first, f], found[second, f]
            diff = a - b
            lo, hi = interval(diff, confidence)
            verdict = (
                "undetermined" if np.isnan(lo) else "before" if hi < 0 else "after" if lo > 0 else "with"
            )
            comparisons.append(
                Comparison(
                    first=first,
                    second=second,
                    fraction=f,
                    difference=Estimate(pa - pb, lo, hi),
                    share_before=float(np.mean(diff < 0)),
                    same_snapshot_share=float(np.mean(ja == jb)),
                    verdict=verdict,
                )
            )
    return crossings, comparisons
