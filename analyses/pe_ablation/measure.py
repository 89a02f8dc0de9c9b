"""``run``: the model under every positional-encoding condition, on the same sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.pe_ablation.result import (
    ANALYSIS,
    COLUMNS,
    OFFSETS,
    Condition,
    ConditionResult,
    PEAblationResult,
)
from interp import baselines, metrics, outcomes
from interp import stats as interp_stats
from interp.ablation import ablate_positional_encoding, num_bands
from interp.stats import UnitSums, bootstrap_distributions
from machine import processes

ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SHIFTS: tuple[int, ...] = (1, -1)
EXACT_CEILING_MAX_LEN = 32  # partitions of N stay few (8,349 for N = 32); beyond, Monte Carlo only


def build_conditions(model: Any, alphas: Sequence[float] = ALPHAS, shuffle_seeds: int = 5) -> list[Condition]:
    """Every condition of the analysis, ``none`` first; bands only for sinusoidal encodings."""
    out = [
        Condition("none", "none", "none"),
        Condition("zero", "zero", "zero (no PE)", "zero"),
        Condition("mean", "mean", "mean over positions", "mean"),
    ]
    out += [
        Condition(f"shuffle_s{s}", "shuffle", f"shuffle s{s}", "shuffle", {"seed": s})
        for s in range(shuffle_seeds)
    ]
    out += [Condition(f"shift_{k:+d}", "shift", f"shift {k:+d}", "shift", {"shift": k}) for k in SHIFTS]
    out.append(Condition("mirror", "mirror", "mirror", "mirror"))
    out += [Condition(f"scale_{a:g}", "scale", f"α = {a:g}", "scale", {"alpha": float(a)}) for a in alphas]
    if model.cfg.positional_embedding == "sinusoidal":
        bands = range(num_bands(model.cfg.d_model))
        out += [Condition(f"band_{k}", "band", f"band {k}", "remove_band", {"band": k}) for k in bands]
    return out


# --- the analysis ---------------------------------------------------------------------------------
def _evaluate(model: Any, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    stats = outcomes.sequence_outcomes(logits, tokens, OFFSETS)
    flip = torch.stack([metrics.flip_mass(cache[h]).mean(-1) for h in hooks], dim=1)  # [batch, layer, head]
    return {
        "accuracy": stats["accuracy"],
        "loss": stats["loss"],
        "logit_diff": stats["logit_diff"],
        "correct": stats["correct"],
        "offset": stats["offset_hits"] / stats["offset_valid"].clamp(min=1),
        "flip_mass": flip.flatten(1).double(),
    }


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 10_000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    alphas: Sequence[float] = ALPHAS,
    shuffle_seeds: int = 5,
    monte_carlo_sequences: int = 100_000,
) -> PEAblationResult:
    """Evaluate every condition on the same ``num_sequences`` random sequences (same seed, same numbers)."""
    cfg = model.cfg
    if cfg.positional_embedding == "none":
        raise ValueError("the model has no positional encoding to ablate (positional_embedding='none')")
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    arguments.positive_ints(monte_carlo_sequences=monte_carlo_sequences)
    arguments.non_negative_ints(shuffle_seeds=shuffle_seeds)
    # Per condition: sums per resampling unit and the bootstrap's replicates of every column.
    columns = len(COLUMNS) + seq_len + len(OFFSETS) + cfg.n_layers * cfg.n_heads
    per_condition = (
        8 * columns * (min(int(num_sequences), interp_stats.MAX_UNITS) + 2 * int(bootstrap_resamples))
    )
    fixed = len(build_conditions(model, alphas, 0)) + 1
    arguments.check_memory(
        "shuffle_seeds", shuffle_seeds, (fixed + int(shuffle_seeds)) * per_condition, "one condition per seed"
    )
    conditions = build_conditions(model, alphas, shuffle_seeds)
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    # Each condition's row of per-sequence statistics, summed per resampling unit (memory independent
    # of num_sequences: interp.stats.UnitSums). Two groups of conditions, the second computed by a
    # second process when there is one (machine.processes.split: the same bits either way);
    # this process also computes the no-position baselines, about four conditions' worth of work.
    here, there = _groups(conditions, spare=4)

    def measure(group: list[Condition]) -> UnitSums:
        units = UnitSums(num_sequences)
        with evaluating(model):
            for tokens in token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size):
                units.add(_rows(model, tokens.to(device), group, hooks))
        return units

    def ceilings() -> tuple[Any, Any]:
        exact = (
            baselines.no_position_ceiling(seq_len, cfg.d_vocab) if seq_len <= EXACT_CEILING_MAX_LEN else None
        )
        mc = baselines.no_position_ceiling_monte_carlo(
            seq_len,
            cfg.d_vocab,
            monte_carlo_sequences,
            seed=seed,
            resamples=bootstrap_resamples,
            confidence=confidence,
        )
        return exact, mc

    def replicates(group: list[Condition], units: UnitSums) -> dict[str, Any]:
        """Point estimates and bootstrap replicates of the group's conditions (the mean of the
        shuffles too, if they are here): every process draws the same resample counts (stream
        [seed, 1]), so this is, table by table, the one draw for all conditions of _summarise."""
        names = [c.name for c in group] + (["shuffle"] if "shuffle" in units.sums else [])
        tables = [units.table(name) for name in names]
        return dict(zip(names, bootstrap_distributions(tables, bootstrap_resamples, seed=[seed, 1])))

    def theirs() -> dict[str, np.ndarray]:
        drawn = replicates(there[1:], measure(there))  # "none" is drawn here
        return {
            f"{name}/{part}": v for name, pair in drawn.items() for part, v in zip(("point", "reps"), pair)
        }

    if there:
        (units, (exact, mc)), arrays = processes.split(lambda: (measure(here), ceilings()), theirs)
    else:
        (units, (exact, mc)), arrays = (measure(here), ceilings()), {}
    drawn = replicates(here, units)
    drawn.update({c.name: (arrays[f"{c.name}/point"], arrays[f"{c.name}/reps"]) for c in there[1:]})
    if shuffle_seeds:
        conditions.append(Condition("shuffle", "shuffle_mean", f"shuffle (mean of {shuffle_seeds})"))
    results = _summarise(conditions, drawn, cfg, confidence, num_sequences)
    d = cfg.d_model
    return PEAblationResult(
        num_sequences=num_sequences,
        seq_len=seq_len,
        num_categories=cfg.d_vocab,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        conditions=results,
        ceiling=exact,
        ceiling_monte_carlo=mc,
        monte_carlo_sequences=monte_carlo_sequences,
        band_wavelengths=[2 * math.pi * 10000.0 ** (2 * k / d) for k in range(num_bands(d))],
        config=cfg.to_dict(),
    )


def _groups(conditions: list[Condition], spare: int = 0) -> tuple[list[Condition], list[Condition]]:
    """Two groups of about the same size, the first ``spare`` conditions smaller, each starting with
    ``none`` (every row's deltas need it); the shuffles stay together in the first (their mean is a
    column of its own). The second is empty when there is too little to share."""
    none, rest = conditions[:1], conditions[1:]
    first = [c for c in rest if c.family == "shuffle"]
    others = [c for c in rest if c.family != "shuffle"]
    take = max(0, (len(rest) + 1 - spare) // 2 - len(first))
    if take >= len(others):  # too few to share
        return conditions, []
    return none + first + others[:take], none + others[take:]


def _rows(model: Any, tokens: torch.Tensor, group: list[Condition], hooks: list[str]) -> dict[str, Any]:
    """Every condition's per-sequence statistics on one batch (and the shuffles' mean, if any)."""
    columns: dict[str, dict[str, np.ndarray]] = {}
    for c in group:
        method, parameters = c.method, c.parameters
        with nullcontext() if method is None else ablate_positional_encoding(model, method, **parameters):
            stats = _evaluate(model, tokens, hooks)
        columns[c.name] = {k: v.to("cpu", torch.float64).numpy() for k, v in stats.items()}
    shuffled = [columns[c.name] for c in group if c.family == "shuffle"]
    if shuffled:  # the average over the permutations, per sequence
        columns["shuffle"] = {k: np.mean([s[k] for s in shuffled], axis=0) for k in shuffled[0]}
    return {name: _row(column, columns["none"]) for name, column in columns.items()}


def _row(col: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> np.ndarray:
    """One condition's per-sequence statistics ``[batch, k]`` (the order ``_summarise`` reads)."""
    return np.hstack(
        [
            col["accuracy"][:, None],
            col["loss"][:, None],
            col["logit_diff"][:, None],
            (col["accuracy"] - base["accuracy"])[:, None],
            (col["loss"] - base["loss"])[:, None],
            col["correct"],
            col["offset"],
            col["flip_mass"],
        ]
    )


def _summarise(
    conditions: list[Condition],
    drawn: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: Any,
    confidence: float,
    num_sequences: int,
) -> dict[str, ConditionResult]:
    """Every column of every condition with its CI, from its point estimates and bootstrap replicates.

    Proportions (accuracy over the N positions, per-position accuracy, offset matches over the N − |d|
    queries with a key at offset d) get Clopper–Pearson at the effective number of trials, exact at 0
    and 1 (``interp.proportions``); losses, logit differences, changes and flip masses percentile ones.

    The replicates of all conditions come from one shared set of resamples of the sequences: the
    resampling stream ``[seed, 1]`` is distinct from the data stream ``[seed, block]``, and its counts
    are the same for every condition (``interp.stats.bootstrap_distributions``), which gives the same
    numbers as drawing them again per condition, so differences between conditions stay paired.
    """
    heads = [f"{layer}.{head}" for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    n_pos = len(drawn["none"][0]) - len(COLUMNS) - len(OFFSETS) - len(heads)
    out = {}
    k = len(COLUMNS)
    # trials per sequence of each proportion column (accuracy, per-position accuracy, offset matches)
    proportion = {0: n_pos} | {k + i: 1 for i in range(n_pos)}
    proportion |= {k + n_pos + j: t for j, t in enumerate(metrics.offset_query_counts(n_pos, OFFSETS))}
    cols = np.array(sorted(proportion))
    for c in conditions:
        point, reps = drawn[c.name]
        est = list(estimates(point, reps, confidence))
        exact = estimates(
            point[cols],
            reps[:, cols],
            confidence,
            sequences=num_sequences,
            trials=[proportion[i] for i in cols],
        )
        for i, e in zip(cols, exact):
            est[i] = e
        out[c.name] = ConditionResult(
            c,
            *est[:k],
            per_position_accuracy=est[k : k + n_pos],
            offset_match=dict(zip(OFFSETS, est[k + n_pos : k + n_pos + len(OFFSETS)])),
            flip_mass=dict(zip(heads, est[k + n_pos + len(OFFSETS) :])),
        )
    return out
