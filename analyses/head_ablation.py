"""Which heads does the reversal need, and does it need *their attention pattern*?

1. Head ablations: every (layer, head) × {zero, mean over the dataset, resample from other sequences}
   of ``blocks.l.attn.hook_z`` (:func:`interp.ablation.ablate_heads`). Δaccuracy, Δloss and Δlogit
   difference (correct logit − best other) against the clean run, with paired 95% bootstrap CIs, and a
   Wilcoxon signed-rank test on per-sequence loss, Holm-corrected across heads × methods.
2. Pattern interventions on ``hook_pattern`` (:mod:`interp.patterns`): the perfect flip (one-hot at
   N−1−i), the flip shifted by ±1, uniform, ``permutations`` random row permutations (Jain & Wallace's
   "attention is not explanation" test: same weights, other keys) and temperatures τ.
3. Activation patching with ``transformer_lens.patching`` (see :mod:`analyses.head_patching`).

Python: ``result = run(model)``; ``write_outputs(result, "out/heads")``.
CLI:    ``python -m analyses.head_ablation [--checkpoint PATH] [--out DIR] ...`` (see ``--help``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses import command, common
from analyses.head_ablation_result import (  # noqa: F401  (re-exported)
    ANALYSIS,
    CSV_FIELDS,
    SCHEMA_VERSION,
    STATS,
    ConditionResult,
    HeadAblationResult,
    spread,
)
from analyses.head_patching import patching_sweep
from interp import baselines, outcomes, paired, patterns
from interp.ablation import HEAD_METHODS, ablate_heads, head_means, replace_pattern
from interp.stats import Estimate, bootstrap_distribution, percentile_interval
from models.data import make_reverse_data

DEFAULT_OUT = Path("out") / ANALYSIS
TAUS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)


def pattern_functions(taus: Sequence[float] = TAUS) -> dict[str, Callable]:
    """The fixed pattern interventions by name (permutations are added separately)."""
    out: dict[str, Callable] = {
        "flip": patterns.flip,
        "flip+1": partial(patterns.flip, shift=1),
        "flip-1": partial(patterns.flip, shift=-1),
        "uniform": patterns.uniform,
    }
    out.update({f"tau_{t:g}": partial(patterns.temperature, tau=float(t)) for t in taus})
    return out


def permutation_seed(seed: int, k: int) -> int:
    """Generator seed of row permutation k in a run with ``seed`` (distinct for k < 10⁶)."""
    return seed * 1_000_000 + k


# --- the analysis ---------------------------------------------------------------------------------
def _sweep(
    model: Any, batches: Callable[[], Iterator[torch.Tensor]], manager: AbstractContextManager
) -> dict[str, np.ndarray]:
    """Per-sequence accuracy, loss and logit difference over all batches, inside ``manager``."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in STATS}
    with manager:
        for tokens in batches():
            stats = outcomes.sequence_outcomes(model(tokens), tokens)
            for k in STATS:
                parts[k].append(stats[k].cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


@command.records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 10_000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    permutations: int = 100,
    reference_sequences: int = 1000,
    taus: Sequence[float] = TAUS,
    patch_sequences: int = 200,
    patch_position: int | None = None,
) -> HeadAblationResult:
    """Run every head ablation and pattern intervention on the same sequences (same seed, same numbers)."""
    cfg = model.cfg
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    for name, value in (
        ("num_sequences", num_sequences),
        ("seq_len", seq_len),
        ("batch_size", batch_size),
        ("reference_sequences", reference_sequences),
        ("patch_sequences", patch_sequences),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("seed", seed), ("permutations", permutations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    common.check_seq_len(cfg, seq_len)
    if patch_position is not None and (
        isinstance(patch_position, bool)
        or not isinstance(patch_position, int)
        or not 0 <= patch_position < seq_len
    ):
        raise ValueError(f"patch position must be an integer in 0..{seq_len - 1}, got {patch_position!r}")
    for t in taus:
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise ValueError(f"temperatures must be positive numbers, got {t!r}")
    fns = pattern_functions(taus)
    device = next(model.parameters()).device

    def batches() -> Iterator[torch.Tensor]:
        for tokens in common.token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size):
            yield tokens.to(device)

    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    table: dict[str, dict[str, np.ndarray]] = {}
    meta: dict[str, tuple[str, int | None, int | None, str]] = {}
    perm_acc: dict[str, list[float]] = {}
    perm_loss: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            table["none"] = _sweep(model, batches, nullcontext())
            meta["none"] = ("clean", None, None, "none")
            means = head_means(model, batches())
            reference = make_reverse_data(reference_sequences, seq_len, cfg.d_vocab, seed=seed).to(device)
            for layer, head in heads:
                for method in HEAD_METHODS:
                    name = f"{method}/L{layer}H{head}"
                    manager = ablate_heads(
                        model, [(layer, head)], method, means=means, reference=reference, seed=seed
                    )
                    table[name] = _sweep(model, batches, manager)
                    meta[name] = ("ablation", layer, head, method)
            for layer, head in heads:
                for kind, fn in fns.items():
                    name = f"pattern/L{layer}H{head}/{kind}"
                    table[name] = _sweep(model, batches, replace_pattern(model, layer, head, fn))
                    meta[name] = ("pattern", layer, head, kind)
                key, runs = f"{layer}.{head}", []
                for k in range(permutations):
                    fn = partial(patterns.permute_rows, seed=permutation_seed(seed, k))
                    runs.append(_sweep(model, batches, replace_pattern(model, layer, head, fn)))
                perm_acc[key] = [float(r["accuracy"].mean()) for r in runs]
                perm_loss[key] = [float(r["loss"].mean()) for r in runs]
                if runs:
                    name = f"pattern/L{layer}H{head}/permuted"
                    table[name] = {s: np.mean([r[s] for r in runs], axis=0) for s in STATS}
                    meta[name] = ("pattern", layer, head, "permuted")
            clean = next(common.token_batches(patch_sequences, seq_len, cfg.d_vocab, seed, patch_sequences))
            sweep = patching_sweep(
                model, clean.to(device), patch_position, seed, bootstrap_resamples, confidence
            )
    finally:
        model.train(was_training)

    conditions = _summarise(table, meta, bootstrap_resamples, confidence, seed)
    ceiling = (
        float(baselines.no_position_ceiling(seq_len, cfg.d_vocab).accuracy)
        if seq_len <= 32
        else baselines.no_position_ceiling_monte_carlo(seq_len, cfg.d_vocab, seed=seed).mean
    )
    return HeadAblationResult(
        num_sequences=num_sequences,
        seq_len=seq_len,
        num_categories=cfg.d_vocab,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        reference_sequences=reference_sequences,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        conditions=conditions,
        permutation_accuracy=perm_acc,
        permutation_loss=perm_loss,
        patching=sweep,
        no_position_accuracy=ceiling,
        config=cfg.to_dict(),
    )


def _summarise(
    table: dict[str, dict[str, np.ndarray]],
    meta: dict[str, tuple[str, int | None, int | None, str]],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, ConditionResult]:
    """Means and paired deltas with CIs (one shared set of resamples), Wilcoxon tests, Holm."""
    clean = table["none"]
    out: dict[str, ConditionResult] = {}
    for name, values in table.items():
        columns = [values[s] for s in STATS] + [values[s] - clean[s] for s in STATS]
        point, reps = bootstrap_distribution(np.stack(columns, 1), resamples=resamples, seed=[seed, 1])
        low, high = percentile_interval(reps, confidence)
        est = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
        kind, layer, head, method = meta[name]
        test = paired.wilcoxon_signed_rank(values["loss"], clean["loss"]) if kind == "ablation" else None
        out[name] = ConditionResult(name, kind, layer, head, method, *est, wilcoxon=test)
    tested = [c for c in out.values() if c.wilcoxon is not None]
    if tested:
        for c, p in zip(tested, paired.holm(np.array([c.wilcoxon.pvalue for c in tested]))):
            c.p_holm = float(p)
    return out


# --- outputs --------------------------------------------------------------------------------------
OUTPUTS = command.Outputs(ANALYSIS, CSV_FIELDS, figures="analyses.head_ablation_figures")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write


def summary_table(result: HeadAblationResult) -> str:
    def fmt(e: Estimate) -> str:
        return f"{e.mean:+.3f} [{e.ci_low:+.3f}, {e.ci_high:+.3f}]"

    clean = result.conditions["none"]
    lines = [
        f"head ablation: {result.num_sequences:,} sequences; clean accuracy {clean.accuracy.mean:.4f}, "
        f"loss {clean.loss.mean:.4f}; chance {result.chance:.3f}",
        f"{'condition':<26} {'Δ accuracy':<26} {'Δ loss':<26} {'p (Holm)'}",
    ]
    for name, c in result.conditions.items():
        if c.kind == "clean":
            continue
        p = "" if c.p_holm is None else "< 1e-300" if c.p_holm == 0 else f"{c.p_holm:.2g}"
        lines.append(f"{name:<26} {fmt(c.delta_accuracy):<26} {fmt(c.delta_loss):<26} {p}")
    for key, acc in result.permutation_accuracy.items():
        if acc:
            s = spread(acc)
            lines.append(
                f"head {key}: {len(acc)} row permutations, accuracy min {s['min']:.3f} "
                f"median {s['median']:.3f} max {s['max']:.3f}"
            )
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------
def build_parser() -> common.ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Ablate every attention head (zero / mean / resample), intervene on its pattern and run "
        "activation patching; effects with bootstrap CIs and Holm-corrected Wilcoxon tests.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
    )
    p.add_argument(
        "--permutations", type=common.non_negative_int, default=100, help="random row permutations"
    )
    p.add_argument(
        "--reference-sequences",
        type=common.positive_int,
        default=1000,
        help="other sequences that resample ablation draws from",
    )
    p.add_argument("--patch-sequences", type=common.positive_int, default=200)
    p.add_argument(
        "--patch-position",
        type=common.non_negative_int,
        help="input position the patching corruption changes (default N//4)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        run,
        outputs=OUTPUTS,
        summary=summary_table,
        flags=("permutations", "reference_sequences", "patch_sequences", "patch_position"),
    )


if __name__ == "__main__":
    sys.exit(main())
