"""Figures of the zoo summary (PNG + SVG), drawn from a :class:`ZooSummaryResult`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analyses.frame.figures import save_figure
from analyses.zoo_summary.result import LABELS, ZooSummaryResult
from interp.metrics import NEIGHBOUR_OFFSETS, offset_query_counts

MAX_SEED_COLUMNS = 5  # seeds shown per architecture in the mean-pattern figure

FIGURES = {
    "seed_metrics": "Every seed (dots, with the run's 95% bootstrap CI over evaluation sequences where it "
    "has one) and the mean over seeds with its 95% t-interval (diamonds; no interval with one seed) for each "
    "architecture; dashed: uniform attention (flip mass 1/N, neighbour mass Σ_d (N−|d|)/N²) or chance "
    "accuracy (1/C).",
    "differences": "Difference from the reference architecture (mean over seeds, 95% Welch interval); an "
    "interval that excludes 0 is a difference the seeds resolve.",
    "mean_patterns": "Mean attention pattern (query position × key position) of the best head (largest "
    "flip mass) of each seed: one row per architecture, one column per seed (at most the first "
    f"{MAX_SEED_COLUMNS}); outlined cells: flipped keys N−1−i.",
}
PANELS = (
    "flip_mass",
    "neighbour_mass",
    "zero_pe_accuracy",
    "flip_coverage",
    "accuracy",
    "first_perfect_step",
)
YLABELS = {
    "flip_mass": "attention weight",
    "neighbour_mass": "attention weight",
    "zero_pe_accuracy": "token accuracy",
    "flip_coverage": "attention weight",
    "accuracy": "token accuracy",
    "first_perfect_step": "optimizer steps",
    "fit_seconds": "seconds",
}
DIFFERENCES = ("flip_mass", "neighbour_mass", "zero_pe_accuracy", "first_perfect_step")


def make_figures(result: ZooSummaryResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

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
        "neighbour_mass": sum(offset_query_counts(result.seq_len, NEIGHBOUR_OFFSETS)) / result.seq_len**2,
        "flip_coverage": 1.0 / result.seq_len,
        "zero_pe_accuracy": chance,
        "accuracy": chance,
        "first_perfect_step": None,
    }
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), layout="constrained")
    jitter = np.random.default_rng(0).uniform(-0.06, 0.06, size=64)  # fixed: same numbers, same figure
    rotate = len(archs) > 4 or max((len(label) for label in labels), default=0) > 18
    for ax, metric in zip(axes.flat, PANELS):
        for i, (a, colour) in enumerate(zip(archs, colours)):
            s = a.stats.get(metric)
            if s is None or not math.isfinite(s.median):  # no PE to zero, or never reached 100%
                missing = {"zero_pe_accuracy": "no PE", "first_perfect_step": "never reached"}.get(
                    metric, "n/a"
                )
                ax.text(
                    i,
                    0.5,
                    missing,
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    fontsize=8,
                    color="grey",
                )
                continue
            runs = [r for r in result.runs if r.architecture == a.name]
            for k, r in enumerate(runs):  # one dot per seed, with its evaluation CI when it has one
                value, e = r.value(metric), r.measured.get(metric)
                err = [[max(value - e.ci_low, 0)], [max(e.ci_high - value, 0)]] if e is not None else None
                ax.errorbar(
                    i - 0.12 + jitter[k % len(jitter)],
                    value,
                    yerr=err,
                    fmt="o",
                    ms=4,
                    color=colour,
                    alpha=0.8,
                    lw=0.8,
                    capsize=1.5,
                )
            low, high = s.ci_low, s.ci_high
            err = [[s.median - low], [high - s.median]] if math.isfinite(low) else None
            ax.errorbar(i + 0.15, s.median, yerr=err, fmt="D", ms=5, color="black", capsize=3, lw=1.2)
        if references[metric] is not None:
            ax.axhline(references[metric], ls="--", color="grey", lw=1)
        ax.set_xlim(-0.5, len(archs) - 0.5)
        if rotate:
            ax.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
        else:
            ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(YLABELS[metric])
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    few = any(not math.isfinite(s.ci_low) for a in archs for s in a.stats.values() if math.isfinite(s.median))
    handles = [
        Line2D(
            [],
            [],
            ls="none",
            marker="o",
            ms=4,
            color="grey",
            label="one seed (whisker: its 95% CI over evaluation sequences)",
        ),
        Line2D(
            [],
            [],
            ls="none",
            marker="D",
            ms=5,
            color="black",
            label="median over seeds (bar: order-statistic interval, 95% or [min, max]"
            + ("; none with < 3 seeds)" if few else ")"),
        ),
        Line2D([], [], ls="--", color="grey", lw=1, label="uniform attention or chance accuracy 1/C"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    save_figure(fig, directory, "seed_metrics")

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
    save_figure(fig, directory, "differences")

    # One row per architecture, one column per seed (the first MAX_SEED_COLUMNS seeds): a glance shows
    # whether the seeds of an architecture learn the same pattern, not only whether the first one does.
    grid = [[r for r in result.runs if r.architecture == a.name][:MAX_SEED_COLUMNS] for a in archs]
    n = result.seq_len
    rows, cols = len(grid), max((len(row) for row in grid), default=1)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols + 1.6, 2.3 * rows + 0.4), squeeze=False, layout="constrained"
    )
    image = None
    for axes_row, runs in zip(axes, grid):
        for col, ax in enumerate(axes_row):
            if col >= len(runs):
                ax.axis("off")
                continue
            r = runs[col]
            image = ax.imshow(r.mean_pattern, cmap="viridis", vmin=0, vmax=1)
            plotting.outline_cells(ax, plotting.flipped_cells(n), lw=0.9)
            ax.set_title(f"seed {r.seed}, head {r.best_head[0]}.{r.best_head[1]}", fontsize=8)
            ax.set_xticks([0, n - 1])
            ax.set_yticks([0, n - 1])
            ax.set_xlabel("key position", fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{r.architecture}\nquery position", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean attention weight")
    save_figure(fig, directory, "mean_patterns")
    captions = dict(FIGURES)
    if any(r.certified for r in result.runs):
        captions[CERTIFIED_FIGURE] = certified_figure(result, directory)
    return captions


CERTIFIED_FIGURE = "certified_vs_mechanism"


def certified_figure(result: ZooSummaryResult, directory: Path) -> str:
    """Per certified run: the certified per-digit bounds (dot: lower; bar up to the upper) and their gap
    against flip mass, neighbour mass and tolerance margin, Spearman's ρ in each title; returns the
    caption. Censored margins are drawn at the panel's edge as open triangles."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from analyses.zoo_summary.certified import NAMES, OUTCOMES, SCALARS, run_table
    from interp import plotting

    table = run_table(result.runs)
    association = result.certified_association() or {"rows": []}
    rows = {(r["scalar"], r["outcome"]): r for r in association["rows"]}
    archs = list(dict.fromkeys(table["architecture"].tolist()))
    colour = {a: plotting.COLOURS[k % len(plotting.COLOURS)] for k, a in enumerate(archs)}
    colours = [colour[a] for a in table["architecture"]]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.6), layout="constrained", squeeze=False)
    for col, scalar in enumerate(SCALARS):
        x = table[scalar]
        finite = np.isfinite(x)
        span = (x[finite].min(), x[finite].max()) if finite.any() else (0.0, 1.0)
        pad = 0.08 * (span[1] - span[0] or 1.0)
        edges = {np.inf: span[1] + pad, -np.inf: span[0] - pad}
        shown = np.array([edges.get(v, v) for v in x], dtype=np.float64)
        for row, outcome in enumerate(OUTCOMES):
            ax = axes[row, col]
            y = table[outcome]
            for k in range(len(x)):
                if np.isnan(shown[k]):
                    continue
                marker = "o" if finite[k] else (">" if x[k] > 0 else "<")
                face = colours[k] if finite[k] else "none"
                if outcome == "certified_lower":
                    ax.plot([shown[k]] * 2, [y[k], table["certified_upper"][k]], color=colours[k], lw=1.2)
                ax.plot(shown[k], y[k], marker, ms=6, mfc=face, mec=colours[k], mew=1.2)
            for side, label in (
                (np.inf, "never below 99%\n(+∞)"),
                (-np.inf, "below 99% at\nits own pattern (−∞)"),
            ):
                if (x == side).any():
                    ax.axvline(edges[side], color="grey", ls=":", lw=0.8)
                    ax.text(edges[side], 0.02, label, transform=ax.get_xaxis_transform(), fontsize=7,
                            color="grey", ha="right" if side < 0 else "left", va="bottom")  # fmt: skip
            if not finite.any():  # every margin censored: the positions carry no number
                ax.set_xticks([])
            r = rows.get((scalar, outcome))
            title = "ρ n/a" if r is None else r["text"]
            ax.set_title(f"{NAMES[outcome]} vs {NAMES[scalar]}\n{title}", fontsize=9)
            ax.set_xlabel(NAMES[scalar] + (" (own − 99% threshold, uniform mixing)" if col == 2 else ""))
            ax.grid(alpha=0.3, lw=0.5)
            if col == 0:
                ax.set_ylabel("per-digit accuracy over all C^N inputs" if row == 0 else "upper − lower bound")
    handles = [Line2D([], [], ls="none", marker="o", color=colour[a], label=a) for a in archs] + [
        Line2D([], [], color="grey", marker="o", label="certified lower bound (bar: up to the upper)"),
        Line2D(
            [], [], ls="none", marker=">", mfc="none", mec="grey", label="margin censored (drawn at the edge)"
        ),
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(5, len(handles)), fontsize=8, frameon=False
    )
    fig.suptitle(
        f"Does a higher flip mass buy a tighter proof? {len(table['name'])} certified runs, budget "
        f"{association.get('budget', 'n/a')} each",
        fontsize=10,
    )
    save_figure(fig, directory, CERTIFIED_FIGURE)
    return (
        "Each certified (1-layer) run of the zoo: top, its certified per-digit accuracy over all C^N inputs "
        "(dot: lower bound; bar: up to the upper bound); bottom, the gap between the two (what the per-run "
        f"budget, {association.get('budget', 'n/a')}, left undecided; 0 when resolved), against the best "
        "head's flip mass, neighbour mass and tolerance margin (own flip mass − the flip mass where accuracy "
        "falls below 99% under uniform mixing; open triangles at the edge: censored, beyond every measured "
        "margin). Titles: Spearman's ρ over the runs with its "
        f"{result.confidence:.0%} Fisher-z interval and n. An association across runs, not an effect."
    )
