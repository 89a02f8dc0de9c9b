"""Figures of the positional-encoding ablation (each with chance and the no-position ceiling)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.figures import estimate_arrays, save_figure
from interp import effect_plots as ep

MAIN_FAMILIES = ("none", "zero", "mean", "shuffle", "shuffle_mean", "shift", "mirror")
FAMILY_COLOURS = {
    "none": "#000000",
    "zero": "#D55E00",
    "mean": "#E69F00",
    "shuffle": "#56B4E9",
    "shuffle_mean": "#0072B2",
    "shift": "#009E73",
    "mirror": "#CC79A7",
}
PROFILE_CONDITIONS = ("none", "zero", "mean", "shuffle", "shift_+1", "shift_-1", "mirror")
# Line styles of the per-position curves: "none" and "mirror" (both 1 everywhere for the tutorial model)
# and the two shifts (1 at one end only) must stay apart where they coincide: "none" is a thick solid
# line drawn under the others, the rest differ in colour, dash pattern and marker.
PROFILE_STYLES = {
    "none": dict(color="#000000", ls="-", lw=4.0, marker="o", ms=7, alpha=0.35, zorder=2),
    "zero": dict(color=FAMILY_COLOURS["zero"], ls="-", lw=1.3, marker="s", ms=4),
    "mean": dict(color=FAMILY_COLOURS["mean"], ls="-", lw=1.3, marker="^", ms=4),
    "shuffle": dict(color=FAMILY_COLOURS["shuffle"], ls=":", lw=1.5, marker="v", ms=4),
    "shift_+1": dict(color=FAMILY_COLOURS["shift"], ls="--", lw=1.3, marker=">", ms=5),
    "shift_-1": dict(color="#0072B2", ls="-.", lw=1.3, marker="<", ms=5),
    "mirror": dict(color=FAMILY_COLOURS["mirror"], ls=(0, (4, 2)), lw=1.6, marker="x", ms=7, mew=1.8),
}


def _triple(results: list[Any], attr: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return estimate_arrays(getattr(r, attr) for r in results)


def _compact(value: float) -> str:
    """6.28 → "6.3", 353.4 → "353", 1990 → "2k", 11190 → "11k" (tick labels that fit)."""
    if value < 10:
        return f"{value:.1f}"
    if value < 1000:
        return f"{value:.0f}"
    return f"{value / 1000:.2g}k"


def make_figures(result: Any, directory: Path) -> dict[str, str]:
    """Write every figure (PNG + SVG) into ``directory``; return {name: caption}."""
    acc_refs = {"chance 1/C": result.chance, "no-position ceiling": result.ceiling_accuracy}
    loss_refs = {"chance log C": math.log(result.num_categories)}
    if result.ceiling is not None:
        loss_refs["no-position loss floor"] = result.ceiling.loss
    conf = f"{result.confidence:.0%}"
    captions = {}

    # accuracy (left) and loss (right) panels: (attribute, y label, reference lines, title word)
    panels = (
        ("accuracy", "accuracy", acc_refs, "Accuracy"),
        ("loss", "cross entropy (nats)", loss_refs, "Loss"),
    )
    main = [r for r in result.conditions.values() if r.condition.family in MAIN_FAMILIES]
    labels = [r.condition.label for r in main]
    colours = [FAMILY_COLOURS[r.condition.family] for r in main]
    fig, axes = ep.figure(2, 1, panel=(6.4, 4.2))
    for ax, (attr, ylabel, refs, word) in zip(axes.flat, panels):
        title = f"{word} under PE ablations"
        ep.bars(
            ax, labels, *_triple(main, attr), references=refs, ylabel=ylabel, title=title, colours=colours
        )
    axes[0, 0].set_ylim(0, 1.05)
    save_figure(fig, directory, "conditions")
    captions["conditions"] = (
        f"Accuracy and loss per condition (means over sequences, {conf} bootstrap CI whiskers). Reference "
        "lines: chance and the best a model without positional information can do."
    )

    scale = result.family("scale")
    if scale:
        alphas = np.array([r.condition.parameters["alpha"] for r in scale])
        fig, axes = ep.figure(2, 1, panel=(5.4, 3.8))
        for ax, (attr, ylabel, refs, word) in zip(axes.flat, panels):
            ep.curves(
                ax,
                alphas,
                {attr: _triple(scale, attr)},
                references=refs,
                xlabel="scale α of the positional encoding",
                ylabel=ylabel,
                title=f"{word} vs α",
                xticks=alphas,
            )
        axes[0, 0].set_ylim(0, 1.05)
        save_figure(fig, directory, "alpha_curve")
        captions["alpha_curve"] = (
            f"The encoding scaled by α (α = 1: unchanged, α = 0: removed); {conf} CI bands."
        )

    bands = result.family("band")
    if bands:
        k = np.array([r.condition.parameters["band"] for r in bands])
        ticks = [f"{i}\n{_compact(result.band_wavelengths[i])}" for i in k]
        none = result.conditions["none"]
        fig, axes = ep.figure(2, 1, panel=(max(5.4, 0.42 * len(k)), 3.8))
        for ax, (attr, ylabel, refs, word) in zip(axes.flat, panels):
            ep.curves(
                ax,
                k,
                {"band removed": _triple(bands, attr)},
                references={**refs, "no ablation": getattr(none, attr).mean},
                xlabel="band k (dims 2k, 2k+1) / wavelength 2π/ω_k in positions",
                ylabel=ylabel,
                title=f"{word} without one frequency",
                xticks=k,
                xticklabels=ticks,
            )
        axes[0, 0].set_ylim(0, 1.05)
        save_figure(fig, directory, "frequency_bands")
        captions["frequency_bands"] = (
            "Removing one sin/cos pair at a time (low k = high frequency, short wavelength); "
            f"{conf} CI bands. Which frequencies does the model depend on?"
        )

    present = [name for name in PROFILE_CONDITIONS if name in result.conditions]
    fig, axes = ep.figure(1, 1, panel=(7.2, 4.0))
    series = {
        result.conditions[name].condition.label: estimate_arrays(
            result.conditions[name].per_position_accuracy
        )
        for name in present
    }
    ep.curves(
        axes[0, 0],
        np.arange(result.seq_len),
        series,
        references=acc_refs,
        xlabel="output position i",
        ylabel="accuracy",
        title="Accuracy by position",
        xticks=np.arange(result.seq_len),
        styles={result.conditions[name].condition.label: PROFILE_STYLES[name] for name in present},
    )
    axes[0, 0].set_ylim(0, 1.05)
    axes[0, 0].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, directory, "per_position")
    captions["per_position"] = (
        f"Accuracy at each output position under selected conditions; {conf} CI bands. Curves that coincide "
        "(e.g. none and mirror, both at 1) are told apart by line style and marker: none is the thick grey "
        "line underneath."
    )

    readout = [
        name for name in ("none", "shift_+1", "shift_-1", "mirror", "zero") if name in result.conditions
    ]
    groups = [f"d = {d:+d}" if d else "d = 0 (target)" for d in result.conditions["none"].offset_match]
    series = {}
    for name in readout:
        estimates = list(result.conditions[name].offset_match.values())
        series[result.conditions[name].condition.label] = estimate_arrays(estimates)
    fig, axes = ep.figure(1, 1, panel=(7.2, 4.0))
    ep.grouped_bars(
        axes[0, 0],
        groups,
        series,
        references={"chance 1/C": result.chance},
        ylabel="share of predictions = t[N−1−i+d]",
        title="Which input does the output copy?",
    )
    axes[0, 0].set_ylim(0, 1.05)
    save_figure(fig, directory, "shift_readout")
    captions["shift_readout"] = (
        "Share of outputs equal to the token at N−1−i+d (d = 0 is accuracy). A model that reads PE literally "
        "copies t[N−3−i] (d = −2) under shift +1 and t[N+1−i] (d = +2) under shift −1; "
        f"{conf} CI whiskers."
    )

    heads = list(result.conditions["none"].flip_mass)
    if len(heads) <= 2:
        series = {}
        for head in heads:
            estimates = [r.flip_mass[head] for r in main]
            series[f"head {head}"] = estimate_arrays(estimates)
        fig, axes = ep.figure(1, 1, panel=(7.2, 4.0))
        ep.grouped_bars(
            axes[0, 0],
            labels,
            series,
            references={"uniform 1/N": 1.0 / result.seq_len},
            ylabel="flip mass A[i, N−1−i]",
            title="Attention on the flipped key",
        )
        for label in axes[0, 0].get_xticklabels():
            label.set(rotation=45, ha="right")
        how = "CI whiskers; dashed: uniform attention 1/N"
    else:  # many heads: a conditions × heads grid reads better than dozens of bars
        values = np.array([[r.flip_mass[head].mean for head in heads] for r in main])
        notes = [[f"{v:.2f}" for v in row] for row in values]
        fig, axes = ep.figure(1, 1, panel=(min(1.0 + 0.75 * len(heads), 12.0), 1.2 + 0.38 * len(main)))
        ep.grid(
            axes[0, 0],
            values,
            labels,
            [f"L{h.replace('.', 'H')}" for h in heads],
            annotations=notes,
            title=f"Attention on the flipped key (uniform 1/N = {1.0 / result.seq_len:.3f})",
            colorbar_label="flip mass A[i, N−1−i]",
            centre=None,
            xlabel="head",
            ylabel="condition",
        )
        how = "CIs in metrics.json"
    save_figure(fig, directory, "flip_mass")
    captions["flip_mass"] = f"Mean attention on the flipped key per head and condition; {conf} {how}."
    return captions
