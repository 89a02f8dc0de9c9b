"""Matplotlib helpers for effects with confidence intervals: bars with whiskers, curves with bands,
and annotated grids — each drawn on a given ``Axes`` with labelled reference lines (chance, ceilings).

Agg backend; the caller builds the figure, saves and closes it (``analyses.frame.figures.save_figure``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Okabe–Ito colours (colour-blind safe); reference lines get fixed styles so figures read alike.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
REFERENCE_STYLES = (
    {"color": "#555555", "ls": "--"},
    {"color": "#C0392B", "ls": ":"},
    {"color": "#117A65", "ls": "-."},
    {"color": "#7D3C98", "ls": (0, (5, 1, 1, 1))},
)


def figure(
    n_cols: int = 1, n_rows: int = 1, panel: tuple[float, float] = (6.0, 3.6)
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with an ``[n_rows, n_cols]`` array of axes."""
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(panel[0] * n_cols, panel[1] * n_rows), squeeze=False, layout="constrained"
    )
    return fig, axes


def reference_lines(ax: Axes, references: Mapping[str, float], horizontal: bool = True) -> None:
    """Draw each ``{label: value}`` as a labelled dashed line across the axes."""
    for i, (label, value) in enumerate(references.items()):
        style = REFERENCE_STYLES[i % len(REFERENCE_STYLES)]
        if horizontal:
            ax.axhline(value, lw=1.2, label=f"{label} ({value:.3g})", zorder=1, **style)
        else:
            ax.axvline(value, lw=1.2, label=f"{label} ({value:.3g})", zorder=1, **style)


def _whiskers(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
    return np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])


def bars(
    ax: Axes,
    labels: Sequence[str],
    mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    references: Mapping[str, float] | None = None,
    ylabel: str = "",
    title: str = "",
    colours: Sequence[str] | None = None,
) -> None:
    """One bar per label with CI whiskers; reference lines and a legend for them."""
    x = np.arange(len(labels))
    colours = list(colours) if colours is not None else [COLOURS[0]] * len(labels)
    ax.bar(x, mean, color=colours, alpha=0.85, zorder=2)
    ax.errorbar(
        x, mean, yerr=_whiskers(mean, low, high), fmt="none", ecolor="black", capsize=3, lw=1, zorder=3
    )
    reference_lines(ax, references or {})
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if references:
        ax.legend(fontsize=7, loc="best")


def grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    references: Mapping[str, float] | None = None,
    ylabel: str = "",
    title: str = "",
) -> None:
    """Bars for each group (x axis) and series (colour), with CI whiskers."""
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, (name, (mean, low, high)) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, mean, width, color=COLOURS[i % len(COLOURS)], label=name, alpha=0.85, zorder=2)
        ax.errorbar(
            x + offset,
            mean,
            yerr=_whiskers(mean, low, high),
            fmt="none",
            ecolor="black",
            capsize=2,
            lw=0.8,
            zorder=3,
        )
    reference_lines(ax, references or {})
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def curves(
    ax: Axes,
    x: np.ndarray,
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    references: Mapping[str, float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    xticks: Sequence[float] | None = None,
    xticklabels: Sequence[str] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One line with markers and a shaded CI band per series. ``styles`` maps a series name to keyword
    arguments of ``Axes.plot`` (colour, line style, marker, ...) that replace the defaults, so that
    series which coincide stay apart."""
    x = np.asarray(x, dtype=float)
    for i, (name, (mean, low, high)) in enumerate(series.items()):
        style = {"marker": "o", "ms": 3.5, "color": COLOURS[i % len(COLOURS)], "zorder": 3}
        style.update((styles or {}).get(name, {}))
        ax.fill_between(x, low, high, color=style["color"], alpha=0.2, lw=0)
        ax.plot(x, mean, label=name, **style)
    reference_lines(ax, references or {})
    if xticks is not None:
        ax.set_xticks(
            xticks, xticklabels if xticklabels is not None else [f"{t:g}" for t in xticks], fontsize=8
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def grid(
    ax: Axes,
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    annotations: Sequence[Sequence[str]] | None = None,
    title: str = "",
    colorbar_label: str = "",
    centre: float | None = 0.0,
    cmap: str = "RdBu_r",
    xlabel: str = "",
    ylabel: str = "",
    annotation_size: float = 6.5,
) -> None:
    """A heatmap ``[rows, cols]``, symmetric around ``centre`` (None: plain viridis range), annotated."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if centre is not None:
        span = max(float(np.abs(finite - centre).max()) if finite.size else 1.0, 1e-9)
        image = ax.imshow(values, cmap=cmap, vmin=centre - span, vmax=centre + span, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(np.arange(len(col_labels)), col_labels, fontsize=8)
    ax.set_yticks(np.arange(len(row_labels)), row_labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if annotations is not None:
        norm = image.norm
        for r, row in enumerate(annotations):
            for c, text in enumerate(row):
                # White text on the dark ends of the colour map, black elsewhere.
                shade = float(norm(values[r, c])) if np.isfinite(values[r, c]) else 0.5
                dark = abs(shade - 0.5) > 0.3 if centre is not None else shade < 0.35
                ax.text(
                    c,
                    r,
                    text,
                    ha="center",
                    va="center",
                    fontsize=annotation_size,
                    color="white" if dark else "black",
                )
    ax.figure.colorbar(image, ax=ax, label=colorbar_label, shrink=0.9)
    ax.set_title(title, fontsize=10)
