"""Figures of the flip-alignment analysis (PNG + SVG), drawn from a :class:`FlipAlignmentResult`."""

from __future__ import annotations

import math
from pathlib import Path

from analyses.flip_alignment.result import FlipAlignmentResult
from analyses.frame.figures import save_figure

FIGURES = {
    "mean_attention": "Mean attention over all sequences; outlined cells are the flipped keys N−1−i.",
    "offset_profile": "Mean attention at offset d from the flipped key (key = N−1−i+d), 95% CI whiskers.",
    "flip_mass_by_position": "Flip mass per query position, 95% CI band (it may be thinner than the line); "
    "the y axis is zoomed to the data so that the edges (i = 0, N−1) and the middle can be compared.",
    "entropy_distribution": "Distribution of attention-row entropies (0 = permutation, log N = uniform); "
    "the filled part are the rows of the edge queries i = 0 and N−1, whose flipped key has neighbours on "
    "one side only.",
}
OUTLINE_LABEL = "outlined cells: the flipped key N−1−i of each query i (the key the reversal must read)"


def make_figures(result: FlipAlignmentResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    from interp import plotting  # lazy: matplotlib only when figures are made

    n = result.seq_len
    flipped = [(i, n - 1 - i) for i in range(n)]
    captions: dict[str, str] = {}
    positions = [str(p) for p in range(n)]
    fig = plotting.plot_attention_grid(
        result.stack("mean_pattern"),
        positions,
        positions,
        outline=flipped,
        outline_label=OUTLINE_LABEL,
        title=f"Mean attention over {result.num_sequences:,} sequences",
    )
    save_figure(fig, directory, "mean_attention")
    fig = plotting.plot_offset_profile(
        result.offsets,
        result.stack("offset_mass"),
        result.stack("offset_mass", "ci_low"),
        result.stack("offset_mass", "ci_high"),
        reference=1.0 / n,
        title="Attention around the flipped key",
    )
    save_figure(fig, directory, "offset_profile")
    fig = plotting.plot_position_profile(
        result.stack("per_position_flip_mass"),
        result.stack("per_position_flip_mass", "ci_low"),
        result.stack("per_position_flip_mass", "ci_high"),
        ylabel="flip mass A[i, N−1−i]",
        reference=1.0 / n,
        reference_label="uniform 1/N",
        title="Flip mass by query position (edges vs middle)",
        zoom=True,
    )
    save_figure(fig, directory, "flip_mass_by_position")
    fig = plotting.plot_histograms(
        result.entropy_edges,
        result.stack("entropy_counts"),
        xlabel="row entropy (nats)",
        markers={"permutation": 0.0, "uniform log N": math.log(n)},
        title="Attention-row entropy",
        subset=result.stack("entropy_counts_edge"),
        subset_label="rows of the edge queries i = 0, N−1",
    )
    save_figure(fig, directory, "entropy_distribution")
    captions.update(FIGURES)  # the summaries first, then the single examples
    for k, (tokens, patterns) in enumerate(zip(result.example_tokens, result.example_patterns)):
        labels = [f"{p}:{int(t)}" for p, t in enumerate(tokens)]
        fig = plotting.plot_attention_grid(
            patterns,
            labels,
            labels,
            outline=flipped,
            tick_meaning="position:digit",
            outline_label=OUTLINE_LABEL,
            title=f"Example sequence {k}: {''.join(map(str, tokens))}",
        )
        name = f"example_attention_{k}"
        save_figure(fig, directory, name)
        captions[name] = (
            f"Attention of example sequence {k} (tick labels position:digit); "
            "outlined cells are the flipped keys."
        )
    return captions
