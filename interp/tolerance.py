"""Run a model with its attention pattern replaced by every point of several pattern families.

For one head (layer l, head h) — or a set of heads degraded together (``heads=``) — and each point p
of each :class:`~interp.pattern_families.PatternFamily`
the head's pattern A (at ``blocks.l.attn.hook_pattern``) is replaced by A'_p = family_p(A) and the
model's outputs are reduced per sequence b (the unit the bootstrap resamples):

    accuracy[b, p]          = (1/N) Σ_i [argmax_c ℓ'_{b,i,c} = t_{b, N−1−i}]
    sequence_accuracy[b, p] = Π_i [argmax_c ℓ'_{b,i,c} = t_{b, N−1−i}]
    flip_mass[b, p]         = (1/N) Σ_i A'_{b, i, N−1−i}

plus any ``statistics`` (functions of the replaced patterns, the tokens and the logits, e.g. the
readout rules of :mod:`interp.readout`). All points of a batch run in one forward pass: the batch is
tiled once per point and the hook gives tile p the pattern of point p (chunked to ``max_rows``
sequences per forward; 2,048 was as fast as 8,192 on the tutorial's model and needs less memory).
The model's own point of each family (τ = 1, s = 0) is one of its points.

:func:`family_sweep` keeps these per-sequence values; :func:`sweep_units` sums them per resampling
unit (:class:`interp.stats.UnitSums`) instead, so its memory does not grow with the number of sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.ablation import check_heads, intervene
from interp.metrics import flip_mass
from interp.pattern_families import PatternFamily, family_points
from interp.stats import UnitSums
from machine.scalars import as_int

# (replaced patterns [point, batch, query, key], tokens [batch, pos], logits [point, batch, pos, vocab])
#   -> per-sequence values [point, batch, ...]
Statistic = Callable[[Tensor, Tensor, Tensor], Tensor]
BUILT_IN = ("accuracy", "sequence_accuracy", "flip_mass")


def _points(families: Sequence[PatternFamily]) -> list[tuple[int, float]]:
    if not families:
        raise ValueError("the sweep needs at least one pattern family")
    names = [f.name for f in families]
    if len(set(names)) != len(names):
        raise ValueError(f"pattern families must have distinct names, got {names}")
    return [(k, v) for k, family in enumerate(families) for v in family.values]


def _replace_points(own: Tensor, chunk: list[tuple[int, float]], families: Sequence[PatternFamily]) -> Tensor:
    """``own`` [point, batch, query, key] (tile p holds the pattern point p starts from) → each tile
    replaced by its family's point; runs of points of one family are evaluated together."""
    new = torch.empty_like(own)
    k = 0
    while k < len(chunk):
        fam = chunk[k][0]
        end = k
        while end < len(chunk) and chunk[end][0] == fam:
            end += 1
        values = torch.tensor([v for _, v in chunk[k:end]], device=own.device)
        new[k:end] = family_points(own[k:end], families[fam], values)
        k = end
    return new


@torch.no_grad()
def sweep_batch(
    model: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    families: Sequence[PatternFamily],
    layer: int = 0,
    head: int = 0,
    statistics: Mapping[str, Statistic] | None = None,
    max_rows: int = 2048,
    heads: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Float[Tensor, "batch point ..."]]:
    """Per-sequence statistics ``[batch, point, ...]`` of one batch at every point of ``families``
    (points in the order of the families, each in its ``values`` order).

    ``heads``: a *set* of (layer, head) degraded together (each head's own pattern moved to the same
    family point; a head in a later layer starts from the pattern it computes on the degraded
    upstream); ``flip_mass`` is then the mean over the set's heads. Extra ``statistics`` read the one
    head's replaced pattern, or for a set the mean over its heads Ā' = (1/|S|) Σ_h A'_h (whose digit
    votes are the sum of the heads' votes over |S|: the readout of heads that write their votes into
    one place). Without ``heads``: the one head (``layer``, ``head``)."""
    chosen = check_heads(model, [(layer, head)] if heads is None else heads)
    max_rows = as_int(max_rows, "max_rows", minimum=1)
    statistics = dict(statistics or {})
    clash = sorted(set(statistics) & set(BUILT_IN))
    if clash:
        raise ValueError(f"statistics may not reuse the built-in names {clash}")
    by_layer: dict[int, list[int]] = {}
    for lay, h in chosen:
        by_layer.setdefault(lay, []).append(h)
    points = _points(families)
    batch = tokens.shape[0]
    per_forward = max(1, max_rows // max(batch, 1))
    target = tokens.flip(-1)
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(points), per_forward):
        chunk = points[start : start + per_forward]
        replaced: dict[tuple[int, int], Tensor] = {}

        def make_hook(lay: int, in_layer: list[int], chunk: list = chunk, replaced: dict = replaced):
            def hook(pattern: Tensor) -> Tensor:
                out = pattern if pattern.shape[1] == 1 else pattern.clone()
                for h in in_layer:
                    own = pattern[:, h].view(len(chunk), batch, *pattern.shape[-2:])
                    new = _replace_points(own, chunk, families)
                    replaced[lay, h] = new
                    if pattern.shape[1] == 1:  # one head: the new pattern is the whole activation
                        return new.reshape(pattern.shape)
                    out[:, h] = new.reshape(-1, *pattern.shape[-2:])
                return out

            return hook

        hooks = [(f"blocks.{lay}.attn.hook_pattern", make_hook(lay, hs)) for lay, hs in by_layer.items()]
        with intervene(model, hooks):
            logits = model(tokens.repeat(len(chunk), 1))
        logits = logits.view(len(chunk), batch, *logits.shape[1:])
        correct = (logits.argmax(-1) == target).double()  # [point, batch, pos]
        flips = [
            flip_mass(new.flatten(0, 1).unsqueeze(1)).double().view(*new.shape[:3]).mean(-1)
            for new in (replaced[k] for k in chosen)
        ]
        values = {
            "accuracy": correct.mean(-1),
            "sequence_accuracy": correct.min(-1).values,
            "flip_mass": torch.stack(flips).mean(0),
        }
        if statistics:
            read = (
                torch.stack([replaced[k] for k in chosen]).mean(0) if len(chosen) > 1 else replaced[chosen[0]]
            )
        for name, fn in statistics.items():
            values[name] = fn(read, tokens, logits).double()
        for name, value in values.items():
            parts.setdefault(name, []).append(value.cpu())
    return {name: torch.cat(chunks).transpose(0, 1) for name, chunks in parts.items()}


def family_sweep(
    model: torch.nn.Module,
    batches: Iterable[Int[Tensor, "batch pos"]],
    families: Sequence[PatternFamily],
    layer: int = 0,
    head: int = 0,
    statistics: Mapping[str, Statistic] | None = None,
    max_rows: int = 2048,
    heads: Sequence[tuple[int, int]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Stream ``batches`` through :func:`sweep_batch`; return ``{family name: {statistic: [sequence,
    point, ...]}}`` as float64 arrays (memory: a few numbers per sequence and point)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for tokens in batches:
            device = next(model.parameters()).device
            stats = sweep_batch(model, tokens.to(device), families, layer, head, statistics, max_rows, heads)
            for name, value in stats.items():
                parts.setdefault(name, []).append(value.numpy())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("the sweep needs at least one batch of sequences")
    table = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    start = 0
    for family in families:
        stop = start + len(family.values)
        out[family.name] = {name: value[:, start:stop] for name, value in table.items()}
        start = stop
    return out


def sweep_units(
    model: torch.nn.Module,
    batches: Iterable[Int[Tensor, "batch pos"]],
    num_sequences: int,
    families: Sequence[PatternFamily],
    layer: int = 0,
    head: int = 0,
    statistics: Mapping[str, Statistic] | None = None,
    reduce: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    max_rows: int = 2048,
    heads: Sequence[tuple[int, int]] | None = None,
) -> UnitSums:
    """:func:`family_sweep` of ``num_sequences`` sequences summed per resampling unit: ``sums[name]`` is
    ``[unit, point, ...]`` over all families' points (in :func:`family_sweep`'s order). ``reduce`` maps a
    batch's per-sequence arrays (float64, ``[batch, point, ...]``) to what is kept, e.g. sums over
    points, before they are added. Memory: one batch plus ``MAX_UNITS`` rows, whatever the count."""
    units = UnitSums(num_sequences)
    was_training = model.training
    model.eval()
    try:
        for tokens in batches:
            device = next(model.parameters()).device
            stats = sweep_batch(model, tokens.to(device), families, layer, head, statistics, max_rows, heads)
            values = {name: value.numpy() for name, value in stats.items()}
            units.add(values if reduce is None else reduce(values))
    finally:
        model.train(was_training)
    if units.seen != num_sequences:
        raise ValueError(f"the sweep expected {num_sequences} sequences, got {units.seen}")
    return units
