"""Figures of the length-generalisation analysis (PNG + SVG), drawn from its result object."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analyses.frame.figures import estimate_arrays, save_figure
from analyses.length_generalisation.result import LengthGeneralisationResult
from interp import effect_plots as ep

TASK_COLOUR, LEARNED_COLOUR, SHARED_COLOUR = "#0072B2", "#D55E00", "#56B4E9"
MAX_MAP_HEADS = 8  # rows of the mean-attention figure; more heads would make an unreadable page


def _mark_lengths(ax, result: LengthGeneralisationResult) -> None:
    """Training length as a vertical line; skipped lengths as grey crosses on the x axis."""
    ax.axvline(result.train_length, color="#999999", lw=1, ls=":", zorder=1)
    ax.annotate(
        f"N_train = {result.train_length}",
        (result.train_length, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -10),
        textcoords="offset points",
        fontsize=7,
        color="dimgrey",
    )
    if result.skipped:
        xs = [s.length for s in result.skipped]
        ax.plot(xs, [0.0] * len(xs), "x", color="#777777", ms=7, mew=1.5, clip_on=False, zorder=4,
                label="skipped: no positional encoding")  # fmt: skip


def _band(ax, x: np.ndarray, triple: tuple, colour: str, label: str, ls: str = "-", ms: float = 3.5) -> None:
    """A line with markers and its shaded CI band (NaN points leave gaps)."""
    mean, low, high = triple
    ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    ax.plot(x, mean, marker="o", ms=ms, lw=1.3, ls=ls, color=colour, label=label, zorder=3)


def _ticks(result: LengthGeneralisationResult) -> list[int]:
    return sorted({r.length for r in result.lengths} | {s.length for s in result.skipped})


def accuracy_figure(result: LengthGeneralisationResult, directory: Path) -> str:
    lengths = np.array([r.length for r in result.lengths])
    fig, axes = ep.figure(2, 1, panel=(5.8, 4.0))
    ax = axes[0, 0]
    series = {
        "accuracy (per digit)": estimate_arrays([r.accuracy for r in result.lengths]),
        "sequence accuracy": estimate_arrays([r.sequence_accuracy for r in result.lengths]),
        f"copies t[{result.train_length - 1}−i]": estimate_arrays(
            [r.learned_copy_rate for r in result.lengths]
        ),
    }
    ticks = _ticks(result)
    ep.curves(
        ax,
        lengths,
        series,
        references={"chance 1/C": result.chance},
        xlabel="evaluation length N′",
        ylabel="share",
        title="Accuracy vs sequence length",
        xticks=ticks,
    )
    _mark_lengths(ax, result)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(min(ticks) - 1, max(ticks) + 1)
    ax.legend(fontsize=7, loc="center right")

    ax = axes[0, 1]
    for k, r in enumerate(result.lengths):
        colour = ep.COLOURS[k % len(ep.COLOURS)]
        _band(
            ax,
            np.arange(r.length),
            estimate_arrays(r.per_position_accuracy),
            colour,
            f"N′ = {r.length}",
            ms=2.5,
        )
    ep.reference_lines(ax, {"chance 1/C": result.chance})
    longest = max(r.length for r in result.lengths)
    ax.set(xlabel="output position i", ylabel="accuracy")
    ax.set_title("Accuracy by position", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xticks(np.arange(0, longest, 2 if longest > 16 else 1))
    # A figure legend "outside" the right panel: constrained layout makes room for it (an axes legend
    # anchored outside its axes is not laid out, and was clipped at the figure's edge).
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize=7)
    save_figure(fig, directory, "accuracy")
    return (
        "Left: accuracy, sequence accuracy and the share of outputs that copy "
        f"t[{result.train_length - 1}−i] (the token at the position the model learned to read), "
        "vs the evaluation length N′; "
        f"{result.confidence:.0%} bootstrap CI bands, chance 1/C dashed. Right: accuracy at each output "
        "position for every evaluated length."
    )


def attention_targets_figure(result: LengthGeneralisationResult, directory: Path) -> str:
    heads = result.heads
    cols = min(len(heads), 4)
    rows = -(-len(heads) // cols)
    lengths = np.array([r.length for r in result.lengths])
    g = f"{result.train_length - 1}−i"
    fig, axes = ep.figure(cols, rows, panel=(5.0, 3.6))
    for k, (layer, head) in enumerate(heads):
        ax = axes[k // cols, k % cols]
        at = [r.head(layer, head) for r in result.lengths]
        _band(
            ax,
            lengths,
            estimate_arrays([h.task_flip_mass for h in at]),
            TASK_COLOUR,
            "task key N′−1−i (all queries)",
        )
        _band(
            ax,
            lengths,
            estimate_arrays([h.learned_flip_mass for h in at]),
            LEARNED_COLOUR,
            f"learned key {g}",
        )
        shared = estimate_arrays([h.task_flip_mass_shared for h in at])
        _band(ax, lengths, shared, SHARED_COLOUR, f"task key N′−1−i (queries where {g} exists)", ls="--")
        ax.set(xlabel="evaluation length N′", ylabel="mean attention weight")
        ax.set_xticks(_ticks(result))
        ax.set_title(f"layer {layer} · head {head}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.plot(lengths, 1.0 / lengths, color="#777777", ls=":", lw=1, label="uniform 1/N′")
        _mark_lengths(ax, result)
        ax.set_ylim(-0.02, 1.05)
    for k in range(len(heads), rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    # One legend for every panel (the series are the same), under the panels.
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=7)
    save_figure(fig, directory, "attention_targets")
    return (
        f"Where query i looks at length N′: mean attention on the task key N′−1−i and on the learned key "
        f"{g} (the absolute position the model was trained to read; it exists only for some queries, and "
        f"for none when N′ ≤ {result.train_length // 2}), with the task key's mass on those same queries "
        f"for a like-for-like comparison; {result.confidence:.0%} CI bands."
    )


def mean_attention_figure(result: LengthGeneralisationResult, directory: Path) -> str:
    from matplotlib.patches import Rectangle

    heads = result.heads[:MAX_MAP_HEADS]
    # Panels (head, length): one row per head; a single head wraps its lengths into rows of three.
    panels = [(hd, r) for hd in heads for r in result.lengths]
    n_cols = len(result.lengths) if len(heads) > 1 else min(3, len(result.lengths))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = ep.figure(n_cols, n_rows, panel=(2.9, 2.9))
    image = None
    for k, ((layer, head), r) in enumerate(panels):
        ax = axes[k // n_cols, k % n_cols]
        n = r.length
        image = ax.imshow(r.head(layer, head).mean_pattern, cmap="viridis", vmin=0, vmax=1)
        for i in range(n):
            ax.add_patch(Rectangle((n - 1 - i - 0.5, i - 0.5), 1, 1, fill=False, ec="#ff3b30", lw=0.9))
            g = result.train_length - 1 - i
            if 0 <= g < n and g != n - 1 - i:
                ax.add_patch(
                    Rectangle((g - 0.5, i - 0.5), 1, 1, fill=False, ec="white", lw=0.9, ls=(0, (2, 1)))
                )
        step = max(1, n // 8)
        ax.set_xticks(range(0, n, step))
        ax.set_yticks(range(0, n, step))
        ax.tick_params(labelsize=6)
        ax.set_title(
            f"N′ = {n}" + (f" · layer {layer} head {head}" if len(result.heads) > 1 else ""), fontsize=8
        )
        ax.set_xlabel("key", fontsize=7)
        ax.set_ylabel("query i", fontsize=7)
    for k in range(len(panels), n_rows * n_cols):
        axes[k // n_cols, k % n_cols].set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=min(0.8, 2.0 / n_rows), label="mean attention weight")
    save_figure(fig, directory, "mean_attention")
    more = f" (first {MAX_MAP_HEADS} heads)" if len(result.heads) > MAX_MAP_HEADS else ""
    return (
        f"Mean attention pattern at each evaluated length{more}. Red boxes: the task keys N′−1−i; "
        f"dashed white boxes: the learned keys {result.train_length - 1}−i where they exist and differ."
    )


def make_figures(result: LengthGeneralisationResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    return {
        "accuracy": accuracy_figure(result, directory),
        "attention_targets": attention_targets_figure(result, directory),
        "mean_attention": mean_attention_figure(result, directory),
    }
