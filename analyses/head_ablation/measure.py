"""``run``: every head ablation, pattern intervention and patching sweep on the same sequences."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.head_ablation.patching import patching_sweep
from analyses.head_ablation.result import ANALYSIS, STATS, ConditionResult, HeadAblationResult
from interp import baselines, outcomes, paired, patterns, stats
from interp.ablation import HEAD_METHODS, ablate_heads, head_means, replace_pattern
from interp.stats import UnitSums, bootstrap_distributions
from machine import processes
from models.encoder.data import make_reverse_data

TAUS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)
PERMUTATION_SEQUENCES = 1000  # sequences each random row permutation is evaluated on (see run)


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
@dataclass
class Sweep:
    """One condition over ``n`` sequences: accuracy, loss and logit difference summed per resampling
    unit (:class:`interp.stats.UnitSums`), and the per-sequence losses of the first ``MAX_UNITS``
    sequences (the Wilcoxon test's sample): memory independent of ``n``."""

    units: UnitSums
    first_losses: np.ndarray


def _sweep(
    model: Any, batches: Callable[[], Iterator[torch.Tensor]], manager: AbstractContextManager, n: int
) -> Sweep:
    """Accuracy, loss and logit difference over the ``n`` sequences of ``batches``, inside ``manager``."""
    units, losses, kept = UnitSums(n), [], 0
    with manager:
        for tokens in batches():
            # offset 0 only: the other copy offsets of interp.outcomes are not reported here
            outcome = outcomes.sequence_outcomes(model(tokens), tokens, offsets=(0,))
            units.add({k: outcome[k] for k in STATS})
            if kept < stats.MAX_UNITS:
                losses.append(outcome["loss"][: stats.MAX_UNITS - kept].cpu())
                kept += len(losses[-1])
    return Sweep(units, torch.cat(losses).numpy())


def _mean(sweep: Sweep, stat: str) -> float:
    """The mean of ``stat`` over the sweep's sequences."""
    sums = sweep.units.sums[stat].numpy()
    return float(sums.mean() if sweep.units.per_sequence else sums.sum() / sweep.units.num_sequences)


def _add(total: Sweep, sweep: Sweep) -> Sweep:
    """``total`` plus another sweep over the same sequences (the same units), in place."""
    for s in STATS:
        total.units.sums[s] += sweep.units.sums[s]
    total.first_losses += sweep.first_losses
    return total


def _divide(total: Sweep, count: int) -> Sweep:
    """The per-sequence mean of ``count`` sweeps summed by :func:`_add` (sums in order, then one
    division: the same numbers as ``np.mean`` over the stacked sweeps)."""
    for s in STATS:
        total.units.sums[s] /= count
    total.first_losses /= count
    return total


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 10_000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    permutations: int = 100,
    permutation_sequences: int = PERMUTATION_SEQUENCES,
    reference_sequences: int = 1000,
    taus: Sequence[float] = TAUS,
    patch_sequences: int = 200,
    patch_position: int | None = None,
    progress: bool = True,
) -> HeadAblationResult:
    """Run every head ablation and pattern intervention on the same sequences (same seed, same numbers).

    The random row permutations run on the first ``permutation_sequences`` of the ``num_sequences``
    sequences (all of them when it is larger): each permutation's accuracy is a mean over those, and
    the "permuted" condition is, per sequence, the mean over the permutations, paired with the clean
    run on the same sequences. ``progress=False`` hides the patching sweeps' progress bars.
    """
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    arguments.positive_ints(
        permutation_sequences=permutation_sequences,
        reference_sequences=reference_sequences,
        patch_sequences=patch_sequences,
    )
    arguments.non_negative_ints(permutations=permutations)
    one = arguments.sequence_bytes(cfg, seq_len)
    n_heads = cfg.n_layers * cfg.n_heads
    reference_sequences, patch_sequences, permutations = (
        int(n) for n in (reference_sequences, patch_sequences, permutations)
    )
    arguments.check_memory(
        "reference_sequences", reference_sequences, reference_sequences * one, "their forward pass"
    )
    arguments.check_memory(
        "patch_sequences", patch_sequences, 2 * patch_sequences * one, "clean and corrupted forward passes"
    )
    arguments.check_memory(
        "permutations", permutations, 16 * permutations * n_heads, "two numbers per permutation and head"
    )
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
    permuted_sequences = min(permutation_sequences, num_sequences)

    def batches(count: int = num_sequences) -> Iterator[torch.Tensor]:
        """The first ``count`` sequences of the stream (the same ones whatever ``count``)."""
        for tokens in token_batches(count, seq_len, cfg.d_vocab, seed, batch_size):
            yield tokens.to(device)

    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    fixed: dict[str, Sweep] = {}
    meta: dict[str, tuple[str, int | None, int | None, str]] = {"none": ("clean", None, None, "none")}

    def interventions() -> Any:
        """Every condition on all the sequences, and the patching sweep (this process)."""
        fixed["none"] = _sweep(model, batches, nullcontext(), num_sequences)
        means = head_means(model, batches())
        reference = make_reverse_data(reference_sequences, seq_len, cfg.d_vocab, seed=seed).to(device)
        for layer, head in heads:
            for method in HEAD_METHODS:
                name = f"{method}/L{layer}H{head}"
                manager = ablate_heads(
                    model, [(layer, head)], method, means=means, reference=reference, seed=seed
                )
                fixed[name] = _sweep(model, batches, manager, num_sequences)
                meta[name] = ("ablation", layer, head, method)
        if cfg.n_heads > 1:  # every head of a layer zeroed together: heads that cover for each other
            for layer in range(cfg.n_layers):
                together = [(layer, h) for h in range(cfg.n_heads)]
                manager = ablate_heads(model, together, "zero", means=means, reference=reference, seed=seed)
                fixed[f"joint/L{layer}"] = _sweep(model, batches, manager, num_sequences)
                meta[f"joint/L{layer}"] = ("joint", layer, None, "zero")
        for layer, head in heads:
            for kind, fn in fns.items():
                name = f"pattern/L{layer}H{head}/{kind}"
                fixed[name] = _sweep(model, batches, replace_pattern(model, layer, head, fn), num_sequences)
                meta[name] = ("pattern", layer, head, kind)
        clean = next(token_batches(patch_sequences, seq_len, cfg.d_vocab, seed, patch_sequences))
        return patching_sweep(
            model, clean.to(device), patch_position, seed, bootstrap_resamples, confidence, progress
        )

    def permuted() -> dict[str, np.ndarray]:
        """The random row permutations of every head (a second process, when there is one): per
        head, each permutation's accuracy and loss and the per-sequence mean over permutations."""
        out = {}
        for layer, head in heads:
            key, total, acc, loss = f"{layer}.{head}", None, [], []
            for k in range(permutations):  # one sweep at a time: memory independent of the count
                fn = partial(patterns.permute_rows, seed=permutation_seed(seed, k))
                manager = replace_pattern(model, layer, head, fn)
                run = _sweep(model, partial(batches, permuted_sequences), manager, permuted_sequences)
                acc.append(_mean(run, "accuracy"))
                loss.append(_mean(run, "loss"))
                total = run if total is None else _add(total, run)
            out[f"{key}/accuracy"], out[f"{key}/loss"] = np.array(acc), np.array(loss)
            if total is not None:
                total = _divide(total, permutations)
                out.update({f"{key}/sums/{s}": total.units.sums[s].numpy() for s in STATS})
                out[f"{key}/first_losses"] = total.first_losses
        return out

    with evaluating(model):
        sweep, perms = processes.split(interventions, permuted)
    # The conditions in the order of the tables: clean, ablations, then per head its patterns.
    table = {name: fixed[name] for name in fixed if meta[name][0] != "pattern"}
    perm_acc: dict[str, list[float]] = {}
    perm_loss: dict[str, list[float]] = {}
    for layer, head in heads:
        table.update(
            {f"pattern/L{layer}H{head}/{kind}": fixed[f"pattern/L{layer}H{head}/{kind}"] for kind in fns}
        )
        key = f"{layer}.{head}"
        perm_acc[key] = [float(v) for v in perms[f"{key}/accuracy"]]
        perm_loss[key] = [float(v) for v in perms[f"{key}/loss"]]
        if f"{key}/first_losses" in perms:
            name = f"pattern/L{layer}H{head}/permuted"
            sums = {s: perms[f"{key}/sums/{s}"] for s in STATS}
            table[name] = Sweep(UnitSums.filled(permuted_sequences, sums), perms[f"{key}/first_losses"])
            meta[name] = ("pattern", layer, head, "permuted")

    cleans = {num_sequences: table["none"]}
    if permuted_sequences < num_sequences and any(len(v) for v in perm_acc.values()):
        clean_units = table["none"].units
        if clean_units.per_sequence:  # the clean run's first sequences, as they are
            first = UnitSums(permuted_sequences)
            first.add({s: clean_units.sums[s][:permuted_sequences] for s in STATS})
            cleans[permuted_sequences] = Sweep(first, table["none"].first_losses[:permuted_sequences])
        else:  # blocks of other sizes: the clean run again, on the first sequences only
            with evaluating(model):
                cleans[permuted_sequences] = _sweep(
                    model, partial(batches, permuted_sequences), nullcontext(), permuted_sequences
                )
    conditions = _summarise(table, cleans, meta, bootstrap_resamples, confidence, seed, seq_len)
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
        permutation_sequences=permuted_sequences,
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
    table: dict[str, Sweep],
    cleans: dict[int, Sweep],
    meta: dict[str, tuple[str, int | None, int | None, str]],
    resamples: int,
    confidence: float,
    seed: int,
    seq_len: int,
) -> dict[str, ConditionResult]:
    """Means and paired deltas with CIs, Wilcoxon tests, Holm. Accuracy (a proportion of the
    ``seq_len`` positions of each sequence) gets Clopper–Pearson at the effective number of trials,
    exact at 0 and 1 (``interp.proportions``); the other columns percentile intervals.

    Each condition's per-sequence values and their differences from the clean run on the same
    sequences (the first n of them) are bootstrapped over the same resamples of those n sequences
    (seed ``[seed, 1]``; blocks of sequences beyond ``MAX_UNITS``, as sums per unit): conditions of
    equal n share one set of resample counts, which gives the same numbers as resampling each
    condition on its own and costs one draw instead of one per condition. The Wilcoxon test ranks
    per-sequence losses, so it runs on the first ``MAX_UNITS`` sequences (all of them up to that many).
    """
    columns = {}
    for name, sweep in table.items():
        values, clean = sweep.units.sums, cleans[sweep.units.num_sequences].units.sums
        stacked = [values[s] for s in STATS] + [values[s] - clean[s] for s in STATS]
        columns[name] = np.stack([v.numpy() for v in stacked], 1)
    found: dict[str, np.ndarray] = {}
    for n in sorted({sweep.units.num_sequences for sweep in table.values()}):
        names = [name for name, sweep in table.items() if sweep.units.num_sequences == n]
        units = table[names[0]].units
        counts = None if units.per_sequence else np.repeat(units.counts.numpy()[:, None], 2 * len(STATS), 1)
        drawn = bootstrap_distributions(
            [(columns[name], counts) for name in names], resamples, seed=[seed, 1]
        )
        for name, (point, reps) in zip(names, drawn):
            found[name] = estimates(point, reps, confidence)
            found[name][0] = estimates(point[:1], reps[:, :1], confidence, sequences=n, trials=seq_len)[0]
    out: dict[str, ConditionResult] = {}
    clean_losses = table["none"].first_losses
    for name, sweep in table.items():
        kind, layer, head, method = meta[name]
        # On the first MAX_UNITS sequences (all of them up to that many): ranks need every value.
        test = paired.wilcoxon_signed_rank(sweep.first_losses, clean_losses) if kind == "ablation" else None
        out[name] = ConditionResult(name, kind, layer, head, method, *found[name], wilcoxon=test)
    tested = [c for c in out.values() if c.wilcoxon is not None]
    if tested:
        for c, p in zip(tested, paired.holm(np.array([c.wilcoxon.pvalue for c in tested]))):
            c.p_holm = float(p)
    return out
