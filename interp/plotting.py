"""Matplotlib figures for attention analyses (functions return figures, never show them).

Inputs are plain arrays indexed ``[layer, head, ...]`` so the functions work on any model's numbers;
saving (and closing) is the caller's job, e.g. ``analyses.frame.figures.save_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

matplotlib.rcParams["svg.hashsalt"] = "reverse-encoder-interp"  # stable SVG ids: same numbers, same file

# Colour-blind-safe cycle (Okabe–Ito) for lines of several heads.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _grid(n_rows: int, n_cols: int, panel: tuple[float, float], **kwargs) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(panel[0] * n_cols + 1.2, panel[1] * n_rows + 0.8), squeeze=False, **kwargs
    )
    return fig, axes


def _head_label(layer: int, head: int) -> str:
    return f"layer {layer} · head {head}"


OUTLINE = "#ff3b30"  # the box around marked cells (the flipped keys)


def outline_cells(
    ax: plt.Axes, cells: Sequence[tuple[int, int]], colour: str = OUTLINE, lw: float = 1.4
) -> None:
    """Draw a box around each (row, column) cell of an ``imshow`` heat map (whole cells, edge to edge),
    e.g. the flipped keys (i, N − 1 − i) of an attention pattern."""
    for row, col in cells:
        ax.add_patch(
            Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=colour, lw=lw, clip_on=False)
        )


def flipped_cells(n: int) -> list[tuple[int, int]]:
    """The (query, key) cells of the flipped keys, (i, N − 1 − i)."""
    return [(i, n - 1 - i) for i in range(n)]


def plot_attention_grid(
    patterns: np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    outline: Sequence[tuple[int, int]] = (),
    title: str = "",
    vmax: float | None = None,
    tick_meaning: str = "position",
    outline_label: str = "",
) -> Figure:
    """Heat maps of ``patterns [layer, head, query, key]``: layers as rows, heads as columns.

    Tick labels name each query/key (e.g. ``"3:7"`` = position 3 holds digit 7); ``outline`` lists
    (query, key) cells drawn with a box (e.g. the flipped keys), explained in a legend under the maps
    when ``outline_label`` is given; one shared colour bar. ``tick_meaning`` names what the tick labels
    show in the axis labels.
    """
    patterns = np.asarray(patterns, dtype=float)
    if patterns.ndim != 4:
        raise ValueError(f"patterns must be [layer, head, query, key], got shape {patterns.shape}")
    n_layers, n_heads, n_q, n_k = patterns.shape
    # Panels grow with the sequence up to 12 inches; past ~48 positions only every k-th tick is labelled
    # (a panel of a 1,500-long sequence would otherwise be 330 inches and gigabytes of pixels).
    side = min(12.0, max(3.2, 0.22 * max(n_q, n_k) + 1.0))
    q_step, k_step = (max(1, math.ceil(n / 48)) for n in (n_q, n_k))
    fig, axes = _grid(n_layers, n_heads, (side, side), layout="constrained")
    vmax = float(patterns.max()) if vmax is None else vmax
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            image = ax.imshow(patterns[layer, head], cmap="viridis", vmin=0.0, vmax=vmax, aspect="equal")
            if max(n_q, n_k) <= 64:  # beyond that the boxes would cover the cells they mark
                outline_cells(ax, outline)
            ax.set_xticks(range(0, n_k, k_step), list(key_labels)[::k_step], rotation=90, fontsize=7)
            ax.set_yticks(range(0, n_q, q_step), list(query_labels)[::q_step], fontsize=7)
            ax.set_xlabel(f"key ({tick_meaning})", fontsize=8)
            ax.set_ylabel(f"query ({tick_meaning})", fontsize=8)
            ax.set_title(_head_label(layer, head), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if outline and outline_label:
        box = Rectangle((0, 0), 1, 1, fill=False, edgecolor=OUTLINE, lw=1.4)
        fig.legend([box], [outline_label], loc="outside lower center", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_offset_profile(
    offsets: Sequence[int],
    mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    reference: float | None = None,
    title: str = "",
) -> Figure:
    """Bars of mean attention at each offset d (key = N − 1 − query + d) per head, with CI whiskers.

    ``mean``, ``low``, ``high`` are ``[layer, head, offset]``; ``reference`` draws a dashed line (e.g.
    the uniform weight 1/N).
    """
    mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
    n_layers, n_heads, _ = mean.shape
    fig, axes = _grid(n_layers, n_heads, (3.6, 2.8), sharey=True, layout="constrained")
    x = np.asarray(offsets)
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            m = mean[layer, head]
            err = np.stack([m - low[layer, head], high[layer, head] - m])
            colours = ["#D55E00" if d == 0 else "#0072B2" for d in x]
            ax.bar(x, m, color=colours, width=0.7)
            ax.errorbar(x, m, yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3, lw=1)
            if reference is not None:
                ax.axhline(reference, ls="--", color="grey", lw=1, label=f"uniform 1/N = {reference:.3f}")
                ax.legend(fontsize=7, loc="upper right")
            ax.set_xticks(x, [f"{d:+d}" if d else "0" for d in x])
            ax.set_xlabel("offset d (key = N−1−query+d)", fontsize=8)
            ax.set_ylabel("mean attention", fontsize=8)
            ax.set_title(_head_label(layer, head), fontsize=9)
    top = max(float(np.nanmax(high)) if np.isfinite(high).any() else 0.0, reference or 0.0)
    axes[0, 0].set_ylim(0, min(1.05, 1.2 * top) if top > 0 else 1.0)  # axes share y
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_position_profile(
    mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    ylabel: str,
    reference: float | None = None,
    reference_label: str = "",
    title: str = "",
    zoom: bool = False,
) -> Figure:
    """One line per head of a per-position quantity ``[layer, head, position]`` with a CI band.

    The y axis runs from 0 to 1, or with ``zoom`` over the data (CI bands included) so that differences
    between positions show; a reference line outside that range is named in the legend with its value.
    """
    mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
    n_layers, n_heads, n_pos = mean.shape
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    x = np.arange(n_pos)
    for i, (layer, head) in enumerate(np.ndindex(n_layers, n_heads)):
        colour = COLOURS[i % len(COLOURS)]
        ax.fill_between(x, low[layer, head], high[layer, head], color=colour, alpha=0.25, lw=0)
        ax.plot(x, mean[layer, head], marker="o", ms=3, color=colour, label=_head_label(layer, head))
    if zoom:
        top, bottom = np.nanmax(high), np.nanmin(low)
        pad = max(0.08 * (top - bottom), 0.005)
        ax.set_ylim(bottom - pad, top + pad)
    else:
        ax.set_ylim(0, 1.02)
    if reference is not None:
        low_end, high_end = ax.get_ylim()
        outside = not low_end <= reference <= high_end
        label = reference_label + (f" = {reference:.3g} (off this axis)" if outside else "")
        ax.axhline(reference, ls="--", color="grey", lw=1, label=label or None)
        ax.set_ylim(low_end, high_end)
    ax.set_xticks(x)
    ax.set_xlabel("query position i")
    ax.set_ylabel(ylabel)
    fig.legend(fontsize=7, loc="outside right upper")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_histograms(
    edges: np.ndarray,
    counts: np.ndarray,
    xlabel: str,
    markers: dict[str, float] | None = None,
    title: str = "",
    subset: np.ndarray | None = None,
    subset_label: str = "",
) -> Figure:
    """Step histograms (share of rows per bin) of ``counts [layer, head, bin]`` over shared ``edges``,
    with labelled vertical reference lines ``markers`` (e.g. ``{"permutation": 0, "uniform": log N}``).

    ``subset [layer, head, bin]`` (a part of the rows, e.g. those of the edge queries) is drawn filled
    under each head's line, as a share of all its rows, so one sees which peak those rows make."""
    edges, counts = np.asarray(edges, dtype=float), np.asarray(counts, dtype=float)
    n_layers, n_heads, _ = counts.shape
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for i, (layer, head) in enumerate(np.ndindex(n_layers, n_heads)):
        total = counts[layer, head].sum()
        share = counts[layer, head] / total if total else counts[layer, head]
        colour = COLOURS[i % len(COLOURS)]
        ax.stairs(share, edges, color=colour, lw=1.5, label=_head_label(layer, head))
        if subset is not None:
            part = np.asarray(subset, dtype=float)[layer, head] / (total or 1.0)
            name = f"{subset_label}, {_head_label(layer, head)}" if n_layers * n_heads > 1 else subset_label
            ax.stairs(part, edges, color=colour, fill=True, alpha=0.35, lw=0, label=name)
    middle = (edges[0] + edges[-1]) / 2
    for j, (name, value) in enumerate((markers or {}).items()):
        ax.axvline(value, ls="--", color="grey", lw=1)
        right_half = value > middle  # keep the label inside the axes
        ax.annotate(
            f"{name} = {value:.2f}",
            (value, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3 if right_half else 3, -12 - 11 * j),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=7,
            color="dimgrey",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of attention rows")
    fig.legend(fontsize=7, loc="outside right upper")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
