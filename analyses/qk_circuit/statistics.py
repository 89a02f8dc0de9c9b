"""The statistics of ``analyses.qk_circuit``: bootstrap once, derive every quantity on each resample.

``summarise`` takes per-unit sums (one unit = one sequence, or one block of sequences beyond
``MAX_UNITS``) and the weight geometry, resamples the units once, and computes every derived quantity
on the point estimate and on each resample alike, so every statistic — including nonlinear ones such
as a Jensen–Shannon divergence, a fitted temperature or a Spearman ρ — gets a percentile interval.
The pure functions it uses (:func:`row_jsd`, :func:`spearman`, :func:`interp.temperature.fit_temperature`,
:func:`offset_profile`, :func:`similarity_law`, :func:`bootstrap_ratio_means`) state their maths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from analyses.frame.result import estimates
from analyses.qk_circuit.result import (
    GAP_OFFSETS,
    SIMILARITIES,
    HeadCircuit,
    PatternSummary,
    QKCircuitResult,
    SimilaritySummary,
    Verdict,
)
from analyses.qk_circuit.verdict import make_verdict
from interp import metrics
from interp.circuits import SCORE_TERMS, flip_score_gap
from interp.paired import average_ranks
from interp.stats import resample_counts

# β lives in interp (the zoo atlas fits it too); its names stay importable from here.
from interp.temperature import BETA_MAX, fit_temperature, fit_temperatures  # noqa: F401


# --- pure statistics ------------------------------------------------------------------------------
def row_jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence in bits between distributions on the last axis, 0 ≤ JSD ≤ 1:
    JSD = ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, with 0 log 0 = 0."""
    m = (p + q) / 2
    kl_p = torch.xlogy(p, p) - torch.xlogy(p, m)
    kl_q = torch.xlogy(q, q) - torch.xlogy(q, m)
    return ((kl_p + kl_q).sum(-1) / (2 * math.log(2))).clamp_min(0.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis of values without NaN (``scipy.stats.rankdata(values,
    axis=-1)``, exactly)."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1, values.shape[-1])
    return np.stack([average_ranks(row) for row in flat]).reshape(values.shape)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis (average ranks for ties); NaN where either side is constant."""
    # ranked before broadcasting: a row of x shared by many rows of y is ranked once (the same ranks)
    rx = np.broadcast_to(_ranks(x), np.broadcast_shapes(np.shape(x), np.shape(y)))
    ry = _ranks(y)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def offset_profile(matrix: torch.Tensor) -> torch.Tensor:
    """``[..., head, query, key]`` → ``[..., head, 2N−1]``: mean of M[i, N−1−i+d] over the queries
    where that key exists, for d = −(N−1)..N−1."""
    n = matrix.shape[-1]
    offsets = list(range(-(n - 1), n))
    flat = matrix.reshape(-1, *matrix.shape[-3:])
    counts = torch.tensor(metrics.offset_query_counts(n, offsets), dtype=matrix.dtype)
    return (metrics.offset_values(flat, offsets).sum(2) / counts).reshape(*matrix.shape[:-2], len(offsets))


def similarity_law(scores: torch.Tensor, similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``scores[..., i, j] ≈ β'·similarity[i, j] + c_i`` by least squares, per head.

    Both sides are centred over each row's keys (the softmax ignores c_i); returns β' and
    R² = 1 − Σ(S̃ − β' C̃)² / Σ S̃², each ``[..., head]``. R² = 1 means the scores *are* the similarity
    up to a temperature.
    """
    s = scores - scores.mean(-1, keepdim=True)
    c = similarity - similarity.mean(-1, keepdim=True)
    slope = (s * c).sum((-1, -2)) / (c * c).sum((-1, -2))
    residual = s - slope[..., None, None] * c
    return slope, 1.0 - residual.pow(2).sum((-1, -2)) / s.pow(2).sum((-1, -2))


def bootstrap_ratio_means(
    blocks: dict[str, tuple[torch.Tensor, torch.Tensor]], resamples: int, seed: Any = 0
) -> dict[str, np.ndarray]:
    """Σ num / Σ den over the units, for the whole sample (row 0) and each bootstrap resample (rows 1..R).

    ``blocks`` maps a name to per-unit sums ``num [units, ...]`` and ``den`` of the same shape or one
    that broadcasts to it (e.g. ``[units, 1]`` sequence counts); every block sees the same resamples
    (``interp.stats.resample_counts``), so statistics combining blocks stay paired.
    """
    flat = {}
    for name, (num, den) in blocks.items():
        num2 = num.to(torch.float64).reshape(num.shape[0], -1).numpy()
        den2 = den.to(torch.float64).reshape(den.shape[0], -1).numpy()
        if den2.shape[1] not in (1, num2.shape[1]):
            den2 = np.broadcast_to(den.to(torch.float64).numpy(), num.shape).reshape(num2.shape)
        flat[name] = (num2, den2, tuple(num.shape[1:]))
    n_units = next(iter(flat.values()))[0].shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = {name: [num.sum(0) / den.sum(0)] for name, (num, den, _) in flat.items()}
        for counts in resample_counts(n_units, resamples, seed):
            for name, (num, den, _) in flat.items():
                rows[name].append((counts @ num) / (counts @ den))
    return {name: np.vstack(rows[name]).reshape(-1, *shape) for name, (_, _, shape) in flat.items()}


# --- summarise ------------------------------------------------------------------------------------
def summarise(
    sums: dict[str, torch.Tensor],
    geometry: dict[str, Any],
    *,
    max_error: float,
    frozen_scale: bool,
    num_sequences: int,
    seq_len: int,
    seed: int,
    batch_size: int,
    resamples: int,
    confidence: float,
    swap_offsets: tuple[int, ...],
    config: dict[str, Any],
) -> QKCircuitResult:
    """Bootstrap the unit sums once and derive every statistic on the point and on each resample."""
    n = seq_len
    seqs = sums["sequences"][:, None]  # [units, 1]
    var_total = sums["var_total"].unsqueeze(1).expand_as(sums["var_cross"])
    blocks = {  # name: (numerator sums, denominator sums broadcastable to them), per unit
        "pattern": (sums["pattern"], seqs),
        "terms": (sums["terms"], seqs),
        "var_share": (sums["var_cross"], var_total),
        "var_ratio": (sums["var_own"], var_total),
        "accuracy": (sums["correct"], seqs * n),
        "swap_follows": (sums["swap_follows"], sums["swap_count"]),
        "swap_changed": (sums["swap_changed"], sums["swap_count"]),
        "swap_drop": (sums["swap_drop"], sums["swap_count"]),
    }
    if "rollout" in sums:
        blocks["rollout"] = (sums["rollout"], seqs)
    # The resampling stream [seed, 1] is distinct from the data streams [seed, block].
    n_units = seqs.shape[0]
    means = {
        name: torch.from_numpy(values)
        for name, values in bootstrap_ratio_means(blocks, resamples, seed=[seed, 1]).items()
    }

    def est(values: torch.Tensor | np.ndarray) -> np.ndarray:
        """``[1 + R, ...]`` → object array ``[...]`` of Estimates."""
        values = np.asarray(values, dtype=np.float64)
        replicates = values[1:].reshape(len(values) - 1, -1)
        return estimates(values[0].ravel(), replicates, confidence, values.shape[1:])

    def proportion(values: torch.Tensor | np.ndarray, trials: Any) -> np.ndarray:
        """:func:`est` for a proportion (accuracy, swap follows / changed): Clopper–Pearson at the effective
        number of trials, exact at 0% and 100% (``interp.proportions``), never a zero-width interval."""
        values = np.asarray(values, dtype=np.float64)
        replicates = values[1:].reshape(len(values) - 1, -1)
        return estimates(
            values[0].ravel(),
            replicates,
            confidence,
            values.shape[1:],
            sequences=num_sequences,
            trials=trials,
        )

    pattern, terms = means["pattern"], means["terms"]  # [A, H, N, N], [A, T, H, N, N]
    n_heads = pattern.shape[1]
    similarity = {k: torch.from_numpy(v) for k, v in geometry["similarity"].items()}  # [H, N, N]
    betas = fit_temperatures(geometry["similarity"]["raw_pe"], pattern.numpy())  # [A, H]
    predicted = {
        "positions_and_mean_tokens": terms.sum(1).softmax(-1),
        "positions_only": terms[:, 0].softmax(-1),
        "pe_similarity": (torch.from_numpy(betas)[..., None, None] * similarity["raw_pe"]).softmax(-1),
    }

    def pattern_numbers(p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "flip": metrics.flip_mass(p).mean(-1),
            "neighbour": metrics.neighbour_mass(p).mean(-1),
            "profile": offset_profile(p),
        }

    observed = pattern_numbers(pattern)
    offsets = list(range(-(n - 1), n))
    zero = n - 1  # index of offset 0 in a profile

    def summary(p: torch.Tensor, h: int, compare: bool) -> PatternSummary:
        nums = pattern_numbers(p) if compare else observed
        profile = est(nums["profile"][:, h])
        out = PatternSummary(
            pattern=p[0, h].numpy(),
            flip_mass=est(nums["flip"][:, h])[()],
            neighbour_mass=est(nums["neighbour"][:, h])[()],
            offset_mass={d: profile[i] for i, d in enumerate(offsets)},
        )
        if compare:
            out.jsd_bits = est(row_jsd(pattern[:, h], p[:, h]).mean(-1))[()]
            out.flip_mass_minus_observed = est(nums["flip"][:, h] - observed["flip"][:, h])[()]
            out.neighbour_mass_minus_observed = est(nums["neighbour"][:, h] - observed["neighbour"][:, h])[()]
        return out

    gaps = {o: flip_score_gap(terms, o) for o in GAP_OFFSETS}  # [A, T, H]
    law_slope, law_r2 = similarity_law(terms[:, 0], similarity["raw_pe"])
    var_share, var_ratio = est(means["var_share"]), est(means["var_ratio"])  # [T, H]
    heads = []
    for h in range(n_heads):
        prof = observed["profile"][:, h]
        side = {k: (prof[:, zero - k] + prof[:, zero + k]) / 2 for k in (1, 2)}
        gap_abs = {k: (gaps[-k][:, :, h].sum(1) + gaps[k][:, :, h].sum(1)) / 2 for k in (1, 2)}
        pos_gap = {k: (gaps[-k][:, 0, h] + gaps[k][:, 0, h]) / 2 for k in (1, 2)}
        sims = {}
        for kind in SIMILARITIES:
            sim = similarity[kind][h]
            sim_profile = offset_profile(sim[None, None])[0, 0].numpy()
            rho_pos = spearman(sim.reshape(-1).numpy(), pattern[:, h].reshape(pattern.shape[0], -1).numpy())
            rho_off = spearman(sim_profile, prof.numpy())
            sims[kind] = SimilaritySummary(
                matrix=sim.numpy(),
                by_offset={d: float(v) for d, v in zip(offsets, sim_profile)},
                spearman_positions=est(rho_pos)[()],
                spearman_positions_p=_spearman_p(sim.reshape(-1).numpy(), pattern[0, h].reshape(-1).numpy()),
                spearman_offsets=est(rho_off)[()],
                spearman_offsets_p=_spearman_p(sim_profile, prof[0].numpy()),
            )
        heads.append(
            HeadCircuit(
                head=h,
                variance_share={t: var_share[i, h] for i, t in enumerate(SCORE_TERMS)},
                variance_ratio={t: var_ratio[i, h] for i, t in enumerate(SCORE_TERMS)},
                mean_terms={t: terms[0, i, h].numpy() for i, t in enumerate(SCORE_TERMS)},
                observed=summary(pattern, h, compare=False),
                predictions={name: summary(p, h, compare=True) for name, p in predicted.items()},
                temperature=est(betas[:, h])[()],
                similarity=sims,
                score_gaps={
                    o: {
                        **{t: est(g[:, i, h])[()] for i, t in enumerate(SCORE_TERMS)},
                        "total": est(g[:, :, h].sum(1))[()],
                    }
                    for o, g in gaps.items()
                },
                side_mass={k: est(v)[()] for k, v in side.items()},
                fall_1_to_2=est(side[1] / side[2])[()],
                gap={k: est(v)[()] for k, v in gap_abs.items()},
                pos_pos_gap_share={k: est(pos_gap[k] / gap_abs[k])[()] for k in (1, 2)},
                qk_gain=float(geometry["qk_gain"][h]),
                law_slope=est(law_slope[:, h])[()],
                law_r2=est(law_r2[:, h])[()],
            )
        )

    swap_counts = sums["swap_count"].sum(0).numpy()
    per_sequence = np.maximum(swap_counts / num_sequences, 1.0)  # swaps (trials) per sequence and offset
    follows, changed = (proportion(means[f"swap_{k}"], per_sequence) for k in ("follows", "changed"))
    drop = est(means["swap_drop"])
    swap = {
        o: {
            "follows": follows[i],
            "changed": changed[i],
            "logprob_drop": drop[i],
            "swaps": int(swap_counts[i]),
        }
        for i, o in enumerate(swap_offsets)
    }
    rollout = None
    if "rollout" in means:
        r = means["rollout"].unsqueeze(1)  # [A, 1, N, N]
        rollout = {
            "mean": r[0, 0].numpy(),
            "flip_mass": est(metrics.flip_mass(r).mean(-1)[:, 0])[()],
            "neighbour_mass": est(metrics.neighbour_mass(r).mean(-1)[:, 0])[()],
        }
    settings = {
        "num_sequences": num_sequences,
        "seq_len": n,
        "seed": seed,
        "batch_size": batch_size,
        "bootstrap_resamples": resamples,
        "confidence": confidence,
        "resampling_unit": "sequence"
        if n_units == num_sequences
        else f"block of {num_sequences // n_units}-{-(-num_sequences // n_units)} consecutive sequences",
        "resampling_units": n_units,
        "swap_offsets": list(swap_offsets),
        "gap_offsets": list(GAP_OFFSETS),
        "terms": list(SCORE_TERMS),
    }
    result = QKCircuitResult(
        settings=settings,
        decomposition_max_abs_error=float(max_error),
        frozen_scale=frozen_scale,
        accuracy=proportion(means["accuracy"], n)[()],
        heads=heads,
        singular_values=geometry["singular_values"],
        raw_pe_cosine_by_distance=geometry["raw_pe_cosine_by_distance"],
        key_cosine_by_distance=geometry["key_cosine_by_distance"],
        swap=swap,
        rollout=rollout,
        verdict=Verdict("", 0, []),
        config=config,
    )
    result.verdict = make_verdict(result)
    return result


def _spearman_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p-value of Spearman's ρ (NaN if either side is constant): the t test on n − 2 degrees
    of freedom that ``scipy.stats.spearmanr`` does, to the last bit, without importing scipy.stats."""
    from scipy.special import stdtr  # lazy: scipy.special is a fifth of scipy.stats' import time

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    rho = np.corrcoef(np.column_stack([average_ranks(x), average_ranks(y)]), rowvar=False)[1, 0]
    dof = len(x) - 2
    with np.errstate(divide="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
    return float(2 * stdtr(dof, -np.abs(t)))
