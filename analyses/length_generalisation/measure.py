"""``run``: the model at every evaluation length N′ it can run, and what it measures at one length.

For query i of a length-N′ sequence the *task key* is f(i) = N′ − 1 − i and the *learned key* is
g(i) = N_train − 1 − i, which exists only for the queries with 0 ≤ g(i) < N′ (none when
N′ ≤ N_train / 2; g = f when N′ = N_train). Statistics are reduced per sequence, the unit the
bootstrap resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.length_generalisation.lengths import check_lengths, nothing_to_run_message, plan_lengths
from analyses.length_generalisation.result import (
    ANALYSIS,
    DEFAULT_LENGTHS,
    NAN,
    HeadAtLength,
    LengthGeneralisationResult,
    LengthResult,
)
from interp import metrics
from interp.stats import Estimate, UnitSums, bootstrap_distribution


# --- metrics of this question ---------------------------------------------------------------------
def learned_flip_keys(
    n: int, train_length: int, device: torch.device | str | None = None
) -> tuple[Int[Tensor, " query"], Bool[Tensor, " query"]]:
    """Key g(i) = N_train − 1 − i for each query i of a length-n sequence, and whether it exists.

    g(i) exists when 0 ≤ g(i) < n; missing keys are clamped into range (so they can be gathered) and
    flagged False. For n = N_train, g is the task's flip f(i) = n − 1 − i; for n ≤ N_train / 2 no
    query has a learned key.
    """
    keys = train_length - 1 - torch.arange(n, device=device)
    valid = (keys >= 0) & (keys < n)
    return keys.clamp(0, n - 1), valid


def length_statistics(
    logits: Float[Tensor, "batch pos vocab"],
    patterns: Float[Tensor, "batch layer head query key"],
    tokens: Int[Tensor, "batch pos"],
    train_length: int,
) -> dict[str, Tensor]:
    """Per-sequence float64 statistics at one length N′ (the unit the bootstrap resamples).

    With S = {i : the learned key g(i) = N_train − 1 − i exists} and f(i) = N′ − 1 − i:

    - ``accuracy``, ``sequence_accuracy``, ``loss`` [batch]; ``correct`` [batch, pos] (0/1);
    - ``learned_copy`` [batch] = mean_{i∈S} [argmax ℓ_i = t_{g(i)}] (NaN when S is empty);
    - per head, [batch, layer·head]: ``task_flip_mass`` = mean_i A[i, f(i)],
      ``learned_flip_mass`` = mean_{i∈S} A[i, g(i)], ``task_flip_mass_shared`` = mean_{i∈S} A[i, f(i)],
      ``learned_minus_task`` = their difference (NaN when S is empty).
    """
    batch, n_layers, n_heads, n, _ = patterns.shape
    p = patterns.detach().to(torch.float64).reshape(batch, n_layers * n_heads, n, n)
    keys, valid = learned_flip_keys(n, train_length, p.device)
    shared = valid.to(torch.float64)
    count = shared.sum()  # |S|; 0 → every S-average below is 0/0 = NaN, as documented
    task = metrics.flip_mass(p)  # [batch, head, query]
    learned = p.gather(-1, keys.view(1, 1, n, 1).expand(batch, n_layers * n_heads, n, 1)).squeeze(-1)
    target = tokens.flip(-1)
    prediction = logits.argmax(-1)
    correct = (prediction == target).to(torch.float64)
    loss = F.cross_entropy(logits.detach().double().transpose(1, 2), target, reduction="none")
    copies = (prediction == tokens[:, keys]).to(torch.float64)
    return {
        "accuracy": correct.mean(-1),
        "sequence_accuracy": correct.min(-1).values,
        "loss": loss.mean(-1),
        "correct": correct,
        "learned_copy": (copies * shared).sum(-1) / count,
        "task_flip_mass": task.mean(-1),
        "learned_flip_mass": (learned * shared).sum(-1) / count,
        "task_flip_mass_shared": (task * shared).sum(-1) / count,
        "learned_minus_task": ((learned - task) * shared).sum(-1) / count,
    }


def preference(difference: Estimate, length: int, train_length: int, learned_key_queries: int) -> str:
    """Which key a head prefers at this length (a key of :data:`PREFERENCES`)."""
    if length == train_length:
        return "same_key"
    if learned_key_queries == 0:
        return "no_learned_key"
    if difference.ci_low > 0:
        return "learned"
    if difference.ci_high < 0:
        return "task"
    return "unclear"


# --- the analysis ---------------------------------------------------------------------------------
@records_source(ANALYSIS)
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
    ``ValueError``. Memory is independent of ``num_sequences`` (the statistics are summed per
    resampling unit: :class:`interp.stats.UnitSums`). Same arguments, same numbers.
    """
    cfg = model.cfg
    train_length = cfg.n_ctx if train_length is None else train_length
    arguments.positive_ints(
        num_sequences=num_sequences,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        train_length=train_length,
    )
    arguments.non_negative_ints(seed=seed)
    arguments.check_confidence(confidence)
    usable, skipped = plan_lengths(cfg, lengths)
    if not usable:
        raise ValueError(nothing_to_run_message(cfg, lengths))
    arguments.check_resamples(bootstrap_resamples, 2 + cfg.n_layers * cfg.n_heads)
    for n in usable:  # every length before any work (a model without encoding runs any length)
        arguments.check_sequences(cfg, n, "lengths")
        arguments.check_batch(cfg, n, batch_size, num_sequences)

    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    # float64 statistics: MPS has no float64, so they are computed on the CPU there.
    stats_device = torch.device("cpu") if device.type == "mps" else device
    results = []
    with evaluating(model):
        for n in usable:
            units = UnitSums(num_sequences)
            pattern_sum = torch.zeros(cfg.n_layers, cfg.n_heads, n, n, dtype=torch.float64)
            for tokens in token_batches(num_sequences, n, cfg.d_vocab, seed, batch_size):
                logits, cache = model.run_with_cache(tokens.to(device), names_filter=hooks)
                patterns = torch.stack([cache[h] for h in hooks], dim=1).to(stats_device)
                stats = length_statistics(
                    logits.to(stats_device), patterns, tokens.to(stats_device), train_length
                )
                units.add({key: value.to("cpu") for key, value in stats.items()})
                pattern_sum += patterns.to("cpu", torch.float64).sum(0)
            mean_pattern = pattern_sum.numpy() / num_sequences
            results.append(
                _summarise(n, units, mean_pattern, train_length, cfg, bootstrap_resamples, confidence, seed)
            )
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
    units: UnitSums,
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
    pairs = [units.table(name) for name in blocks]
    parts = [num.reshape(units.units, -1) for num, _ in pairs]
    dens = None if units.per_sequence else np.hstack([d.reshape(units.units, -1) for _, d in pairs])
    # Resampling stream [seed, 1, n]: distinct from the data streams [seed, block] and across lengths.
    point, reps = bootstrap_distribution(np.hstack(parts), dens, resamples=resamples, seed=[seed, 1, n])
    # Proportions (accuracy over the n positions, sequence accuracy, per-position accuracy, the learned
    # copy rate over the shared queries) get Clopper–Pearson at the effective number of trials, exact at
    # 0 and 1 (interp.proportions); losses and flip masses percentile intervals.
    trials_of = {"accuracy": n, "sequence_accuracy": 1, "correct": 1, "learned_copy": max(shared, 1)}
    flat = list(estimates(point, reps, confidence))
    est: dict[str, list[Estimate]] = {}
    start = 0
    for name, part in zip(blocks, parts):
        where = slice(start, start + part.shape[1])
        est[name] = flat[where]
        if name in trials_of:
            est[name] = list(
                estimates(
                    point[where],
                    reps[:, where],
                    confidence,
                    sequences=units.num_sequences,
                    trials=trials_of[name],
                )
            )
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
