"""Figures of the certificate: the cells proven wrong, and the theorem (guarantee against the model's
smallest flipped-key weight, with ``analyses.tolerance``'s sampled thresholds beside them).

Cells (query position i, own digit a = t_i, flipped digit b = t_{N−1−i}) are laid out as a matrix
[i, b·C + a]: one row per query position, the columns grouped by flipped digit, own digit inside.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.certificate.result import CertificateResult
from analyses.frame.figures import save_figure

FAMILY_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")


def cell_matrix(cells: list[dict[str, Any]], seq_len: int, num_categories: int, key: str) -> np.ndarray:
    """[N, C·C] float matrix of one cell column at [i, b·C + a] (NaN where a cell has no value or does
    not exist: a ≠ b at the middle query of an odd N)."""
    out = np.full((seq_len, num_categories * num_categories), np.nan)
    for c in cells:
        value = c[key] if key in c else None
        if value is not None:
            out[c["position"], c["flipped"] * num_categories + c["own"]] = float(value)
    return out


def wrong_share(
    cells: list[dict[str, Any]], seq_len: int, num_categories: int
) -> tuple[np.ndarray, np.ndarray]:
    """([N, C·C] share of each cell's inputs proven wrong, [N, C·C] share undecided)."""
    rows = [
        {**c, "w": c["wrong"] / c["inputs"], "u": (c["inputs"] - c["right"] - c["wrong"]) / c["inputs"]}
        for c in cells
    ]
    return cell_matrix(rows, seq_len, num_categories, "w"), cell_matrix(rows, seq_len, num_categories, "u")


def _cell_axes(ax: Any, seq_len: int, num_categories: int) -> None:
    """Ticks of a [i, b·C + a] matrix: one tick per flipped digit b (its group), a line between groups."""
    c = num_categories
    ax.set_xticks([b * c + (c - 1) / 2 for b in range(c)], [str(b) for b in range(c)])
    ax.set_yticks(range(seq_len), [str(i) for i in range(seq_len)] if seq_len <= 20 else None)
    for b in range(1, c):
        ax.axvline(b * c - 0.5, color="#999", lw=0.8)
    ax.set_xlabel(f"flipped digit b (own digit a = 0…{c - 1} inside each group)")
    ax.set_ylabel("query position i")


def _heatmap(
    ax: Any, fig: Any, matrix: np.ndarray, title: str, cmap: str, log: bool = False
) -> tuple[float, float]:
    """Draw ``matrix`` (NaN: grey, no such cell); linear on [0, 1], or with ``log`` a logarithmic scale
    over its positive values with zeros white. Returns the colour scale's (low, high)."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm, Normalize

    colours = mpl.colormaps[cmap].with_extremes(bad="#dddddd", under="#ffffff")
    positive = matrix[np.isfinite(matrix) & (matrix > 0)]
    if log and positive.size:
        high = float(positive.max())
        low = min(float(positive.min()), high / 10)
        norm: Any = LogNorm(vmin=low, vmax=high)
        matrix = np.where(matrix == 0, low / 10, matrix)  # below the scale: drawn white
    else:
        low, high = 0.0, 1.0
        norm = Normalize(vmin=low, vmax=high)
    image = ax.imshow(
        np.ma.masked_invalid(matrix), aspect="auto", cmap=colours, norm=norm, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    ax.set_title(title, fontsize=10)
    return low, high


def make_figures(result: CertificateResult, directory: Path) -> dict[str, str]:
    """Write the figures into ``directory``; return {name: caption}."""
    import matplotlib.pyplot as plt

    cert = result.certificate
    n, c = cert["seq_len"], cert["num_categories"]
    cells = list(cert["cells"])
    captions: dict[str, str] = {}
    regime = result.regime

    wrong, undecided = wrong_share(cells, n, c)
    panels = 2 if np.nansum(undecided) > 0 else 1
    width = min(14.0, 5.0 + 0.09 * c * c)
    fig, axes = plt.subplots(
        panels, 1, figsize=(width, 1.2 + panels * (1.0 + 0.22 * n)), layout="constrained", squeeze=False
    )
    nothing = not np.nansum(wrong) > 0
    title = "Share of each cell's inputs that are wrong" + (" (none proven wrong)" if nothing else "")
    _heatmap(axes[0, 0], fig, wrong, title, "Reds", log=True)
    _cell_axes(axes[0, 0], n, c)
    if panels == 2:
        _heatmap(
            axes[1, 0],
            fig,
            undecided,
            "Share of each cell's inputs the budget left undecided",
            "Greys",
            log=True,
        )
        _cell_axes(axes[1, 0], n, c)
    save_figure(fig, directory, "cells")
    captions["cells"] = (
        f"Every (query position i, own digit a = t[i], flipped digit b = t[N−1−i]) cell, {regime}: the "
        "share of its inputs whose output i is wrong, on a logarithmic scale (white: none wrong; grey: no "
        "such cell, a ≠ b at the middle query of an odd N)"
        + ("; below, the share the proof's budget left undecided (white: none)" if panels == 2 else "")
        + f". Method: {result.method}."
    )

    theorem = result.theorem()
    if not theorem["computed"]:
        return captions
    guarantee = cell_matrix(cells, n, c, "guarantee_weight")
    smallest = cell_matrix(cells, n, c, "min_weight")
    fig = plt.figure(figsize=(width, 3.2 + 2 * (1.0 + 0.22 * n)), layout="constrained")
    grid = fig.add_gridspec(3, 1, height_ratios=[1.0 + 0.22 * n, 1.0 + 0.22 * n, 2.4])
    ax = fig.add_subplot(grid[0])
    _heatmap(
        ax,
        fig,
        guarantee,
        "w*: smallest flipped-key weight that guarantees the right output (grey: none ≤ 1)",
        "viridis",
    )
    _cell_axes(ax, n, c)
    ax = fig.add_subplot(grid[1])
    _heatmap(
        ax,
        fig,
        smallest,
        "the model's smallest weight on the flipped key over the cell (×: below w* or no w*)",
        "viridis",
    )
    _cell_axes(ax, n, c)
    fails = np.isfinite(smallest) & ~(smallest >= np.where(np.isfinite(guarantee), guarantee, math.inf))
    ys, xs = np.nonzero(fails)
    ax.scatter(xs, ys, marker="x", s=14, color="#ff2d2d", linewidths=1.0)
    ax = fig.add_subplot(grid[2])
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist(
        guarantee[np.isfinite(guarantee)],
        bins=bins,
        alpha=0.6,
        color="#440154",
        label="w* (guarantee), per cell",
    )
    ax.hist(
        smallest[np.isfinite(smallest)],
        bins=bins,
        alpha=0.6,
        color="#21918c",
        label="model's smallest weight, per cell",
    )
    for k, t in enumerate(result.tolerance or []):
        mass = t["flip_mass"].get("mean")
        if t["level"] >= 0.99 and mass is not None and t["status"] == "crossed":
            ax.axvline(
                mass,
                color=FAMILY_COLOURS[k % len(FAMILY_COLOURS)],
                ls="--",
                lw=1.2,
                label=f"tolerance (sampled mean flip mass) at {t['level']:.0%}: {t['family']}",
            )
    ax.set(xlabel="attention weight on the flipped key N−1−i", ylabel="cells", xlim=(0, 1))
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax.set_title(
        "Guarantees and the model's weights over all cells"
        + ("" if result.tolerance else " (no tolerance thresholds given)"),
        fontsize=10,
    )
    save_figure(fig, directory, "theorem")
    captions["theorem"] = (
        f"The tutorial's sentence as a theorem, {regime}. Top: per cell, w*, the smallest weight on the "
        "flipped key that proves the output right whatever the rest of the row holds; middle: the smallest "
        "weight the model puts there over all inputs of the cell (proven), × where it falls below w*; "
        f"bottom: both distributions over the {theorem['cells']:,} cells"
        + (
            ", with analyses.tolerance's sampled 99% thresholds (mean flip mass over rows, not per cell: a "
            "sampled, averaged quantity beside a proven per-cell one)."
            if result.tolerance
            else "."
        )
    )
    return captions
