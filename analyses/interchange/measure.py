"""``run``: interchange interventions at every site and head, against the reverse program."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.sequences import token_batches
from analyses.interchange.result import (
    ANALYSIS,
    LEAK,
    OUTPUT_SITES,
    PARTIAL,
    STRONG,
    Conclusion,
    InterchangeResult,
    fmt,
)
from interp import stats
from interp.interchange import (
    SITES,
    VARIABLES,
    InterchangeSummary,
    pair_batches,
    row_count,
    selector_head,
    streamed_summary,
)

RULE = (
    "each site is scored against the program variable it carries best (aggregate V_p = t[N−1−p] or token "
    f"t[p]); implements: some output-side site (z, attn_out or resid_mid at query i) carries V_i with IIA "
    f"CI low ≥ {STRONG}, and "
    f"patching the input residual (layer 0 resid_pre at key j) has IIA CI low ≥ {STRONG} and changes no "
    f"other output (largest off-program change, CI high ≤ {LEAK}); partly: the best site's IIA CI low ≥ "
    f"{PARTIAL}; does not: otherwise"
)


def _sites(sites: Sequence[str]) -> tuple[str, ...]:
    sites = tuple(sites)
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites or len(set(sites)) != len(sites):
        raise ValueError(f"sites must be distinct names among {', '.join(SITES)}, got {list(sites)}")
    return tuple(s for s in SITES if s in sites)  # the program's order


def conclude(sites: list[InterchangeSummary]) -> Conclusion:
    """The label and sentences of :data:`RULE` from the sites' summaries."""
    output = [s for s in sites if s.site in OUTPUT_SITES]
    inputs = [s for s in sites if s.site == "resid_pre" and s.layer == 0]
    best = max(sites, key=lambda s: s.iia.ci_low)
    sentences = []
    if output:
        top = max(output, key=lambda s: s.iia.ci_low)
        if top.variable == "aggregate":
            sentences.append(
                f"Patching {top.site} at query i (layer {top.layer}) from a source sequence moves output i "
                f"to the source's t[N−1−i], as the program's interchange does, in {fmt(top.iia)} of "
                f"interchanges (every output as the program says: {fmt(top.iia_whole)})."
            )
        else:
            sentences.append(
                f"{top.site} at position p (layer {top.layer}) carries the token t[p], not the aggregate "
                f"t[N−1−p]: patching it moves output N−1−p in {fmt(top.iia)} of interchanges."
            )
    if inputs:
        pre = inputs[0]
        sentences.append(
            f"Patching the input residual at key j changes output N−1−j as the program does in "
            f"{fmt(pre.iia)} of interchanges; the largest change of any other output is "
            f"{fmt(pre.off_program_max)} (the program: 0)."
        )
    # "implements" needs each site to carry the program's own variable there: the aggregate V_i at the
    # output side, the token t_j at the input residual (the search may find the other one).
    strong_output = any(s.iia.ci_low >= STRONG and s.variable == "aggregate" for s in output)
    clean_input = (
        bool(inputs)
        and inputs[0].variable == "token"
        and inputs[0].iia.ci_low >= STRONG
        and inputs[0].off_program_max.ci_high <= LEAK
    )
    if strong_output and clean_input:
        label = "implements"
    elif best.iia.ci_low >= PARTIAL:
        label = "partly"
        if not (output and inputs):
            sentences.append("Only some of the sites were tested, so the program cannot be confirmed whole.")
    else:
        label = "does not"
        sentences.append(
            f"No site carries the program's variable in most interchanges (best: {best.site}, layer "
            f"{best.layer}, IIA {fmt(best.iia)})."
        )
    return Conclusion(label, sentences, RULE)


def selector_sentence(
    heads: list[InterchangeSummary], best: tuple[int, int], holds: bool, layer_z: InterchangeSummary | None
) -> str:
    """ "The reverse selector lives in head h" when :func:`interp.interchange.selector_head` says so —
    "mostly" when that head alone carries less than its whole layer's z does — else who comes closest."""
    by = {(s.layer, s.head): s for s in heads}
    top = by[best]
    if holds:
        where = "the only head" if len(heads) == 1 else f"one of {len(heads)} heads"
        shared = layer_z is not None and len(heads) > 1 and top.iia.ci_high < layer_z.iia.ci_low
        together = f"; every head of layer {best[0]} together: {fmt(layer_z.iia)}" if shared else ""
        return (
            f"The reverse selector lives {'mostly ' if shared else ''}in head {best[0]}.{best[1]} ({where}): "
            f"patching its output alone gives IIA {fmt(top.iia)}{together}."
        )
    others = sorted((s for s in heads if (s.layer, s.head) != best), key=lambda s: -s.iia.mean)
    rival = f"; next {others[0].layer}.{others[0].head}: {fmt(others[0].iia)}" if others else ""
    return (
        f"No single head carries the aggregate: the best, {best[0]}.{best[1]}, has IIA {fmt(top.iia)} alone"
        f"{rival} (a selector head needs IIA CI above 0.5 and above every other head's)."
    )


def check_counts(
    cfg: Any, num_sequences: int, seq_len: int, batch_size: int, pairs: int, resamples: int
) -> None:
    """Refuse, before any work, what cannot fit whatever the run's length: a forward pass of one group
    of ``pairs`` pairs patched at each of the N positions (N·pairs sequences, the source run's cache
    besides), the resampling units' sums (4 + N + N² numbers each) and the replicates of them."""
    forward = pairs * (seq_len + 1) * arguments.sequence_bytes(cfg, seq_len)
    name, value = ("batch_size", batch_size) if pairs > 1 else ("seq_len", seq_len)
    arguments.check_memory(
        name,
        value,
        forward,
        f"{pairs:,} pair(s) patched at each of {seq_len:,} positions in one forward pass",
    )
    units = min(num_sequences, stats.MAX_UNITS)
    arguments.check_memory(
        "seq_len", seq_len, 8 * units * row_count(seq_len), f"{units:,} resampling units of 4 + N + N² sums"
    )
    arguments.check_resamples(resamples, row_count(seq_len))


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 1000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    sites: Sequence[str] = SITES,
) -> InterchangeResult:
    """Interchange ``num_sequences`` (base, source) pairs at every position of every site of every layer
    (same seed, same numbers). Bases are the evaluation sequences of ``seed``; each source differs from
    its base at every position. ``batch_size`` is the number of sequences per forward pass (each pair
    runs once per position, N sequences).

    Memory is independent of ``num_sequences``: pairs stream batch by batch (regenerated for every
    site) and their statistics are summed per resampling unit (:class:`interp.stats.UnitSums`: one
    pair up to ``MAX_UNITS`` pairs, blocks of consecutive pairs beyond)."""
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    sites = _sites(sites)
    if cfg.d_vocab < 2:
        raise ValueError("interchanges need at least 2 categories: a source must differ from its base")
    pairs = max(1, min(batch_size // seq_len, num_sequences))  # more than N pairs: one group, as N
    check_counts(cfg, num_sequences, seq_len, batch_size, pairs, bootstrap_resamples)
    device = next(model.parameters()).device
    resample_seed = [seed, 1]

    def pair_stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # the same pairs every time
        bases = token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size)
        for base, source in pair_batches(bases, cfg.d_vocab, seed, pairs):
            yield base.to(device), source.to(device)

    def summary(site: str, layer: int, head: int | None) -> InterchangeSummary:
        return streamed_summary(
            model,
            pair_stream,
            num_sequences,
            site,
            layer,
            head,
            bootstrap_resamples,
            confidence,
            resample_seed,
            VARIABLES,  # the variable each site carries is searched (interp.interchange)
        )

    with evaluating(model):
        # resid_pre carries the input t_j at layer 0 only; a later layer's is an earlier layer's output.
        summaries = [
            summary(site, layer, None)
            for layer in range(cfg.n_layers)
            for site in sites
            if site != "resid_pre" or layer == 0
        ]
        heads = []
        for layer in range(cfg.n_layers):
            for head in range(cfg.n_heads):
                whole = next((s for s in summaries if s.site == "z" and s.layer == layer), None)
                if cfg.n_heads == 1 and whole is not None:  # one head: its z is the layer's z
                    heads.append(dataclasses.replace(whole, head=0))
                else:
                    heads.append(summary("z", layer, head))
    best, holds = selector_head({(s.layer, s.head): s for s in heads})
    return InterchangeResult(
        num_sequences=num_sequences,
        seq_len=seq_len,
        num_categories=cfg.d_vocab,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        sites=summaries,
        heads=heads,
        selector=best,
        selector_holds=holds,
        selector_sentence=selector_sentence(
            heads, best, holds, next((s for s in summaries if s.site == "z" and s.layer == best[0]), None)
        ),
        conclusion=conclude(summaries),
        config=cfg.to_dict(),
    )
