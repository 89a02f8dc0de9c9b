"""Interchange interventions: does the network implement the reverse program, variable by variable?

High-level model (RASP ``Aggregate(Select(indices, N−1−indices, EQ), tokens)``, tracr's ``make_reverse``):
output i is the variable V_i = t_{N−1−i}. Interchanging V_i from a source sequence s into a base b gives
the counterfactual outputs

    y^{b←s, i}_k = s_{N−1−i} if k = i, else b_{N−1−k}.

Low-level sites and the output each is aligned with:

- ``z`` (``blocks.l.attn.hook_z`` at query i, all heads or one head), ``attn_out``
  (``blocks.l.hook_attn_out`` at i), ``resid_mid`` (``blocks.l.hook_resid_mid`` at i): output i;
- ``resid_pre`` (``blocks.l.hook_resid_pre`` at key position j): the variable it carries is t_j, read
  by output N − 1 − j.

Patching the site at position p from the source run into the base run gives predictions ŷ [pos]. Per
(base, source) pair and site position p, with a = aligned output:

    aligned hit  = [ŷ_a = y^{b←s}_a]       whole hit = [ŷ_k = y^{b←s}_k for every k]

IIA is the mean over pairs and positions, with a bootstrap CI over pairs (the unit). Pairs stream
through :func:`pair_batches` and :func:`streamed_summary` into an :class:`interp.stats.UnitSums`, so
memory does not grow with the number of pairs (beyond ``MAX_UNITS`` pairs the bootstrap resamples
blocks of consecutive pairs; up to it, one pair per unit, as :func:`summarise_interchange`). Sources differ
from their base at every position (s_k = (b_k + 1 + r_k) mod C, r_k uniform on 0..C−2), so every
interchange changes the program's output and a site that does nothing scores 0, not 1/C.

The *dependency matrix* D[p, k] = P(ŷ_k ≠ base prediction_k) after patching position p; the program's
is D*[p, k] = [k = aligned output of p] (anti-diagonal for ``resid_pre``, diagonal for output sites).

Which variable a site carries is searched, not assumed. The program has two kinds of variable at
position p: the aggregate V_p = t_{N−1−p} (read by output p) and the token t_p (read by output N−1−p).
A residual site of a deeper model can still carry its own token where the default alignment expects
the aggregate, and would score IIA 0 against the wrong one. :func:`streamed_summary` with
``variables=VARIABLES`` scores both alignments on the same patched predictions (one set of forwards)
and keeps the one with the higher IIA; the summary names it (``variable``) and keeps the other's IIA.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.ablation import check_heads, intervene
from interp.proportions import proportion_interval
from interp.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Estimate,
    UnitSums,
    bootstrap_distributions,
)
from machine.scalars import as_int

Site = Literal["z", "attn_out", "resid_mid", "resid_pre"]
SITES: tuple[str, ...] = get_args(Site)
# The program variable a site position p carries: the aggregate V_p = t_{N−1−p} (read by output p) or
# the token t_p (read by output N−1−p).
Variable = Literal["aggregate", "token"]
VARIABLES: tuple[str, ...] = get_args(Variable)


def default_variable(site: Site) -> Variable:
    """The variable the program aligns with a site: the token at resid_pre, the aggregate elsewhere."""
    return "token" if site == "resid_pre" else "aggregate"


def _check_pair(base: Tensor, source: Tensor) -> None:
    if base.shape != source.shape or base.ndim != 2:
        shapes = f"base {tuple(base.shape)} and source {tuple(source.shape)}"
        raise ValueError(f"{shapes} must be equal [batch, pos] shapes")


def site_hook(site: Site, layer: int) -> str:
    """The hook point of a site in layer ``layer``."""
    names = {
        "z": "attn.hook_z",
        "attn_out": "hook_attn_out",
        "resid_mid": "hook_resid_mid",
        "resid_pre": "hook_resid_pre",
    }
    if site not in names:
        raise ValueError(f"unknown site {site!r}; sites: {', '.join(SITES)}")
    return f"blocks.{layer}.{names[site]}"


def aligned_outputs(site: Site, n: int, variable: Variable | None = None) -> Int[Tensor, " pos"]:
    """a(p): the output aligned with the site at position p: p for the aggregate V_p, N − 1 − p for the
    token t_p (``variable`` None: the site's :func:`default_variable`)."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; sites: {', '.join(SITES)}")
    variable = default_variable(site) if variable is None else variable
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; variables: {', '.join(VARIABLES)}")
    p = torch.arange(n)
    return p.flip(0) if variable == "token" else p


def make_sources(
    base: Int[Tensor, "batch pos"],
    num_categories: int,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch pos"]:
    """Sources that differ from ``base`` at every position: s = (b + 1 + r) mod C, r ~ U{0..C−2}.

    ``generator`` (CPU, instead of a fresh one seeded with ``seed``) continues a stream: consecutive
    calls on consecutive parts of a base give the sources of the whole base (:func:`pair_batches`)."""
    if num_categories < 2:
        raise ValueError(f"sources that differ everywhere need at least 2 categories, got {num_categories}")
    g = torch.Generator().manual_seed(int(seed)) if generator is None else generator
    r = torch.randint(0, num_categories - 1, tuple(base.shape), generator=g).to(base.device)
    return (base + 1 + r) % num_categories


def pair_batches(
    bases: Iterable[Int[Tensor, "batch pos"]], num_categories: int, seed: int = 0, pairs: int = 256
) -> Iterator[tuple[Int[Tensor, "pairs pos"], Int[Tensor, "pairs pos"]]]:
    """(base, source) batches of ``pairs`` pairs (the last may be smaller) from a stream of base
    batches of any sizes: the same pairs, in the same ``pairs``-sized groups, as splitting the
    concatenated bases and :func:`make_sources` of all of them with ``seed`` — in memory of one base
    batch plus one group."""
    pairs = as_int(pairs, "pairs", minimum=1)
    g = torch.Generator().manual_seed(int(seed))
    rest: Tensor | None = None
    for batch in bases:
        data = batch if rest is None else torch.cat([rest, batch])
        full = (len(data) // pairs) * pairs
        for part in data[:full].split(pairs) if full else ():
            yield part, make_sources(part, num_categories, generator=g)
        rest = data[full:] if full < len(data) else None
    if rest is not None:
        yield rest, make_sources(rest, num_categories, generator=g)


def counterfactual_outputs(
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    site: Site,
    variable: Variable | None = None,
) -> Int[Tensor, "batch site_pos pos"]:
    """The program's outputs y^{b←s} after interchanging the variable aligned with each site position."""
    _check_pair(base, source)
    n = base.shape[1]
    a = aligned_outputs(site, n, variable).to(base.device)
    out = base.flip(-1).unsqueeze(1).repeat(1, n, 1)  # [batch, p, k]
    rows = torch.arange(n, device=base.device)
    out[:, rows, a] = source.flip(-1)[:, a]
    return out


@torch.no_grad()
def patched_predictions(
    model: torch.nn.Module,
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    site: Site,
    layer: int = 0,
    head: int | None = None,
    positions: Sequence[int] | None = None,
) -> Int[Tensor, "batch site_pos pos"]:
    """Model predictions with the site at each position p (default: all) patched from the source run.

    One forward per batch: the base batch is tiled once per position and tile p gets the source's
    activation at position p only (for ``z``, only head ``head`` when given)."""
    _check_pair(base, source)
    if head is not None and site != "z":
        raise ValueError(f"head= selects one head of the 'z' site only, not {site!r}")
    check_heads(model, [(layer, 0 if head is None else head)])
    name = site_hook(site, layer)
    n = base.shape[1]
    positions = list(range(n)) if positions is None else [int(p) for p in positions]
    if not positions or any(not 0 <= p < n for p in positions):
        raise ValueError(f"positions must lie in 0..{n - 1}, got {positions}")
    _, cache = model.run_with_cache(source, names_filter=name)
    src = cache[name]  # [batch, pos, ...]
    k = len(positions)
    mask = torch.zeros(k, 1, n, dtype=torch.bool, device=src.device)
    mask[torch.arange(k), 0, torch.tensor(positions)] = True

    def patch(act: Tensor) -> Tensor:
        act = act.view(k, *src.shape)
        where = mask.view(k, 1, n, *([1] * (src.ndim - 2)))
        if head is not None:
            heads = torch.zeros(src.shape[2], dtype=torch.bool, device=src.device)
            heads[head] = True
            where = where & heads.view(1, 1, 1, -1, 1)
        return torch.where(where, src.unsqueeze(0), act).reshape(-1, *src.shape[1:])

    with intervene(model, [(name, patch)]):
        logits = model(base.repeat(k, 1))
    return logits.argmax(-1).view(k, *base.shape).transpose(0, 1)


def hits_from_predictions(
    predicted: Int[Tensor, "batch site_pos pos"],
    clean: Int[Tensor, "batch pos"],
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    site: Site,
    variable: Variable | None = None,
) -> dict[str, Float[Tensor, "batch site_pos ..."]]:
    """:func:`interchange_hits` from the patched and clean predictions, against ``variable``."""
    program = counterfactual_outputs(base, source, site, variable)
    n = base.shape[1]
    a = aligned_outputs(site, n, variable).to(base.device)
    rows = torch.arange(n, device=base.device)
    return {
        "aligned": (predicted[:, rows, a] == program[:, rows, a]).double(),
        "whole": (predicted == program).all(-1).double(),
        "changed": (predicted != clean.unsqueeze(1)).double(),
    }


@torch.no_grad()
def interchange_hits(
    model: torch.nn.Module,
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    site: Site,
    layer: int = 0,
    head: int | None = None,
    variable: Variable | None = None,
) -> dict[str, Float[Tensor, "batch site_pos ..."]]:
    """Per pair and site position: ``aligned`` and ``whole`` hits (0/1) and ``changed`` [batch, p, k]
    (the patched prediction differs from the unpatched base prediction at output k)."""
    predicted = patched_predictions(model, base, source, site, layer, head)
    return hits_from_predictions(predicted, model(base).argmax(-1), base, source, site, variable)


def program_dependency(site: Site, n: int, variable: Variable | None = None) -> Float[Tensor, "site_pos pos"]:
    """D*[p, k] = [k = a(p)]: which outputs the program changes when position p's variable changes."""
    d = torch.zeros(n, n, dtype=torch.float64)
    d[torch.arange(n), aligned_outputs(site, n, variable)] = 1.0
    return d


@dataclass(frozen=True)
class InterchangeSummary:
    """IIA and dependency matrix of one site, with 95% bootstrap CIs over (base, source) pairs.

    ``on_program``: mean of D[p, a(p)] (the program says 1); ``off_program``: mean of the other cells
    (the program says 0); ``off_program_max``: the largest other cell of the mean matrix, with the CI
    of that maximum recomputed on every resample.
    """

    site: str
    layer: int
    head: int | None
    num_pairs: int
    iia: Estimate
    iia_whole: Estimate
    iia_by_position: list[Estimate]
    dependency: np.ndarray  # [site_pos, pos], mean over pairs
    on_program: Estimate
    off_program: Estimate
    off_program_max: Estimate
    variable: str = "aggregate"  # the program variable the site is scored against (searched)
    other_variables: dict[str, Estimate] = field(default_factory=dict)  # the IIA against the others

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "variable": self.variable,
            "iia_other_variables": {k: v.to_dict() for k, v in self.other_variables.items()},
            "layer": self.layer,
            "head": self.head,
            "num_pairs": self.num_pairs,
            "iia": self.iia.to_dict(),
            "iia_whole": self.iia_whole.to_dict(),
            "iia_by_position": [e.to_dict() for e in self.iia_by_position],
            "dependency": self.dependency.tolist(),
            "on_program": self.on_program.to_dict(),
            "off_program": self.off_program.to_dict(),
            "off_program_max": self.off_program_max.to_dict(),
        }


def pair_rows(hits: dict[str, Tensor], site: Site, variable: Variable | None = None) -> np.ndarray:
    """One row per pair of :func:`interchange_hits`: the per-pair values whose means (over pairs) are
    the statistics of :class:`InterchangeSummary`: aligned hit rate, whole hit rate, aligned hit per
    position [N], on- and off-program change rates, and the change matrix [N·N] (float64)."""
    aligned = hits["aligned"].cpu().numpy()
    whole = hits["whole"].cpu().numpy()
    changed = hits["changed"].cpu().numpy()
    b, n, _ = changed.shape
    on = program_dependency(site, n, variable).numpy().astype(bool)
    return np.hstack(
        [
            aligned.mean(1, keepdims=True),
            whole.mean(1, keepdims=True),
            aligned,
            changed[:, on].mean(1, keepdims=True),
            changed[:, ~on].mean(1, keepdims=True),
            changed.reshape(b, -1),
        ]
    )


def row_count(seq_len: int) -> int:
    """The numbers of one :func:`pair_rows` row (what a resampling unit keeps): 4 + N + N²."""
    return 4 + seq_len + seq_len * seq_len


def summarise_units(
    units: UnitSums,
    site: Site,
    layer: int = 0,
    head: int | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
    variable: Variable | None = None,
) -> InterchangeSummary:
    """Bootstrap the :func:`pair_rows` summed in ``units`` (under the name ``"row"``): every statistic
    is a mean over pairs and all share one set of resamples.

    Every statistic is a proportion (of the N aligned outputs, N positions, N on-program and N² − N
    off-program cells of a pair, or of one cell), so each gets Clopper–Pearson at the effective number
    of trials, exact at 0 and 1 (``interp.proportions``): an IIA of 100% on P pairs reads
    [(α/2)^{1/P}, 1], not [1, 1]. ``off_program_max`` = max over the N² − N off-program cells: its
    interval is [max_k low_k, max_k high_k], the highs at confidence 1 − α/(N² − N) (Bonferroni: all
    cells' upper bounds hold at once, so the max's does), the lows at 1 − α (max_k p_k ≥ p_k ≥ low_k).
    """
    [(point, reps)] = bootstrap_distributions([units.table("row")], resamples, seed)
    n = (math.isqrt(4 * len(point) - 15) - 1) // 2  # 4 + n + n² columns: 4·len − 15 = (2n + 1)²
    trials = np.array([n, n] + [1] * n + [n, max(n * n - n, 1)] + [1] * (n * n), dtype=np.float64)
    low, high = proportion_interval(point, reps, units.num_sequences, trials, confidence)

    def est(k: int) -> Estimate:
        return Estimate(float(point[k]), float(low[k]), float(high[k]))

    on = program_dependency(site, n, variable).numpy().astype(bool)
    cells = slice(4 + n, None)
    off = ~on.reshape(-1)
    max_point = float(point[cells][off].max())
    strict = 1.0 - (1.0 - confidence) / max(int(off.sum()), 1)
    _, cell_high = proportion_interval(
        point[cells][off], reps[:, cells][:, off], units.num_sequences, 1, strict
    )
    max_low, max_high = [float(low[cells][off].max())], [float(cell_high.max())]
    return InterchangeSummary(
        site=site,
        layer=layer,
        head=head,
        num_pairs=units.num_sequences,
        iia=est(0),
        iia_whole=est(1),
        iia_by_position=[est(2 + p) for p in range(n)],
        dependency=point[cells].reshape(n, n),
        on_program=est(2 + n),
        off_program=est(3 + n),
        off_program_max=Estimate(max_point, float(max_low[0]), float(max_high[0])),
        variable=default_variable(site) if variable is None else variable,
    )


def summarise_interchange(
    hits: dict[str, Tensor],
    site: Site,
    layer: int = 0,
    head: int | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
) -> InterchangeSummary:
    """Bootstrap :func:`interchange_hits` over pairs: all statistics share one set of resamples."""
    rows = pair_rows(hits, site)
    units = UnitSums(len(rows))
    units.add({"row": rows})
    return summarise_units(units, site, layer, head, resamples, confidence, seed)


@torch.no_grad()
def streamed_summary(
    model: torch.nn.Module,
    pairs: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    num_pairs: int,
    site: Site,
    layer: int = 0,
    head: int | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
    variables: Sequence[Variable] | None = None,
) -> InterchangeSummary:
    """:func:`summarise_interchange` of ``num_pairs`` pairs that ``pairs()`` yields batch by batch
    (e.g. :func:`pair_batches`), in memory independent of ``num_pairs`` (:class:`UnitSums`).

    ``variables`` (default: the site's own): every variable is scored on the same patched predictions,
    and the summary of the one with the highest IIA is returned, the others' IIA in
    ``other_variables`` (the module docstring's search)."""
    variables = [default_variable(site)] if variables is None else list(dict.fromkeys(variables))
    units = {v: UnitSums(num_pairs) for v in variables}
    for base, source in pairs():
        predicted = patched_predictions(model, base, source, site, layer, head)
        clean = model(base).argmax(-1)
        for v, unit in units.items():
            hits = hits_from_predictions(predicted, clean, base, source, site, v)
            unit.add({"row": pair_rows(hits, site, v)})
    first = units[variables[0]]
    if first.seen != first.num_sequences:
        raise ValueError(f"expected {first.num_sequences} pairs, got {first.seen}")
    found = {
        v: summarise_units(u, site, layer, head, resamples, confidence, seed, v) for v, u in units.items()
    }
    best = max(variables, key=lambda v: (found[v].iia.mean, v == default_variable(site)))
    return replace(found[best], other_variables={v: found[v].iia for v in variables if v != best})


def head_iia(
    model: torch.nn.Module,
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | list[int] = 0,
    batch_size: int = 256,
) -> dict[tuple[int, int], InterchangeSummary]:
    """IIA of the ``z`` site for every (layer, head) alone: which head carries the aggregate V_i."""
    cfg = model.cfg
    out = {}
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            hits = batched_hits(model, base, source, "z", layer, head, batch_size)
            out[layer, head] = summarise_interchange(hits, "z", layer, head, resamples, confidence, seed)
    return out


def batched_hits(
    model: torch.nn.Module,
    base: Int[Tensor, "batch pos"],
    source: Int[Tensor, "batch pos"],
    site: Site,
    layer: int = 0,
    head: int | None = None,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """:func:`interchange_hits` over ``batch_size`` pairs at a time (N forwards' worth each), concatenated."""
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    _check_pair(base, source)
    parts = [
        interchange_hits(model, b, s, site, layer, head)
        for b, s in zip(base.split(batch_size), source.split(batch_size))
    ]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def selector_head(
    summaries: dict[tuple[int, int], InterchangeSummary], min_iia: float = 0.5
) -> tuple[tuple[int, int], bool]:
    """The (layer, head) with the highest IIA, and whether "the reverse selector lives in head h"
    holds: its IIA CI lies above ``min_iia`` (most interchanges follow the program) and above every
    other head's CI."""
    if not summaries:
        raise ValueError("no head summaries to choose from")
    best = max(summaries, key=lambda k: summaries[k].iia.mean)
    low = summaries[best].iia.ci_low
    others = [s.iia.ci_high for k, s in summaries.items() if k != best]
    return best, bool(low > min_iia and all(low > high for high in others))
