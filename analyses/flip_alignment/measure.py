"""``run``: stream random sequences through the model and measure every head's flip alignment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analyses.flip_alignment.result import ANALYSIS, HEAD_SCALARS, FlipAlignmentResult, HeadMetrics
from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.sequences import token_batches
from interp import metrics
from interp.proportions import proportion_interval
from interp.stats import Estimate, UnitSums, bootstrap_distributions, percentile_interval

ENTROPY_BINS = 40  # histogram bins of row entropy over [0, log N]


# --- the analysis ---------------------------------------------------------------------------------
def _pattern_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 10_000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    n_examples: int = 3,
    offsets: Sequence[int] = metrics.OFFSETS,
) -> FlipAlignmentResult:
    """Stream ``num_sequences`` random sequences through ``model`` and measure every head.

    Memory is independent of ``num_sequences``: the statistics the bootstrap resamples are kept per
    resampling unit (one sequence up to ``interp.stats.MAX_UNITS`` sequences, blocks of consecutive
    sequences beyond; :class:`interp.stats.UnitSums`). Same arguments, same numbers.
    """
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    offsets = tuple(int(d) for d in offsets)
    neighbours = metrics.NEIGHBOUR_OFFSETS
    n_layers, n_heads, n = cfg.n_layers, cfg.n_heads, seq_len
    hooks = _pattern_hooks(n_layers)
    device = next(model.parameters()).device
    # Statistics are computed in float64, which MPS lacks; elsewhere they stay on the model's device.
    stats_device = torch.device("cpu") if device.type == "mps" else device
    edges = torch.linspace(0.0, math.log(n) if n > 1 else 1.0, ENTROPY_BINS + 1, dtype=torch.float64)

    # Per-sequence statistics are summed per resampling unit: at most MAX_UNITS rows, whatever N is.
    units = UnitSums(num_sequences)
    pattern_sum = torch.zeros(n_layers, n_heads, n, n, dtype=torch.float64)
    entropy_counts = torch.zeros(n_layers, n_heads, ENTROPY_BINS, dtype=torch.float64)
    edge_counts = torch.zeros_like(entropy_counts)  # the rows of queries 0 and N − 1 only
    edge_queries = sorted({0, n - 1})
    examples: tuple[torch.Tensor, torch.Tensor] | None = None

    with evaluating(model):
        data = token_batches(num_sequences, n, cfg.d_vocab, seed, batch_size)
        for tokens in data:
            tokens = tokens.to(device)
            logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
            correct = metrics.reversal_correct(logits, tokens).to("cpu", torch.float64)
            loss = F.cross_entropy(logits.transpose(1, 2), tokens.flip(-1), reduction="none").cpu()
            batch = {
                "accuracy": correct.mean(-1),
                "sequence_accuracy": correct.min(-1).values,
                "loss": loss.mean(-1),
                "per_position_accuracy": correct,
            }
            tokens = tokens.to(stats_device)
            patterns = torch.stack([cache[h] for h in hooks], dim=1).to(stats_device)  # [b, l, h, q, k]
            layer_stats = [
                metrics.sequence_statistics(patterns[:, layer], tokens, offsets, neighbours)
                for layer in range(n_layers)
            ]
            for name in layer_stats[0]:
                batch[name] = torch.stack([s[name] for s in layer_stats], dim=1)  # [batch, layer, ...]
            units.add(batch)
            pattern_sum += patterns.to("cpu", torch.float64).sum(0)
            rows = metrics.row_entropy(patterns.flatten(0, 1)).view(-1, n_layers, n_heads, n)
            entropy_counts += _entropy_histogram(rows, edges)
            edge_counts += _entropy_histogram(rows[..., edge_queries], edges)
            if examples is None:
                k = min(n_examples, tokens.shape[0])
                examples = (tokens[:k].cpu().clone(), patterns[:k].to("cpu", torch.float32).clone())

    return _summarise(
        units,
        pattern_sum.numpy() / num_sequences,
        entropy_counts.numpy(),
        edge_counts.numpy(),
        edges.numpy(),
        examples,
        offsets=offsets,
        neighbours=neighbours,
        seq_len=n,
        seed=seed,
        batch_size=batch_size,
        resamples=bootstrap_resamples,
        confidence=confidence,
        config=cfg.to_dict(),
    )


def _entropy_histogram(rows: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts ``[layer, head, bin]`` of row entropies ``[batch, layer, head, query]`` over ``edges``
    (values beyond the last edge, only possible through rounding, go to the last bin)."""
    _, n_layers, n_heads, _ = rows.shape
    n_bins = len(edges) - 1
    bins = torch.bucketize(rows.to(torch.float64), edges[1:-1].to(rows.device), right=True)
    head_index = torch.arange(n_layers * n_heads, device=rows.device).view(1, n_layers, n_heads, 1)
    flat = (head_index * n_bins + bins).flatten()
    counts = torch.bincount(flat, minlength=n_layers * n_heads * n_bins)
    return counts.view(n_layers, n_heads, n_bins).to("cpu", torch.float64)


def _summarise(
    units: UnitSums,
    mean_pattern: np.ndarray,
    entropy_counts: np.ndarray,
    edge_counts: np.ndarray,
    edges: np.ndarray,
    examples: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    offsets: tuple[int, ...],
    neighbours: tuple[int, ...],
    seq_len: int,
    seed: int,
    batch_size: int,
    resamples: int,
    confidence: float,
    config: dict[str, Any],
) -> FlipAlignmentResult:
    """Bootstrap every per-sequence column at once (one set of resamples for all) and package."""
    n_seq, n_units = units.num_sequences, units.units
    n_layers, n_heads = units.sums["flip_mass"].shape[1:3]
    names = ("accuracy", "sequence_accuracy", "loss", "per_position_accuracy", *HEAD_SCALARS)
    blocks = {name: units.table(name) for name in (*names, "offset_mass", "per_position_flip_mass")}
    for group in ("duplicate", "other"):
        blocks[f"{group}_mass_per_key"] = units.table(f"{group}_mass", f"{group}_keys")

    # One table of plain means and one of ratios, bootstrapped over the same resamples of sequences.
    slices: dict[str, tuple[int, slice, tuple[int, ...]]] = {}
    tables: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []), ([], [])]
    for name, (num, den) in blocks.items():
        which = 0 if den is None or not name.endswith("_per_key") else 1
        nums, dens = tables[which]
        start = sum(a.shape[1] for a in nums)
        nums.append(num.reshape(n_units, -1))
        if den is not None:
            dens.append(den.reshape(n_units, -1))
        slices[name] = (which, slice(start, start + nums[-1].shape[1]), num.shape[1:])
    # Resampling stream distinct from the data stream (numpy SeedSequence [seed, 1] vs [seed, 0, block]).
    plain_den = np.hstack(tables[0][1]) if tables[0][1] else None  # blocks: Σ sums / Σ counts
    (plain_point, plain_reps), (ratio_point, ratio_reps) = bootstrap_distributions(
        [(np.hstack(tables[0][0]), plain_den), (np.hstack(tables[1][0]), np.hstack(tables[1][1]))],
        resamples,
        seed=[seed, 1],
    )
    point, reps = [plain_point, ratio_point], [plain_reps, ratio_reps]
    low, high = zip(*(percentile_interval(r, confidence) for r in reps))
    _, dup, _ = slices["duplicate_mass_per_key"]
    _, other, _ = slices["other_mass_per_key"]
    diff_point = ratio_point[dup] - ratio_point[other]
    diff_low, diff_high = percentile_interval(ratio_reps[:, dup] - ratio_reps[:, other], confidence)

    # Proportions get Clopper–Pearson at the effective number of trials (interp.proportions): trials per
    # sequence are its positions (accuracy) or queries (argmax hits), or the sequence itself.
    proportions = {
        "accuracy": seq_len,
        "argmax_hit_rate": seq_len,
        "sequence_accuracy": 1,
        "per_position_accuracy": 1,
    }

    def estimates(name: str) -> np.ndarray:
        """Estimates of one block, shaped like the block's per-sequence values."""
        which, where, shape = slices[name]
        lows, highs = low[which][where], high[which][where]
        if name in proportions:
            lows, highs = proportion_interval(
                point[which][where], reps[which][:, where], n_seq, proportions[name], confidence
            )
        flat = [
            Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point[which][where], lows, highs)
        ]
        return np.array(flat, dtype=object).reshape(shape)

    def diff(layer: int, head: int) -> Estimate:
        i = layer * n_heads + head
        return Estimate(float(diff_point[i]), float(diff_low[i]), float(diff_high[i]))

    est = {name: estimates(name) for name in blocks}
    dup_keys, other_keys = (units.sums[f"{g}_keys"].sum(0).numpy() for g in ("duplicate", "other"))
    layers = [
        [
            HeadMetrics(
                layer=li,
                head=hi,
                flip_mass=est["flip_mass"][li, hi],
                offset_mass=dict(zip(offsets, est["offset_mass"][li, hi])),
                neighbour_mass=est["neighbour_mass"][li, hi],
                remainder_mass=est["remainder_mass"][li, hi],
                argmax_hit_rate=est["argmax_hit_rate"][li, hi],
                entropy=est["entropy"][li, hi],
                target_digit_mass=est["target_digit_mass"][li, hi],
                per_position_flip_mass=list(est["per_position_flip_mass"][li, hi]),
                duplicate_mass_per_key=est["duplicate_mass_per_key"][li, hi],
                other_mass_per_key=est["other_mass_per_key"][li, hi],
                duplicate_minus_other=diff(li, hi),
                duplicate_key_share=float(dup_keys[li] / max(dup_keys[li] + other_keys[li], 1.0)),
                entropy_counts=entropy_counts[li, hi],
                entropy_counts_edge=edge_counts[li, hi],
                mean_pattern=mean_pattern[li, hi],
            )
            for hi in range(n_heads)
        ]
        for li in range(n_layers)
    ]
    tokens, patterns = examples if examples is not None else (torch.zeros(0, seq_len), torch.zeros(0))
    return FlipAlignmentResult(
        num_sequences=n_seq,
        seq_len=seq_len,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=resamples,
        confidence=confidence,
        offsets=offsets,
        neighbour_offsets=neighbours,
        offset_queries=metrics.offset_query_counts(seq_len, offsets),
        accuracy=est["accuracy"][()],
        sequence_accuracy=est["sequence_accuracy"][()],
        loss=est["loss"][()],
        per_position_accuracy=list(est["per_position_accuracy"]),
        layers=layers,
        entropy_edges=edges,
        example_tokens=tokens.numpy(),
        example_patterns=patterns.numpy(),
        config=config,
    )
