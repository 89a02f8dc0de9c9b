"""Figures of the zoo summary (PNG + SVG), drawn from a :class:`ZooSummaryResult`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analyses import common
from analyses.zoo_summary_result import LABELS, ZooSummaryResult

FIGURES = {
    "seed_metrics": "Every seed (dots) and the mean over seeds with its 95% t-interval (bars) for each "
    "architecture; dashed: uniform attention (1/N) or chance accuracy (1/C).",
    "differences": "Difference from the reference architecture (mean over seeds, 95% Welch interval); an "
    "interval that excludes 0 is a difference the seeds resolve.",
    "mean_patterns": "Mean attention pattern of the best head (largest flip mass) of the first seed of every "
    "architecture (outlined: flipped keys).",
}
PANELS = (
    "flip_mass",
    "neighbour_mass",
    "zero_pe_accuracy",
    "flip_coverage",
    "accuracy",
    "first_perfect_step",
)
DIFFERENCES = ("flip_mass", "neighbour_mass", "zero_pe_accuracy", "first_perfect_step")


def make_figures(result: ZooSummaryResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    import matplotlib.pyplot as plt

    from interp import plotting  # lazy: matplotlib only when figures are made (sets the Agg backend)

    archs = result.architectures
    x = np.arange(len(archs))
    labels = [a.name for a in archs]
    colours = [
        plotting.COLOURS[{"sinusoidal": 0, "learned": 1}.get(a.positional_embedding, 7)] for a in archs
    ]
    chance = 1.0 / result.d_vocab
    references = {
        "flip_mass": 1.0 / result.seq_len,
        "neighbour_mass": None,
        "flip_coverage": 1.0 / result.seq_len,
        "zero_pe_accuracy": chance,
        "accuracy": chance,
        "first_perfect_step": None,
    }
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), layout="constrained")
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=64)  # fixed: same numbers, same figure
    for ax, metric in zip(axes.flat, PANELS):
        for i, (a, colour) in enumerate(zip(archs, colours)):
            s = a.stats.get(metric)
            if s is None:
                continue
            values = np.array(s.values, dtype=float)
            ax.scatter(i + jitter[: len(values)], values, s=14, color=colour, alpha=0.6, lw=0)
            low, high = s.ci_low, s.ci_high
            err = [[s.mean - low], [high - s.mean]] if math.isfinite(low) else None
            ax.errorbar(i + 0.3, s.mean, yerr=err, fmt="D", ms=5, color="black", capsize=3, lw=1.2)
        if references[metric] is not None:
            ax.axhline(references[metric], ls="--", color="grey", lw=1)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    common.save_figure(fig, directory, "seed_metrics", tight=False)

    compared = [a for a in archs if a.differences]
    fig, axes = plt.subplots(
        1,
        len(DIFFERENCES),
        figsize=(4.2 * len(DIFFERENCES), 0.38 * len(compared) + 1.6),
        layout="constrained",
        sharey=True,
        squeeze=False,
    )
    for ax, metric in zip(axes[0], DIFFERENCES):
        for i, a in enumerate(compared):
            d = a.differences.get(metric)
            if d is None:
                continue
            finite = math.isfinite(d.ci_low)
            ax.errorbar(
                d.mean,
                i,
                xerr=[[d.mean - d.ci_low], [d.ci_high - d.mean]] if finite else None,
                fmt="o",
                ms=4,
                color="black" if finite else "grey",
                capsize=3,
                lw=1.2,
            )
        ax.axvline(0, color="#D55E00", lw=1)
        ax.set_title(f"Δ {LABELS[metric]}", fontsize=9)
        ax.grid(axis="x", alpha=0.3, lw=0.5)
    axes[0, 0].set_yticks(range(len(compared)), [a.name for a in compared], fontsize=8)
    axes[0, 0].set_ylim(max(len(compared), 1) - 0.5, -0.5)
    if not compared:
        axes[0, 0].text(0.02, 0.5, "no other architecture", transform=axes[0, 0].transAxes, fontsize=9)
    fig.suptitle(f"Difference from {result.reference}", fontsize=10)
    common.save_figure(fig, directory, "differences", tight=False)

    firsts = [next(r for r in result.runs if r.architecture == a.name) for a in archs]
    n = result.seq_len
    cols = min(5, len(firsts))
    rows = math.ceil(len(firsts) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.9 * cols + 0.8, 3.0 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(firsts) :]:
        ax.axis("off")
    image = None
    for ax, r in zip(axes.flat, firsts):
        image = ax.imshow(r.mean_pattern, cmap="viridis", vmin=0, vmax=1)
        ax.plot(np.arange(n - 1, -1, -1), np.arange(n), "s", ms=3.0, mfc="none", mec="#ff3b30", mew=0.6)
        ax.set_title(f"{r.architecture}\nseed {r.seed}, head {r.best_head[0]}.{r.best_head[1]}", fontsize=8)
        ax.set_xticks([0, n - 1])
        ax.set_yticks([0, n - 1])
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean attention weight")
    common.save_figure(fig, directory, "mean_patterns", tight=False)
    return dict(FIGURES)
