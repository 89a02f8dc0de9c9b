"""What decides the digit a head's output becomes: a plurality vote over the keys' digits?

Hypothesis (to be tested, not assumed). Query i's output is the digit with the largest *total*
attention weight over the keys holding it,

    V_{i,c} = Σ_k A_{ik} [t_k = c],        vote(i) = argmax_c V_{i,c},

so the answer t_{f(i)} (f(i) = N − 1 − i) is right exactly when its own key's weight plus that of every
other key holding the same digit outweighs each other digit's total: the *vote margin*

    μ_i = V_{i, t_f(i)} − max_{c ≠ t_f(i)} V_{i,c}  > 0.

The simpler rival rule reads the single heaviest key: argmax_key(i) = t_{argmax_k A_ik}. The rules
differ where several keys other than f(i) hold one digit, e.g. *adversarial* queries, whose neighbour
keys f(i) ± 1..r all hold one digit w ≠ t_f(i) (:func:`neighbours_agree_wrong`). Ties in the vote go to
the lowest digit (``argmax``). The logit margin ℓ_{i, t_f(i)} − max_{c ≠ t_f(i)} ℓ_{i,c} is compared
with μ_i through per-sequence moments (Σμ, Σλ, Σμ², Σλ², Σμλ over positions), from which a Pearson
correlation is recomputed on every bootstrap resample of sequences (:func:`pearson_from_moments`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.metrics import _heads, flipped_keys
from interp.proportions import proportion_interval
from interp.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Estimate,
    bootstrap_distributions,
    percentile_interval,
)
from machine.scalars import as_int

# Columns of :func:`readout_columns` (all per sequence; counts are over query positions).
READOUT_COLUMNS: tuple[str, ...] = (
    "vote_agree",  # positions where the model's digit is the vote's
    "argmax_agree",  # positions where the model's digit is the heaviest key's digit
    "vote_right",  # positions where the vote is the target digit (the rule's own accuracy)
    "vote_gap",  # Σ over vote disagreements of V[vote] − V[model's digit] (how far the vote was)
    "adversarial",  # adversarial positions (neighbours agree on one wrong digit)
    "adversarial_vote_agree",
    "adversarial_argmax_agree",
    "adversarial_correct",  # the model is right there
    "m_vote",  # Σ μ_i
    "m_logit",  # Σ λ_i
    "m_vote2",  # Σ μ_i²
    "m_logit2",  # Σ λ_i²
    "m_cross",  # Σ μ_i λ_i
)


def _check(pattern: Tensor, tokens: Tensor) -> int:
    if not isinstance(pattern, Tensor) or pattern.ndim != 3:
        _heads(pattern)  # the metrics' one-line message for a non-tensor
        raise ValueError(f"pattern must be one head's [batch, query, key], got {tuple(pattern.shape)}")
    _heads(pattern)  # square, floating point, rows summing to one
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens must be a torch.Tensor [batch, pos], got {type(tokens).__name__}")
    if tokens.shape != (pattern.shape[0], pattern.shape[-1]):
        raise ValueError(
            f"tokens must be [batch, pos] = {tuple(pattern.shape[::2])}, got {tuple(tokens.shape)}"
        )
    return pattern.shape[-1]


def digit_votes(
    pattern: Float[Tensor, "batch query key"], tokens: Int[Tensor, "batch key"], num_categories: int
) -> Float[Tensor, "batch query digit"]:
    """V_{b,i,c} = Σ_k A_{b,i,k} [t_{b,k} = c]: total attention weight per digit."""
    _check(pattern, tokens)
    if int(tokens.max()) >= num_categories or int(tokens.min()) < 0:
        raise ValueError(f"tokens must lie in 0..{num_categories - 1}")
    return pattern @ F.one_hot(tokens, num_categories).to(pattern.dtype)


def target_margin(
    scores: Float[Tensor, "batch query digit"], targets: Int[Tensor, "batch query"]
) -> Float[Tensor, "batch query"]:
    """s_target − max_{c ≠ target} s_c for votes (μ) or logits (λ): > 0 iff the target wins alone."""
    if scores.shape[:-1] != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} disagree")
    right = scores.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return right - scores.scatter(-1, targets.unsqueeze(-1), float("-inf")).max(-1).values


def argmax_key_digit(
    pattern: Float[Tensor, "batch query key"], tokens: Int[Tensor, "batch key"]
) -> Int[Tensor, "batch query"]:
    """t_{argmax_k A_ik}: the digit of the heaviest key (ties to the lowest key index)."""
    _check(pattern, tokens)
    return tokens.gather(1, pattern.argmax(-1))


def neighbours_agree_wrong(tokens: Int[Tensor, "batch pos"], radius: int = 2) -> Bool[Tensor, "batch query"]:
    """Query i is adversarial when every existing key f(i) + d, 0 < |d| ≤ radius, holds one digit w and
    w ≠ t_f(i): all the neighbours' weight votes for the same wrong digit."""
    radius = as_int(radius, "radius", minimum=1)
    n = tokens.shape[-1]
    f = flipped_keys(n, tokens.device)
    target = tokens[:, f]
    first = None
    ok = torch.ones_like(target, dtype=torch.bool)
    for d in [d for r in range(1, radius + 1) for d in (-r, r)]:
        keys = f + d
        exists = (keys >= 0) & (keys < n)
        digit = tokens[:, keys.clamp(0, n - 1)]
        if first is None:
            first = torch.where(exists, digit, -1)
        else:  # the first existing neighbour fixes w
            first = torch.where(first < 0, torch.where(exists, digit, -1), first)
        ok &= ~exists | (digit == first) | (first < 0)
    return ok & (first >= 0) & (first != target)


def _margins(
    patterns: Float[Tensor, "point batch query key"],
    tokens: Int[Tensor, "batch pos"],
    logits: Float[Tensor, "point batch pos vocab"],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(flat patterns [point·batch, q, k] float64, votes V [point, batch, q, C], targets, μ, λ)."""
    n_points, batch, n, _ = patterns.shape
    c = logits.shape[-1]
    flat = patterns.reshape(n_points * batch, n, n).double()
    votes = digit_votes(flat, tokens.repeat(n_points, 1), c).view(n_points, batch, n, c)
    target = tokens.flip(-1).unsqueeze(0).expand(n_points, batch, n)
    return flat, votes, target, target_margin(votes, target), target_margin(logits.double(), target)


def readout_columns(
    patterns: Float[Tensor, "point batch query key"],
    tokens: Int[Tensor, "batch pos"],
    logits: Float[Tensor, "point batch pos vocab"],
    radius: int = 2,
    margins: tuple[Tensor, ...] | None = None,
) -> Float[Tensor, "point batch column"]:
    """Per-sequence sums of :data:`READOUT_COLUMNS` for each point (a :mod:`interp.tolerance` statistic;
    ``margins``: :func:`_margins` of the same arguments, when a caller has them already)."""
    n_points, batch, n, _ = patterns.shape
    flat, votes, target, mu, lam = margins or _margins(patterns, tokens, logits)
    model_digit = logits.argmax(-1)
    vote_digit = votes.argmax(-1)
    key_digit = argmax_key_digit(flat, tokens.repeat(n_points, 1)).view(n_points, batch, n)
    adv = neighbours_agree_wrong(tokens, radius).unsqueeze(0).expand(n_points, batch, n)
    vote_agree = model_digit == vote_digit
    key_agree = model_digit == key_digit
    gap = votes.gather(-1, vote_digit.unsqueeze(-1)) - votes.gather(-1, model_digit.unsqueeze(-1))
    cols = [
        vote_agree,
        key_agree,
        vote_digit == target,
        gap.squeeze(-1) * ~vote_agree,
        adv,
        adv & vote_agree,
        adv & key_agree,
        adv & (model_digit == target),
        mu,
        lam,
        mu * mu,
        lam * lam,
        mu * lam,
    ]
    return torch.stack([x.double().sum(-1) for x in cols], -1)


def pearson_from_moments(
    moments: np.ndarray, count: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Pearson r, slope of λ on μ, intercept) from summed moments ``[..., 5]`` = (Σμ, Σλ, Σμ², Σλ², Σμλ)
    over ``count`` positions (NaN where a variance is zero)."""
    m = np.asarray(moments, dtype=np.float64) / np.asarray(count, dtype=np.float64)[..., None]
    ex, ey, exx, eyy, exy = (m[..., k] for k in range(5))
    cov, vx, vy = exy - ex * ey, exx - ex * ex, eyy - ey * ey
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
        slope = cov / vx
    return r, slope, ey - slope * ex


def readout_estimates(
    columns: np.ndarray,
    seq_len: int,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
    counts: np.ndarray | None = None,
) -> dict[str, list[Estimate]]:
    """Rates per point from :func:`readout_columns` sums ``[sequence, point, column]``, each a ratio of
    sums over the sequences drawn (one set of resamples for all; with ``counts`` [unit], each row sums
    that many sequences, a resampling unit of :class:`interp.stats.UnitSums`):

    - ``vote_agreement`` / ``argmax_agreement``: share of positions where the model's digit is the
      rule's; ``vote_accuracy``: share where the vote is the target;
    - ``vote_gap``: mean V[vote] − V[model's digit] over the positions where the two disagree;
    - ``adversarial_vote_agreement`` / ``adversarial_argmax_agreement`` / ``adversarial_accuracy``:
      the same over adversarial positions only (NaN when a point has none);
    - ``pearson``, ``slope``: correlation and least-squares slope of the logit margin λ on the vote
      margin μ over all positions.
    """
    cols = np.asarray(columns, dtype=np.float64)
    if cols.ndim != 3 or cols.shape[2] != len(READOUT_COLUMNS):
        raise ValueError(
            f"columns must be [sequence, point, {len(READOUT_COLUMNS)}] readout sums, got {cols.shape}"
        )
    n_seq, n_points, _ = cols.shape
    c = {name: cols[:, :, k] for k, name in enumerate(READOUT_COLUMNS)}
    if counts is None:
        positions = np.full((n_seq, n_points), float(seq_len))
    else:
        per_unit = np.asarray(counts, dtype=np.float64)
        if per_unit.shape != (n_seq,):
            raise ValueError(f"counts must be [{n_seq}] sequences per unit, got {per_unit.shape}")
        positions = np.repeat(per_unit[:, None] * float(seq_len), n_points, 1)
    ratios = {
        "vote_agreement": (c["vote_agree"], positions),
        "argmax_agreement": (c["argmax_agree"], positions),
        "vote_accuracy": (c["vote_right"], positions),
        "vote_gap": (c["vote_gap"], positions - c["vote_agree"]),
        "adversarial_vote_agreement": (c["adversarial_vote_agree"], c["adversarial"]),
        "adversarial_argmax_agreement": (c["adversarial_argmax_agree"], c["adversarial"]),
        "adversarial_accuracy": (c["adversarial_correct"], c["adversarial"]),
    }
    names = list(ratios)
    num = np.hstack([ratios[k][0] for k in names])
    den = np.hstack([ratios[k][1] for k in names])
    moments = cols[:, :, READOUT_COLUMNS.index("m_vote") :].reshape(n_seq, -1) / seq_len
    m_den = None if counts is None else np.broadcast_to(per_unit[:, None], moments.shape)
    (r_point, r_reps), (m_point, m_reps) = bootstrap_distributions(
        [(num, den), (moments, m_den)], resamples, seed
    )
    low, high = percentile_interval(r_reps, confidence)
    # Agreements and accuracies are proportions of positions: Clopper–Pearson at the effective number of
    # trials (≤ N positions per sequence), exact at 0 and 1 (interp.proportions); vote_gap percentile.
    sequences = n_seq if counts is None else int(round(float(per_unit.sum())))
    share = np.array([name != "vote_gap" for name in names]).repeat(n_points)
    low[share], high[share] = proportion_interval(
        r_point[share], r_reps[:, share], sequences, seq_len, confidence
    )
    out: dict[str, list[Estimate]] = {}
    for k, name in enumerate(names):
        part = slice(k * n_points, (k + 1) * n_points)
        out[name] = [
            Estimate(float(m), float(lo), float(hi))
            for m, lo, hi in zip(r_point[part], low[part], high[part])
        ]
    shape = (n_points, 5)
    r_pt, s_pt, _ = pearson_from_moments(m_point.reshape(shape), 1.0)
    r_rep, s_rep, _ = pearson_from_moments(m_reps.reshape(-1, *shape), 1.0)
    for name, point, reps in (("pearson", r_pt, r_rep), ("slope", s_pt, s_rep)):
        lo, hi = percentile_interval(reps, confidence)
        out[name] = [Estimate(float(m), float(a), float(b)) for m, a, b in zip(point, lo, hi)]
    return out


def margin_bins(edges: Sequence[float]) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """A sweep statistic: per sequence and point, the number of positions whose vote margin μ falls in
    each bin [e_k, e_{k+1}) of ``edges`` (the last bin closed) and the sum of their logit margins λ,
    ``[point, batch, 2 · bins]`` (counts first): the binned curve of λ against μ, with the mean λ of a
    bin a ratio of sums that the bootstrap can resample. Margins outside the edges are not counted."""
    e = torch.as_tensor(list(edges), dtype=torch.float64)
    if e.ndim != 1 or len(e) < 2 or not bool((e.diff() > 0).all()):
        raise ValueError(f"edges must be at least two increasing numbers, got {list(edges)}")
    bins = len(e) - 1

    def statistic(
        patterns: Tensor, tokens: Tensor, logits: Tensor, margins: tuple[Tensor, ...] | None = None
    ) -> Tensor:
        _, _, _, mu, lam = margins or _margins(patterns, tokens, logits)
        index = torch.bucketize(mu, e.to(mu.device), right=True) - 1
        index = torch.where(mu == e[-1], bins - 1, index)  # the last bin is closed
        inside = ((index >= 0) & (index < bins)).double()
        index = index.clamp(0, bins - 1)
        counts = mu.new_zeros(*mu.shape[:2], bins).scatter_add_(-1, index, inside)
        sums = mu.new_zeros(*mu.shape[:2], bins).scatter_add_(-1, index, inside * lam)
        return torch.cat([counts, sums], -1)

    return statistic


def readout_statistic(
    radius: int = 2, edges: Sequence[float] | None = None
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """One sweep statistic for :func:`readout_columns` and, with ``edges``, :func:`margin_bins` side by
    side, ``[point, batch, 13 (+ 2 · bins)]``: the votes and margins are computed once for both."""
    radius = as_int(radius, "radius", minimum=1)
    bins = None if edges is None else margin_bins(edges)

    def statistic(patterns: Tensor, tokens: Tensor, logits: Tensor) -> Tensor:
        margins = _margins(patterns, tokens, logits)
        columns = readout_columns(patterns, tokens, logits, radius, margins)
        return columns if bins is None else torch.cat([columns, bins(patterns, tokens, logits, margins)], -1)

    return statistic
