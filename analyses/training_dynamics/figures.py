"""Figures of the training-dynamics analysis (PNG + SVG), drawn from a :class:`TrainingDynamicsResult`.

The step axis is symmetric-log (linear below 1), so the initialisation (step 0) and the log-spaced
snapshots both show; every curve carries its 95% bootstrap band over evaluation sequences.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analyses.frame.figures import save_figure
from analyses.training_dynamics.result import TrainingDynamicsResult

FIGURES = {
    "accuracy_and_loss": "Held-out accuracy and loss against step; with the positional encoding zeroed; and "
    "the loss with every attention row restricted to the flipped key ± w (renormalised) or with the "
    "flipped key excluded (renormalised). Bands: 95% bootstrap CIs over evaluation sequences.",
    "attention_metrics": "Flip mass, neighbour mass (keys N−1−i ± 1, ± 2), argmax hit rate and row entropy "
    "of every head against step, with 95% CI bands; dashed: uniform attention.",
    "progress": "Each measure rescaled to its way from initial (0) to final (1) value, with 95% CI bands; "
    "dotted lines: the threshold fractions; dashed vertical lines and shaded spans: half-way crossing steps "
    "with their 95% CIs (these cover evaluation noise only and are often narrower than the line). Grey: "
    "the snapshot interval both compared crossings fall in when the verdict is unresolved.",
    "attention_snapshots": "Mean attention pattern of the flip head at selected snapshots "
    "(outlined cells: flipped keys N−1−i).",
}
_STYLE = {
    "accuracy": ("accuracy", "#0072B2"),
    "zero_pe_accuracy": ("accuracy, PE zeroed", "#CC79A7"),
    "loss": ("loss", "#000000"),
    "zero_pe_loss": ("loss, PE zeroed", "#CC79A7"),
    "restricted_loss": ("loss, rows restricted to flip ± w", "#009E73"),
    "excluded_loss": ("loss, flipped key excluded", "#D55E00"),
    "flip_mass": ("flip mass (flip head)", "#D55E00"),
    "argmax_hit_rate": ("argmax hit rate (flip head)", "#E69F00"),
    "entropy": ("entropy (flip head)", "#56B4E9"),
    "neighbour_mass": ("neighbour mass (flip head)", "#009E73"),
}


# Markers for the progress figure, so that measures of similar colour stay apart.
_MARKERS = {"accuracy": "o", "loss": "s", "flip_mass": "^", "argmax_hit_rate": "v", "zero_pe_accuracy": "D"}


def _step_axis(ax, steps: list[int]) -> None:
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(0, max(steps) * 1.15)
    ax.set_xlabel("optimizer step (symmetric log scale)")
    ax.grid(alpha=0.25, lw=0.5)


def _band(ax, result: TrainingDynamicsResult, name: str, label: str, colour: str, **where) -> None:
    x = np.array(result.steps, dtype=float)
    mean, low, high = (result.series(name, part, **where) for part in ("mean", "ci_low", "ci_high"))
    ax.fill_between(x, low, high, color=colour, alpha=0.25, lw=0)
    ax.plot(x, mean, marker="o", ms=2.5, lw=1.3, color=colour, label=label)


def snapshot_picks(flip: np.ndarray, count: int = 8) -> list[int]:
    """Indices of up to ``count`` snapshots that show the flip pattern forming: the first, the last, and
    for evenly spaced fractions of the way from first to last flip mass the closest snapshot not yet
    picked (so a fast transition still gets several panels)."""
    flip = np.asarray(flip, dtype=float)
    if len(flip) <= count:
        return list(range(len(flip)))
    span = flip[-1] - flip[0]
    progress = (flip - flip[0]) / span if span != 0 else np.linspace(0.0, 1.0, len(flip))
    picked = {0, len(flip) - 1}
    for target in np.linspace(0.0, 1.0, count)[1:-1]:
        free = [i for i in range(len(flip)) if i not in picked]
        picked.add(min(free, key=lambda i: abs(progress[i] - target)))
    return sorted(picked)


def make_figures(result: TrainingDynamicsResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    import matplotlib.pyplot as plt

    from interp import plotting  # lazy: matplotlib only when figures are made

    steps, n = result.steps, result.seq_len
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for name in ("accuracy", "zero_pe_accuracy"):
        if name in result.model_metrics:
            _band(left, result, name, *_STYLE[name])
    left.axhline(
        1.0 / result.d_vocab, ls="--", color="grey", lw=1, label=f"chance 1/C = {1 / result.d_vocab:.2f}"
    )
    left.set(ylim=(0, 1.02), ylabel="token accuracy", title="Accuracy")
    for name in ("loss", "zero_pe_loss", "restricted_loss", "excluded_loss"):
        if name in result.model_metrics:
            _band(right, result, name, *_STYLE[name])
    right.axhline(math.log(result.d_vocab), ls="--", color="grey", lw=1, label="log C (uniform output)")
    right.set(yscale="log", ylabel="cross-entropy (nats, log scale)", title="Loss")
    for ax in (left, right):
        _step_axis(ax, steps)
        ax.legend(fontsize=7)
    save_figure(fig, directory, "accuracy_and_loss")

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), layout="constrained")
    panels = (
        ("flip_mass", "flip mass A[i, N−1−i]", 1.0 / n),
        ("neighbour_mass", "neighbour mass (±1, ±2)", result.uniform_neighbour_mass),
        ("argmax_hit_rate", "argmax hit rate", 1.0 / n),
        ("entropy", "row entropy (nats)", math.log(n)),
    )
    for ax, (name, label, reference) in zip(axes.flat, panels):
        for i, (layer, head) in enumerate(np.ndindex(result.n_layers, result.n_heads)):
            colour = plotting.COLOURS[i % len(plotting.COLOURS)]
            _band(ax, result, name, f"layer {layer} · head {head}", colour, layer=layer, head=head)
        if reference is not None:
            ax.axhline(reference, ls="--", color="grey", lw=1, label="uniform attention")
        ax.set(ylabel=label, title=label)
        _step_axis(ax, steps)
        ax.legend(fontsize=7)
    save_figure(fig, directory, "attention_metrics")

    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    x = np.array(steps, dtype=float)
    answer = result.answer
    if answer is not None and answer.verdict == "unresolved" and answer.shared_interval is not None:
        a, b = answer.shared_interval
        ax.axvspan(a, b, color="grey", alpha=0.15, lw=0, label=f"both half-way crossings: steps {a}–{b}")
    for name in ("accuracy", "loss", "flip_mass", "argmax_hit_rate", "zero_pe_accuracy"):
        try:
            c = result.crossing(name, 0.5)
        except KeyError:
            continue
        label, colour = _STYLE[name]
        span = c.final - c.initial
        if span == 0:
            continue
        low, high = ((result.series(name, part) - c.initial) / span for part in ("ci_low", "ci_high"))
        ax.fill_between(x, np.minimum(low, high), np.maximum(low, high), color=colour, alpha=0.25, lw=0)
        ax.plot(
            x,
            (result.series(name) - c.initial) / span,
            marker=_MARKERS[name],
            ms=3.5,
            lw=1.3,
            color=colour,
            label=f"{label}: half-way at {c.step.mean:.0f} [{c.step.ci_low:.0f}, {c.step.ci_high:.0f}]",
        )
        ax.axvline(c.step.mean, color=colour, lw=1, ls="--")
        ax.axvspan(c.step.ci_low, c.step.ci_high, color=colour, alpha=0.2, lw=0)
    for f in result.fractions:
        ax.axhline(f, ls=":", color="grey", lw=0.8)
    title = "Which measure moves first?"
    if answer is not None:
        title += (
            f"\n{answer.first} − {answer.second} at {answer.fraction:.0%}: {answer.verdict}"
            + (
                f" (both between steps {answer.shared_interval[0]} and {answer.shared_interval[1]})"
                if answer.verdict == "unresolved" and answer.shared_interval is not None
                else ""
            )
        ).replace("_", " ")
    ax.set(ylabel="progress (0 = initial, 1 = final value)")
    ax.set_title(title, fontsize=10)
    _step_axis(ax, steps)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, directory, "progress")

    layer, head = result.flip_head
    picks = snapshot_picks(result.series("flip_mass"))
    cols = min(4, len(picks))
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols + 0.8, 3.0 * rows), squeeze=False, layout="constrained"
    )
    image = None
    for ax in axes.flat[len(picks) :]:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.flat, picks)):
        image = ax.imshow(result.mean_patterns[i, layer, head], cmap="viridis", vmin=0, vmax=1)
        plotting.outline_cells(ax, plotting.flipped_cells(n), lw=0.9)
        ax.set_title(f"step {steps[i]}", fontsize=9)
        ax.set_xticks([0, n - 1])
        ax.set_yticks([0, n - 1])
        if k >= len(picks) - cols:  # bottom panel of its column
            ax.set_xlabel("key", fontsize=8, labelpad=-6)
        if k % cols == 0:
            ax.set_ylabel("query", fontsize=8, labelpad=-8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="mean attention weight")
    fig.suptitle(f"Mean attention of layer {layer} · head {head} during training", fontsize=10)
    save_figure(fig, directory, "attention_snapshots")
    return dict(FIGURES)
