"""Does a model trained on sequences of length N_train reverse sequences of another length N′?

For each evaluation length N′ (default 8, 12, 16, 20, 24, 32) this analysis streams random sequences
of length N′ through the model and measures accuracy (per digit, per sequence, per position) and,
for every attention head, *which* key query i reads:

- the **task key** N′ − 1 − i, the position the reverse task needs at this length, or
- the **learned key** N_train − 1 − i (15 − i for the tutorial), the absolute position the model
  was trained to read — it exists only for the queries with 0 ≤ N_train − 1 − i < N′.

Both as attention mass (mean over queries, per sequence), the task mass also on exactly the queries
where the learned key exists, and their paired difference; plus the share of predictions that copy
t[N_train − 1 − i]. Every mean carries a 95% percentile-bootstrap CI over whole sequences.

A learned positional encoding has rows for positions 0..N_train − 1 only (and the sinusoidal table
``pe_max_len``): longer lengths are skipped with the reason recorded, not run.

Python: ``result = run(model, lengths=(8, 16, 24))``; ``write_outputs(result, "out/lengths")``.
CLI:    ``python -m analyses.length_generalisation [--checkpoint PATH] [--lengths 8,12,16] ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analyses import command, common
from analyses.length_generalisation_measures import (  # noqa: F401  (re-exported)
    check_lengths,
    learned_flip_keys,
    length_statistics,
    nothing_to_run_message,
    plan_lengths,
    preference,
    skipped_message,
)
from analyses.length_generalisation_result import (  # noqa: F401  (re-exported)
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_LENGTHS,
    DEFAULT_OUT,
    HEAD_FIELDS,
    NAN,
    PREFERENCES,
    SCHEMA_VERSION,
    HeadAtLength,
    LengthGeneralisationResult,
    LengthResult,
    SkippedLength,
)
from interp.stats import Estimate, bootstrap_distribution, percentile_interval


# --- the analysis ---------------------------------------------------------------------------------
@command.records_source(ANALYSIS)
def run(
    model: Any,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    num_sequences: int = 10_000,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    train_length: int | None = None,
) -> LengthGeneralisationResult:
    """Evaluate ``model`` at every length it can run; ``train_length`` defaults to ``model.cfg.n_ctx``.

    Lengths beyond the positional encoding are recorded in ``result.skipped``; if none can run,
    ``ValueError``. Memory is constant in ``num_sequences`` apart from a few numbers per sequence.
    Same arguments, same numbers.
    """
    cfg = model.cfg
    train_length = cfg.n_ctx if train_length is None else train_length
    for name, value in (
        ("num_sequences", num_sequences),
        ("batch_size", batch_size),
        ("bootstrap_resamples", bootstrap_resamples),
        ("train_length", train_length),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    usable, skipped = plan_lengths(cfg, lengths)
    if not usable:
        raise ValueError(nothing_to_run_message(cfg, lengths))

    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    # float64 statistics: MPS has no float64, so they are computed on the CPU there.
    stats_device = torch.device("cpu") if device.type == "mps" else device
    results = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for n in usable:
                columns: dict[str, list[Tensor]] = {}
                pattern_sum = torch.zeros(cfg.n_layers, cfg.n_heads, n, n, dtype=torch.float64)
                for tokens in common.token_batches(num_sequences, n, cfg.d_vocab, seed, batch_size):
                    logits, cache = model.run_with_cache(tokens.to(device), names_filter=hooks)
                    patterns = torch.stack([cache[h] for h in hooks], dim=1).to(stats_device)
                    stats = length_statistics(
                        logits.to(stats_device), patterns, tokens.to(stats_device), train_length
                    )
                    for key, value in stats.items():
                        columns.setdefault(key, []).append(value.to("cpu"))
                    pattern_sum += patterns.to("cpu", torch.float64).sum(0)
                table = {key: torch.cat(parts).numpy() for key, parts in columns.items()}
                mean_pattern = pattern_sum.numpy() / num_sequences
                results.append(
                    _summarise(
                        n, table, mean_pattern, train_length, cfg, bootstrap_resamples, confidence, seed
                    )
                )
    finally:
        model.train(was_training)
    return LengthGeneralisationResult(
        train_length=train_length,
        num_categories=cfg.d_vocab,
        num_sequences=num_sequences,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        requested_lengths=check_lengths(lengths),
        lengths=results,
        skipped=skipped,
        config=cfg.to_dict(),
    )


def _summarise(
    n: int,
    table: dict[str, np.ndarray],
    mean_pattern: np.ndarray,
    train_length: int,
    cfg: Any,
    resamples: int,
    confidence: float,
    seed: int,
) -> LengthResult:
    """Bootstrap every per-sequence column of one length with one shared set of resamples."""
    _, valid = learned_flip_keys(n, train_length)
    shared = int(valid.sum())
    blocks = ["accuracy", "sequence_accuracy", "loss", "correct", "task_flip_mass"]
    if shared:  # the S-averages are NaN columns otherwise: report them as undefined instead
        blocks += ["learned_copy", "learned_flip_mass", "task_flip_mass_shared", "learned_minus_task"]
    parts = [table[name].reshape(len(table[name]), -1) for name in blocks]
    # Resampling stream [seed, 1, n]: distinct from the data streams [seed, block] and across lengths.
    point, reps = bootstrap_distribution(np.hstack(parts), resamples=resamples, seed=[seed, 1, n])
    low, high = percentile_interval(reps, confidence)
    flat = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
    est: dict[str, list[Estimate]] = {}
    start = 0
    for name, part in zip(blocks, parts):
        est[name] = flat[start : start + part.shape[1]]
        start += part.shape[1]
    n_heads = cfg.n_layers * cfg.n_heads
    for name in ("learned_copy", "learned_flip_mass", "task_flip_mass_shared", "learned_minus_task"):
        est.setdefault(name, [NAN] * n_heads)
    heads = []
    for k in range(n_heads):
        layer, head = divmod(k, cfg.n_heads)
        difference = est["learned_minus_task"][k]
        heads.append(
            HeadAtLength(
                layer=layer,
                head=head,
                task_flip_mass=est["task_flip_mass"][k],
                learned_flip_mass=est["learned_flip_mass"][k],
                task_flip_mass_shared=est["task_flip_mass_shared"][k],
                learned_minus_task=difference,
                preference=preference(difference, n, train_length, shared),
                mean_pattern=mean_pattern[layer, head],
            )
        )
    return LengthResult(
        length=n,
        learned_key_queries=shared,
        accuracy=est["accuracy"][0],
        sequence_accuracy=est["sequence_accuracy"][0],
        loss=est["loss"][0],
        per_position_accuracy=est["correct"],
        learned_copy_rate=est["learned_copy"][0],
        heads=heads,
    )


# --- outputs --------------------------------------------------------------------------------------
OUTPUTS = command.Outputs(ANALYSIS, CSV_FIELDS, figures="analyses.length_generalisation_figures")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write


def summary_table(result: LengthGeneralisationResult) -> str:
    """The text summary the CLI prints: one row per length (and head), mean [CI]."""

    def fmt(e: Estimate) -> str:
        return "n/a" if np.isnan(e.mean) else f"{e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"

    g = f"{result.train_length - 1}−i"
    lines = [
        f"length generalisation: trained at N = {result.train_length}; {result.num_sequences:,} sequences "
        f"per length; chance {result.chance:.3f}",
        f"{'N′':>4}  {'accuracy':<22} {'copies t[' + g + ']':<22} {'L.H':<4} "
        f"{'mass on N′−1−i':<22} {'mass on ' + g:<22} {'prefers'}",
    ]
    for r in result.lengths:
        for k, h in enumerate(r.heads):
            left = (
                f"{r.length:>4}  {fmt(r.accuracy):<22} {fmt(r.learned_copy_rate):<22}" if k == 0 else " " * 50
            )
            lines.append(
                f"{left} {f'{h.layer}.{h.head}':<4} {fmt(h.task_flip_mass):<22} "
                f"{fmt(h.learned_flip_mass):<22} {h.preference}"
            )
    for s in result.skipped:
        lines.append(f"{s.length:>4}  skipped: {s.reason}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------
def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    try:
        return check_lengths(values)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> common.ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Evaluate a model at other sequence lengths N′: accuracy, and whether query i attends to N′−1−i "
        "(the task) or to N_train−1−i (the position it learned), with bootstrap CIs.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
        seq_len=False,
        sequences_help="random sequences evaluated at each length",
    )
    p.add_argument(
        "--lengths",
        type=_lengths,
        default=list(DEFAULT_LENGTHS),
        help=f"evaluation lengths N′, comma-separated (default {','.join(map(str, DEFAULT_LENGTHS))})",
    )
    return p


def _run_from_cli(model: Any, lengths: Sequence[int], **kwargs: Any) -> LengthGeneralisationResult:
    """:func:`run`, after failing on ``--lengths`` of which none can run, or saying once on stderr
    which ones will be skipped."""
    usable, skipped = plan_lengths(model.cfg, lengths)
    if not usable:
        raise common.UserError(f"--{nothing_to_run_message(model.cfg, lengths)}")
    if skipped:
        print(skipped_message(model.cfg, skipped), file=sys.stderr)
    return run(model, lengths=lengths, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        _run_from_cli,
        outputs=OUTPUTS,
        summary=summary_table,
        flags=("lengths",),
        recorded=("lengths",),
    )


if __name__ == "__main__":
    sys.exit(main())
