"""Which positional information does the encoder use? Ablate the positional encoding and measure.

Conditions (each a transform of the encoding P added at ``hook_pos_embed``, see
:func:`interp.ablation.positional_transform`): ``none``; ``zero`` (the tutorial's
``add_positional_encoding=False``); ``mean`` over positions; ``shuffle_s<k>`` (a random permutation of
the rows, seed k) and their average ``shuffle``; ``shift_+1`` / ``shift_-1`` (position i gets PE(i ± 1));
``mirror`` (i gets PE(N − 1 − i)); ``scale_<α>`` (αP); ``band_<k>`` (sin/cos pair k removed). For each:
accuracy, loss, logit difference, per-position accuracy, the share of predictions equal to the token at
N − 1 − i + d (d = −2..2: which input the output copies), flip mass of every head, and the change
from ``none`` — means with 95% percentile-bootstrap CIs over sequences (one set of resamples for all,
so differences are paired).

Reference lines: chance 1/C and the best accuracy without positional information
(:mod:`interp.baselines`: exact sum over partitions, checked by Monte Carlo).

Python: ``result = run(model)``; ``write_outputs(result, "out/pe")``. CLI: ``python -m analyses.pe_ablation``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses import command, common
from analyses.pe_ablation_result import (  # noqa: F401  (re-exported)
    ANALYSIS,
    COLUMNS,
    CSV_FIELDS,
    OFFSETS,
    SCHEMA_VERSION,
    Condition,
    ConditionResult,
    PEAblationResult,
)
from interp import baselines, metrics, outcomes
from interp.ablation import ablate_positional_encoding, num_bands
from interp.stats import Estimate, bootstrap_distribution, percentile_interval

DEFAULT_OUT = Path("out") / ANALYSIS
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


@command.records_source(ANALYSIS)
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
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    for name, value in (
        ("num_sequences", num_sequences),
        ("seq_len", seq_len),
        ("batch_size", batch_size),
        ("monte_carlo_sequences", monte_carlo_sequences),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(shuffle_seeds, bool) or not isinstance(shuffle_seeds, int) or shuffle_seeds < 0:
        raise ValueError(f"shuffle_seeds must be a non-negative integer, got {shuffle_seeds!r}")
    if cfg.positional_embedding == "none":
        raise ValueError("the model has no positional encoding to ablate (positional_embedding='none')")
    common.check_seq_len(cfg, seq_len)
    conditions = build_conditions(model, alphas, shuffle_seeds)
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    table: dict[str, dict[str, list[torch.Tensor]]] = {c.name: {} for c in conditions}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for tokens in common.token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size):
                tokens = tokens.to(device)
                for c in conditions:
                    manager = (
                        nullcontext()
                        if c.method is None
                        else ablate_positional_encoding(model, c.method, **c.parameters)
                    )
                    with manager:
                        stats = _evaluate(model, tokens, hooks)
                    for key, value in stats.items():
                        table[c.name].setdefault(key, []).append(value.to("cpu", torch.float64))
    finally:
        model.train(was_training)
    columns = {c: {k: torch.cat(v).numpy() for k, v in parts.items()} for c, parts in table.items()}
    if shuffle_seeds:  # the average over the permutations, per sequence
        shuffled = [columns[c.name] for c in conditions if c.family == "shuffle"]
        columns["shuffle"] = {k: np.mean([s[k] for s in shuffled], axis=0) for k in shuffled[0]}
        conditions.append(Condition("shuffle", "shuffle_mean", f"shuffle (mean of {shuffle_seeds})"))
    results = _summarise(conditions, columns, cfg, bootstrap_resamples, confidence, seed)
    exact = baselines.no_position_ceiling(seq_len, cfg.d_vocab) if seq_len <= EXACT_CEILING_MAX_LEN else None
    mc = baselines.no_position_ceiling_monte_carlo(
        seq_len,
        cfg.d_vocab,
        monte_carlo_sequences,
        seed=seed,
        resamples=bootstrap_resamples,
        confidence=confidence,
    )
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


def _summarise(
    conditions: list[Condition],
    columns: dict[str, dict[str, np.ndarray]],
    cfg: Any,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, ConditionResult]:
    """Bootstrap every column of every condition with one shared set of resamples."""
    base = columns["none"]
    n_pos = base["correct"].shape[1]
    heads = [f"{layer}.{head}" for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    out = {}
    for c in conditions:
        col = columns[c.name]
        values = np.hstack(
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
        # Resampling stream distinct from the data stream (SeedSequence [seed, 1] vs [seed, block]).
        point, reps = bootstrap_distribution(values, resamples=resamples, seed=[seed, 1])
        low, high = percentile_interval(reps, confidence)
        est = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
        k = len(COLUMNS)
        out[c.name] = ConditionResult(
            c,
            *est[:k],
            per_position_accuracy=est[k : k + n_pos],
            offset_match=dict(zip(OFFSETS, est[k + n_pos : k + n_pos + len(OFFSETS)])),
            flip_mass=dict(zip(heads, est[k + n_pos + len(OFFSETS) :])),
        )
    return out


# --- outputs --------------------------------------------------------------------------------------
OUTPUTS = command.Outputs(ANALYSIS, CSV_FIELDS, figures="analyses.pe_ablation_figures")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write


def summary_table(result: PEAblationResult) -> str:
    def fmt(e: Estimate) -> str:
        return f"{e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"

    lines = [
        f"PE ablation: {result.num_sequences:,} sequences of length {result.seq_len}; "
        f"chance {result.chance:.3f}, no-position ceiling {result.ceiling_accuracy:.4f}",
        f"{'condition':<14} {'accuracy':<22} {'loss':<22} {'Δ accuracy':<24} {'copies t[N−1−i±1]'}",
    ]
    for name, r in result.conditions.items():
        if r.condition.family in ("band", "scale"):
            continue
        lines.append(
            f"{name:<14} {fmt(r.accuracy):<22} {fmt(r.loss):<22} {fmt(r.delta_accuracy):<24} "
            f"{r.offset_match[-1].mean:.3f} / {r.offset_match[1].mean:.3f}"
        )
    scale = ", ".join(
        f"{r.condition.parameters['alpha']:g}: {r.accuracy.mean:.3f}" for r in result.family("scale")
    )
    lines.append(f"accuracy by α: {scale}")
    bands = ", ".join(
        f"{r.condition.parameters['band']}: {r.accuracy.mean:.3f}" for r in result.family("band")
    )
    if bands:
        lines.append(f"accuracy without band k: {bands}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------
def _alphas(text: str) -> tuple[float, ...]:
    import argparse

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"each scale once, got {text!r}")
    return values


def build_parser() -> common.ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Ablate the positional encoding in many ways and measure accuracy, loss and flip mass with "
        "bootstrap CIs, against chance and the no-position ceiling.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
    )
    p.add_argument("--shuffle-seeds", type=common.non_negative_int, default=5, help="random permutations")
    p.add_argument("--alphas", type=_alphas, default=ALPHAS, help="PE scales, comma-separated")
    p.add_argument("--monte-carlo-sequences", type=common.positive_int, default=100_000)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        run,
        outputs=OUTPUTS,
        summary=summary_table,
        flags=("alphas", "shuffle_seeds", "monte_carlo_sequences"),
    )


if __name__ == "__main__":
    sys.exit(main())
