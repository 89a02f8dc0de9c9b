"""Statistics and result object of ``analyses.qk_circuit`` (bootstrap, predictions, verdict).

``summarise`` takes per-unit sums (one unit = one sequence, or one block of sequences beyond
``MAX_UNITS``) and the weight geometry, resamples the units once, and computes every derived quantity
on the point estimate and on each resample alike, so every statistic — including nonlinear ones such
as a Jensen–Shannon divergence, a fitted temperature or a Spearman ρ — gets a percentile interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import optimize, stats

from analyses.qk_circuit_verdict import Verdict, make_verdict
from interp import metrics
from interp.circuits import SCORE_TERMS, flip_score_gap
from interp.stats import Estimate, percentile_interval, resample_counts

SCHEMA_VERSION = 1
SWAP_OFFSETS: tuple[int, ...] = (-2, -1, 0, 1, 2)
GAP_OFFSETS: tuple[int, ...] = (-2, -1, 1, 2)
MAX_UNITS = 2000
SIMILARITIES: tuple[str, ...] = ("raw_pe", "key_key", "query_key")
PREDICTIONS: tuple[str, ...] = ("positions_and_mean_tokens", "positions_only", "pe_similarity")
BETA_MAX = 1000.0
CSV_FIELDS = ("section", "layer", "head", "metric", "index", "mean", "ci_low", "ci_high")


# --- pure statistics ------------------------------------------------------------------------------
def row_jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence in bits between distributions on the last axis, 0 ≤ JSD ≤ 1:
    JSD = ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, with 0 log 0 = 0."""
    m = (p + q) / 2
    kl_p = torch.xlogy(p, p) - torch.xlogy(p, m)
    kl_q = torch.xlogy(q, q) - torch.xlogy(q, m)
    return ((kl_p + kl_q).sum(-1) / (2 * math.log(2))).clamp_min(0.0)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis (average ranks for ties); NaN where either side is constant."""
    rx = stats.rankdata(np.broadcast_to(x, np.broadcast_shapes(x.shape, y.shape)), axis=-1)
    ry = stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def fit_temperature(similarity: np.ndarray, observed: np.ndarray, beta_max: float = BETA_MAX) -> float:
    """β ∈ [0, beta_max] maximising Σ_ik observed_ik · log softmax_k(β · similarity_ik).

    The objective is concave in β (log-sum-exp is convex), so a bounded scalar search finds the
    optimum; this is the best single temperature for "attention follows similarity". NaN when the
    similarity is constant.
    """

    if np.ptp(similarity) == 0:
        return float("nan")  # a constant similarity (e.g. no positional encoding) has no temperature

    def loss(beta: float) -> float:
        logits = beta * similarity
        logits = logits - logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return float(-(observed * log_p).sum())

    return float(optimize.minimize_scalar(loss, bounds=(0.0, beta_max), method="bounded").x)


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


# --- result objects -------------------------------------------------------------------------------
@dataclass
class PatternSummary:
    """An attention pattern (observed or predicted) and its flip-alignment numbers."""

    pattern: np.ndarray  # [query, key]
    flip_mass: Estimate
    neighbour_mass: Estimate  # Σ over d = ±1, ±2, mean over queries (interp.metrics.neighbour_mass)
    offset_mass: dict[int, Estimate]  # mean over queries where key N−1−i+d exists
    jsd_bits: Estimate | None = None  # vs the observed mean pattern (predictions only)
    flip_mass_minus_observed: Estimate | None = None
    neighbour_mass_minus_observed: Estimate | None = None


@dataclass
class SimilaritySummary:
    matrix: np.ndarray  # [query, key], weights only
    by_offset: dict[int, float]  # mean over queries of matrix[i, N−1−i+d]
    spearman_positions: Estimate  # vs the observed mean pattern, over the N² (query, key) pairs
    spearman_positions_p: float
    spearman_offsets: Estimate  # vs the observed offset profile, over d = −(N−1)..N−1
    spearman_offsets_p: float


@dataclass
class HeadCircuit:
    """Layer 0, one head."""

    head: int
    variance_share: dict[str, Estimate]  # Σ c̃_t S̃ / Σ S̃² (sums to 1 over terms)
    variance_ratio: dict[str, Estimate]  # Σ c̃_t² / Σ S̃²
    mean_terms: dict[str, np.ndarray]  # [query, key] mean over sequences
    observed: PatternSummary
    predictions: dict[str, PatternSummary]
    temperature: Estimate  # best β of the pe_similarity prediction
    similarity: dict[str, SimilaritySummary]
    score_gaps: dict[int, dict[str, Estimate]]  # offset -> {term..., "total"}
    side_mass: dict[int, Estimate]  # |d| -> mean attention per key at ±d
    fall_1_to_2: Estimate  # side_mass[1] / side_mass[2]
    gap: dict[int, Estimate]  # |d| -> mean total score gap at ±d
    pos_pos_gap_share: dict[int, Estimate]  # |d| -> pos_pos part of that gap / total gap
    qk_gain: float
    law_slope: Estimate  # least-squares β' in pos_pos ≈ β'·cos(PE_{N−1−i}, PE_j) + row constant
    law_r2: Estimate  # share of pos_pos's within-row variance that this law explains


@dataclass
class QKCircuitResult:
    """The result object; ``to_dict`` is metrics.json, ``csv_rows`` is metrics.csv."""

    settings: dict[str, Any]
    decomposition_max_abs_error: float
    frozen_scale: bool
    accuracy: Estimate
    heads: list[HeadCircuit]
    singular_values: np.ndarray  # [layer, head, d_head] of W_Q W_Kᵀ
    raw_pe_cosine_by_distance: np.ndarray  # [N]
    key_cosine_by_distance: np.ndarray  # [head, N]
    swap: dict[int, dict[str, Any]]  # offset -> {"follows": Estimate, "changed": Estimate, "swaps": int}
    rollout: dict[str, Any] | None  # multi-layer models only
    verdict: Verdict
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.settings["seq_len"])

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def num_sequences(self) -> int:
        return int(self.settings["num_sequences"])

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (schema version ``SCHEMA_VERSION``; Estimates as mean/ci_low/ci_high)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "analysis": "qk_circuit",
            "provenance": self.provenance,
            "settings": self.settings,
            "definitions": DEFINITIONS,
            "decomposition_max_abs_error": self.decomposition_max_abs_error,
            "frozen_scale": self.frozen_scale,
            "accuracy": self.accuracy.to_dict(),
            "verdict": self.verdict.to_dict(),
            "raw_pe_cosine_by_distance": self.raw_pe_cosine_by_distance.tolist(),
            "qk_singular_values": self.singular_values.tolist(),
            "heads": [_head_dict(h, self.key_cosine_by_distance[h.head]) for h in self.heads],
            "swap": {
                str(o): {
                    "follows": v["follows"].to_dict(),
                    "changed": v["changed"].to_dict(),
                    "logprob_drop": v["logprob_drop"].to_dict(),
                    "swaps": v["swaps"],
                }
                for o, v in self.swap.items()
            },
            "rollout": None
            if self.rollout is None
            else {
                "mean": self.rollout["mean"].tolist(),
                "flip_mass": self.rollout["flip_mass"].to_dict(),
                "neighbour_mass": self.rollout["neighbour_mass"].to_dict(),
            },
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (section, head, metric[, index]) with an estimate; layer is 0 except for rollout."""
        rows: list[dict[str, Any]] = []

        def add(section: str, head: Any, metric: str, index: Any, est: Estimate, layer: Any = 0) -> None:
            rows.append(
                {
                    "section": section,
                    "layer": layer,
                    "head": head,
                    "metric": metric,
                    "index": index,
                    **est.to_dict(),
                }
            )

        add("model", "", "accuracy", "", self.accuracy, layer="")
        for h in self.heads:
            for t in SCORE_TERMS:
                add("decomposition", h.head, "variance_share", t, h.variance_share[t])
                add("decomposition", h.head, "variance_ratio", t, h.variance_ratio[t])
            for d, e in h.observed.offset_mass.items():
                add("observed", h.head, "offset_mass", d, e)
            add("observed", h.head, "flip_mass", "", h.observed.flip_mass)
            add("observed", h.head, "neighbour_mass", "", h.observed.neighbour_mass)
            for k in (1, 2):
                add("observed", h.head, "side_mass", k, h.side_mass[k])
                add("gaps", h.head, "score_gap", k, h.gap[k])
                add("gaps", h.head, "pos_pos_gap_share", k, h.pos_pos_gap_share[k])
            add("similarity_law", h.head, "slope", "", h.law_slope)
            add("similarity_law", h.head, "r2", "", h.law_r2)
            add("observed", h.head, "fall_1_to_2", "", h.fall_1_to_2)
            for o, parts in h.score_gaps.items():
                for name, e in parts.items():
                    add("gaps", h.head, f"score_gap.{name}", o, e)
            for name, pred in h.predictions.items():
                for metric in (
                    "jsd_bits",
                    "flip_mass",
                    "neighbour_mass",
                    "flip_mass_minus_observed",
                    "neighbour_mass_minus_observed",
                ):
                    add(f"prediction.{name}", h.head, metric, "", getattr(pred, metric))
            add("prediction.pe_similarity", h.head, "temperature", "", h.temperature)
            for kind, sim in h.similarity.items():
                add(f"similarity.{kind}", h.head, "spearman_positions", "", sim.spearman_positions)
                add(f"similarity.{kind}", h.head, "spearman_offsets", "", sim.spearman_offsets)
        for o, v in self.swap.items():
            add("swap", "", "follows", o, v["follows"], layer="")
            add("swap", "", "changed", o, v["changed"], layer="")
            add("swap", "", "logprob_drop", o, v["logprob_drop"], layer="")
        if self.rollout is not None:
            for name in ("flip_mass", "neighbour_mass"):
                add("rollout", "", name, "", self.rollout[name], layer="all")
        return rows

    def summary(self) -> str:
        """The one-screen text the CLI prints: key numbers and the verdict."""
        lines = [
            f"qk circuit: {self.settings['num_sequences']:,} sequences, "
            f"{self.settings['bootstrap_resamples']} bootstrap resamples, "
            f"{self.settings['confidence']:.0%} CIs",
            f"decomposition max |Σ terms − hook_attn_scores| = {self.decomposition_max_abs_error:.2e}"
            + (" (pre-LN: LayerNorm scale frozen)" if self.frozen_scale else ""),
            f"accuracy {_fmt(self.accuracy)}",
        ]
        for h in self.heads:
            share = "  ".join(f"{t} {h.variance_share[t].mean:+.2f}" for t in SCORE_TERMS)
            jsd = "  ".join(f"{k} {p.jsd_bits.mean:.4f}" for k, p in h.predictions.items())
            lines += [f"head {h.head}: variance share  {share}", f"        JSD (bits)  {jsd}"]
        lines += ["", f"verdict: {self.verdict.label} (layer 0, head {self.verdict.head})"]
        lines += [f"- {s}" for s in self.verdict.sentences[1:]]
        return "\n".join(lines)


DEFINITIONS = {
    "tok": "W_E[token] + b_E (hook_embed; the embedding bias is part of the token part)",
    "pos": "the positional encoding (hook_pos_embed)",
    "pos_pos": "(pos_q W_Q)·(pos_k W_K)/sqrt(d_head)",
    "tok_pos": "(tok_q W_Q)·(pos_k W_K)/sqrt(d_head)  (query token, key position)",
    "pos_tok": "(pos_q W_Q)·(tok_k W_K)/sqrt(d_head)  (query position, key token)",
    "tok_tok": "(tok_q W_Q)·(tok_k W_K)/sqrt(d_head)",
    "bias": "[b_Q·(x_k W_K) + (x_q W_Q)·b_K + b_Q·b_K]/sqrt(d_head): every product with b_Q or b_K",
    "pre_ln": "pre-LN models: tok and pos pass LN1 with its scale frozen at the forward value; LN1's bias "
    "is folded into b_Q and b_K",
    "variance_share": "sum c~_t S~ / sum S~^2, scores centred over the keys of each query row; sums to 1",
    "variance_ratio": "sum c~_t^2 / sum S~^2",
    "jsd_bits": "Jensen-Shannon divergence (base 2) per query row between the observed mean pattern and "
    "the prediction, averaged over rows",
    "neighbour_mass": "attention on keys N-1-i+d, d = ±1, ±2, summed, averaged over queries",
    "offset_mass": "attention on key N-1-i+d averaged over the queries where it exists",
    "score_gap": "S[i, N-1-i] - S[i, N-1-i+d] averaged over queries; exp(gap) = attention ratio",
    "side_mass": "mean of offset_mass at -d and +d",
    "swap": "digit at key N-1-i+o replaced by a digit different from it (and, for o != 0, from the "
    "target); follows = prediction at i equals the new digit; changed = prediction at i changed; "
    "logprob_drop = log p(t_{N-1-i}) at i before minus after the swap (nats)",
}


def _fmt(e: Estimate) -> str:
    return f"{e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"


def _pattern_dict(p: PatternSummary) -> dict[str, Any]:
    out: dict[str, Any] = {
        "flip_mass": p.flip_mass.to_dict(),
        "neighbour_mass": p.neighbour_mass.to_dict(),
        "offset_mass": {str(d): e.to_dict() for d, e in p.offset_mass.items()},
    }
    for name in ("jsd_bits", "flip_mass_minus_observed", "neighbour_mass_minus_observed"):
        value = getattr(p, name)
        if value is not None:
            out[name] = value.to_dict()
    out["pattern"] = p.pattern.tolist()
    return out


def _head_dict(h: HeadCircuit, key_cosine: np.ndarray) -> dict[str, Any]:
    return {
        "layer": 0,
        "head": h.head,
        "variance_share": {t: e.to_dict() for t, e in h.variance_share.items()},
        "variance_ratio": {t: e.to_dict() for t, e in h.variance_ratio.items()},
        "observed": _pattern_dict(h.observed),
        "side_mass": {str(k): e.to_dict() for k, e in h.side_mass.items()},
        "fall_1_to_2": h.fall_1_to_2.to_dict(),
        "score_gap": {str(k): e.to_dict() for k, e in h.gap.items()},
        "pos_pos_gap_share": {str(k): e.to_dict() for k, e in h.pos_pos_gap_share.items()},
        "score_gaps_by_offset": {
            str(o): {name: e.to_dict() for name, e in parts.items()} for o, parts in h.score_gaps.items()
        },
        "qk_gain": h.qk_gain,
        "similarity_law": {"slope": h.law_slope.to_dict(), "r2": h.law_r2.to_dict()},
        "temperature": h.temperature.to_dict(),
        "predictions": {name: _pattern_dict(p) for name, p in h.predictions.items()},
        "key_cosine_by_distance": key_cosine.tolist(),
        "similarity": {
            kind: {
                "by_offset": {str(d): v for d, v in s.by_offset.items()},
                "spearman_positions": s.spearman_positions.to_dict(),
                "spearman_positions_p": s.spearman_positions_p,
                "spearman_offsets": s.spearman_offsets.to_dict(),
                "spearman_offsets_p": s.spearman_offsets_p,
                "matrix": s.matrix.tolist(),
            }
            for kind, s in h.similarity.items()
        },
        "mean_terms": {t: m.tolist() for t, m in h.mean_terms.items()},
    }


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
        low, high = percentile_interval(values[1:].reshape(len(values) - 1, -1), confidence)
        flat = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(values[0].ravel(), low, high)]
        return np.array(flat, dtype=object).reshape(values.shape[1:])

    pattern, terms = means["pattern"], means["terms"]  # [A, H, N, N], [A, T, H, N, N]
    n_heads = pattern.shape[1]
    similarity = {k: torch.from_numpy(v) for k, v in geometry["similarity"].items()}  # [H, N, N]
    betas = np.array(
        [
            [
                fit_temperature(geometry["similarity"]["raw_pe"][h], pattern[a, h].numpy())
                for h in range(n_heads)
            ]
            for a in range(pattern.shape[0])
        ]
    )
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

    follows, changed, drop = (est(means[f"swap_{k}"]) for k in ("follows", "changed", "drop"))
    swap_counts = sums["swap_count"].sum(0).numpy()
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
        accuracy=est(means["accuracy"])[()],
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
    """Two-sided p-value of Spearman's ρ (NaN if either side is constant)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).pvalue)
