"""Figures of the tolerance analysis: accuracy against flip mass per family, and the readout."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.figures import estimate_arrays, save_figure
from interp import effect_plots as ep

COLOURS = {"temperature": "#0072B2", "neighbours": "#D55E00", "uniform": "#009E73", "single_key": "#CC79A7"}
MARKERS = {"temperature": "o", "neighbours": "s", "uniform": "^", "single_key": "D"}


def _band(ax: Any, x: np.ndarray, triple: tuple[np.ndarray, ...], label: str, kind: str) -> None:
    mean, low, high = triple
    order = np.argsort(x)
    ax.plot(x[order], mean[order], color=COLOURS[kind], marker=MARKERS[kind], ms=3, lw=1.3, label=label)
    ax.fill_between(x[order], low[order], high[order], color=COLOURS[kind], alpha=0.2, lw=0)


def make_figures(result: Any, directory: Path) -> dict[str, str]:
    """Write every figure (PNG + SVG) into ``directory``; return {name: caption}."""
    conf = f"{result.confidence:.0%}"
    own = result.own["flip_mass"].mean
    captions = {}

    fig, axes = ep.figure(2, 1, panel=(5.6, 4.0))
    for ax, statistic, word in (
        (axes[0, 0], "accuracy", "per digit"),
        (axes[0, 1], "sequence_accuracy", "whole sequences right"),
    ):
        for f in result.families:
            flip = estimate_arrays(f.flip_mass)[0]
            _band(ax, flip, estimate_arrays(getattr(f, statistic)), f.name, f.kind)
            t = result.threshold(f.name, result.level, statistic)
            if t.status == "crossed" and math.isfinite(t.flip_mass.mean):
                ax.plot([t.flip_mass.mean], [result.level], marker="|", ms=14, mew=2, color=COLOURS[f.kind])
        ax.axvline(own, color="#000", lw=1, ls=":", label=f"own flip mass ({own:.3f})")
        for lvl in (result.level, result.breaking_level):
            ax.axhline(lvl, color="#777", lw=0.8, ls="--")
        ax.set(xlabel="flip mass A[i, N−1−i] after the intervention", ylabel=f"accuracy ({word})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Accuracy {word} along each family", fontsize=10)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    save_figure(fig, directory, "tolerance_curves")
    captions["tolerance_curves"] = (
        f"Accuracy against the flip mass the intervention leaves (head {result.layer}.{result.head}), "
        f"per family; {conf} CI bands over sequences. Dashed: the {result.level:.0%} and "
        f"{result.breaking_level:.0%} levels; ticks: each family's {result.level:.0%} threshold; dotted: the "
        "model's own flip mass. The temperature curve runs both ways from the own point: τ < 1 (sharper) "
        "to the right, τ > 1 (blurrier) to the left."
    )

    fig, axes = ep.figure(2, 1, panel=(5.6, 4.0))
    ax = axes[0, 0]
    for f in result.families:
        flip = estimate_arrays(f.flip_mass)[0]
        _band(ax, flip, estimate_arrays(f.readout["vote_agreement"]), f"{f.name}: vote", f.kind)
        key = estimate_arrays(f.readout["argmax_agreement"])[0]
        order = np.argsort(flip)
        ax.plot(flip[order], key[order], color=COLOURS[f.kind], lw=1, ls="--")
    ax.plot([], [], color="#555", ls="--", lw=1, label="dashed: heaviest-key rule")
    ax.axvline(own, color="#000", lw=1, ls=":")
    ax.set(xlabel="flip mass after the intervention", ylabel="share of outputs the rule predicts")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Which rule predicts the model's digit?", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[0, 1]
    edges = np.asarray(result.margin_bin_edges)
    centres = (edges[:-1] + edges[1:]) / 2
    for f in result.families:
        mean, low, high = estimate_arrays(f.logit_margin_by_vote_margin)
        keep = np.isfinite(mean)
        _band(ax, centres[keep], (mean[keep], low[keep], high[keep]), f.name, f.kind)
    ax.axvline(0, color="#777", lw=0.8, ls="--")
    ax.axhline(0, color="#777", lw=0.8, ls="--")
    clean = result.clean_readout["pearson"]
    ax.set(xlabel="vote margin μ (right digit's total weight − best other)", ylabel="mean logit margin λ")
    ax.set_title(f"Logit margin against vote margin (own pattern: r = {clean.mean:.2f})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, directory, "readout")
    captions["readout"] = (
        "Left: share of output digits equal to the plurality vote over the keys' digits (solid, with "
        f"{conf} CI bands) and to the heaviest key's digit (dashed), along each family. Right: the mean "
        "logit margin of the right digit in each vote-margin bin (width 0.05), pooled over every point of a "
        "family; a vote rule predicts λ > 0 exactly where μ > 0 (upper-right and lower-left quadrants)."
    )
    return captions
