"""What the training-dynamics analysis measures on one model: restricted / excluded attention and the
per-sequence statistics of a snapshot.

Restricted attention keeps, in every row of every head, only the keys within ``window`` of the flipped
key f(i) = N − 1 − i and renormalises; excluded attention removes f(i) and renormalises:

    restricted: A'[i, k] = A[i, k]·[|k − f(i)| ≤ w] / Σ_k' A[i, k']·[|k' − f(i)| ≤ w]
    excluded:   A'[i, k] = A[i, k]·[k ≠ f(i)] / (1 − A[i, f(i)])

The pattern functions take any ``[..., query, key]`` pattern, so they also work one head at a time with
:func:`interp.ablation.replace_pattern`; :func:`renormalised_attention` applies them to every head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from interp import metrics
from interp.ablation import ablate_positional_encoding, intervene
from interp.stats import UnitSums


# --- restricted / excluded attention --------------------------------------------------------------
def flip_window(n: int, window: int, device: Any = None) -> Bool[Tensor, "query key"]:
    """keep[i, k] = |k − (N − 1 − i)| ≤ window (window 0: the flipped key alone)."""
    key = torch.arange(n, device=device)
    return (key.unsqueeze(0) - metrics.flipped_keys(n, device).unsqueeze(1)).abs() <= window


def renormalise_rows(
    pattern: Float[Tensor, "... query key"], keep: Bool[Tensor, "query key"]
) -> Float[Tensor, "... query key"]:
    """A'[i, k] = A[i, k]·keep[i, k] / Σ_k' A[i, k']·keep[i, k'].

    A row that puts no weight at all on its kept keys (possible only by float underflow) becomes uniform
    over them, the limit for equal weights; :func:`count_degenerate` counts such rows.
    """
    if keep.shape != pattern.shape[-2:] or not bool(keep.any(-1).all()):
        raise ValueError(f"keep must be a [query, key] mask with a kept key in every row, got {keep.shape}")
    keep = keep.to(pattern.device)
    kept = pattern * keep
    total = kept.sum(-1, keepdim=True)
    uniform = keep / keep.sum(-1, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(pattern.dtype).tiny), uniform)


def count_degenerate(pattern: Tensor, keep: Tensor) -> int:
    """Rows of ``pattern`` with zero weight on every kept key."""
    return int(((pattern * keep.to(pattern.device)).sum(-1) == 0).sum())


def restrict_to_flip(pattern: Float[Tensor, "... query key"], window: int = 1) -> Tensor:
    """Every row restricted to the keys within ``window`` of its flipped key, renormalised."""
    return renormalise_rows(pattern, flip_window(pattern.shape[-1], window, pattern.device))


def exclude_flip(pattern: Float[Tensor, "... query key"]) -> Tensor:
    """Every row without its flipped key, renormalised: A[i, k]·[k ≠ N−1−i] / (1 − A[i, N−1−i])."""
    return renormalise_rows(pattern, ~flip_window(pattern.shape[-1], 0, pattern.device))


@contextmanager
def renormalised_attention(
    model: Any, keep: Bool[Tensor, "query key"], degenerate: list[int] | None = None
) -> Iterator[Any]:
    """Run ``model`` with every head of every layer restricted to ``keep`` (see :func:`renormalise_rows`);
    the number of degenerate rows seen is added to ``degenerate[0]`` when a list is given."""

    def hook(pattern: Tensor) -> Tensor:
        if degenerate is not None:
            degenerate[0] += count_degenerate(pattern, keep)
        return renormalise_rows(pattern, keep)

    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with intervene(model, [(name, hook) for name in names]):
        yield model


# --- evaluation -----------------------------------------------------------------------------------
def _accuracy_loss(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    correct = metrics.reversal_correct(logits, tokens).double().mean(-1)
    loss = F.cross_entropy(logits.double().transpose(1, 2), tokens.flip(-1), reduction="none").mean(-1)
    return correct.cpu(), loss.cpu()


def snapshot_statistics(
    model: Any, batches: Iterator[Tensor], window: int = 1, num_sequences: int | None = None
) -> tuple[UnitSums, np.ndarray, dict[str, int]]:
    """Per-sequence statistics of one model, summed per resampling unit (``units.sums``; one unit per
    sequence up to ``interp.stats.MAX_UNITS`` sequences): ``MODEL_METRICS`` [unit] (``zero_pe_*``
    only with a positional encoding) and ``HEAD_METRICS`` [unit, layer, head]; the mean pattern
    [layer, head, q, k]; and the degenerate-row counts of the restricted and excluded runs.
    ``num_sequences`` is how many sequences ``batches`` yields (None: counted by reading them first)."""
    cfg = model.cfg
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    if num_sequences is None:
        batches = list(batches)
        num_sequences = sum(len(b) for b in batches)
    units = UnitSums(num_sequences)
    pattern_sum, count = None, 0
    degenerate = {"restricted": [0], "excluded": [0]}
    parts: dict[str, Tensor] = {}

    def keep(name: str, value: Tensor) -> None:
        parts[name] = value.detach()

    model.eval()
    with torch.inference_mode():
        for tokens in batches:
            tokens = tokens.to(device)
            restrict, exclude = flip_window(tokens.shape[1], window), ~flip_window(tokens.shape[1], 0)
            logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
            for name, value in zip(("accuracy", "loss"), _accuracy_loss(logits, tokens)):
                keep(name, value)
            patterns = torch.stack([cache[h] for h in hooks], dim=1).double()  # [batch, layer, head, q, k]
            flat = patterns.flatten(1, 2)  # [batch, layer·head, q, k]: the metrics take [batch, head, ...]
            shape = (len(tokens), cfg.n_layers, cfg.n_heads)
            keep("flip_mass", metrics.flip_mass(flat).mean(-1).view(shape))
            keep("neighbour_mass", metrics.neighbour_mass(flat).mean(-1).view(shape))
            keep("entropy", metrics.row_entropy(flat).mean(-1).view(shape))
            keep("argmax_hit_rate", metrics.argmax_hit(flat).double().mean(-1).view(shape))
            batch_sum = patterns.sum(0).cpu()
            pattern_sum = batch_sum if pattern_sum is None else pattern_sum + batch_sum
            count += len(tokens)
            conditions: list[tuple[str, Callable[[], Any]]] = [
                ("restricted", partial(renormalised_attention, model, restrict, degenerate["restricted"])),
                ("excluded", partial(renormalised_attention, model, exclude, degenerate["excluded"])),
            ]
            if cfg.positional_embedding != "none":
                conditions.append(("zero_pe", partial(ablate_positional_encoding, model, "zero")))
            for prefix, context in conditions:
                with context():
                    acc, loss = _accuracy_loss(model(tokens), tokens)
                keep(f"{prefix}_accuracy", acc)
                keep(f"{prefix}_loss", loss)
            units.add(parts)
    return units, (pattern_sum / count).numpy(), {k: v[0] for k, v in degenerate.items()}
