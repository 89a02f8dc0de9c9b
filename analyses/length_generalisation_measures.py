"""What this analysis measures at one evaluation length N′, and which lengths a model can run.

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

from analyses.length_generalisation_result import SkippedLength
from interp import metrics
from interp.stats import Estimate


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


# --- which lengths can run --------------------------------------------------------------------------
def check_lengths(lengths: Sequence[int]) -> list[int]:
    """Validate the requested lengths (positive integers, each once); return them sorted."""
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must list at least one sequence length")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"lengths must be positive integers, got {n!r}")
    repeated = sorted({int(n) for n in lengths if lengths.count(n) > 1})
    if repeated:
        raise ValueError(f"lengths lists {', '.join(map(str, repeated))} more than once")
    return sorted(int(n) for n in lengths)


def plan_lengths(cfg: Any, lengths: Sequence[int]) -> tuple[list[int], list[SkippedLength]]:
    """Split the requested lengths into those the model can run and those it cannot (with a reason).

    A learned encoding is a table of N_train rows: there is no encoding for position N_train or beyond.
    The sinusoidal encoding is defined everywhere, but the model adds rows of a ``pe_max_len`` table.
    """
    usable, skipped = [], []
    limit = cfg.max_positions
    for n in check_lengths(lengths):
        if limit is None or n <= limit:
            usable.append(n)
        elif cfg.positional_embedding == "learned":
            skipped.append(
                SkippedLength(
                    n,
                    f"the learned positional encoding has {limit} rows (positions 0..{limit - 1}); "
                    f"length {n} needs positions up to {n - 1}, which have no encoding",
                )
            )
        else:
            skipped.append(
                SkippedLength(
                    n, f"the {cfg.positional_embedding} encoding table has {limit} rows (pe_max_len)"
                )
            )
    return usable, skipped


def nothing_to_run_message(cfg: Any, lengths: Sequence[int]) -> str:
    """The one line for a request in which no length can run."""
    return (
        f"lengths {', '.join(map(str, check_lengths(lengths)))}: every one exceeds the {cfg.max_positions} "
        f"positions the model's {cfg.positional_embedding} positional encoding supports"
    )


def skipped_message(cfg: Any, skipped: Sequence[SkippedLength]) -> str:
    """The one line the CLI prints about the lengths it skips (the full reasons go to metrics.json)."""
    which = ", ".join(str(s.length) for s in skipped)
    return (
        f"skipping length{'s' if len(skipped) > 1 else ''} {which}: the model's {cfg.positional_embedding} "
        f"positional encoding has rows for positions 0..{cfg.max_positions - 1} only, so it cannot run them"
    )
