"""Figures of the interchange analysis: IIA per site (and head), the dependency matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.figures import estimate_arrays, save_figure
from interp import effect_plots as ep
from interp.interchange import program_dependency


def make_figures(result: Any, directory: Path) -> dict[str, str]:
    """Write every figure (PNG + SVG) into ``directory``; return {name: caption}."""
    conf = f"{result.confidence:.0%}"
    captions = {}

    fig, axes = ep.figure(1, 1, panel=(max(5.5, 0.9 * len(result.sites) + 2), 3.8))
    # each site with the program variable it carries (searched per site, interp.interchange)
    groups = [f"L{s.layer} {s.site}\n({s.variable})" for s in result.sites]
    series = {
        "IIA (aligned output)": estimate_arrays([s.iia for s in result.sites]),
        "every output as the program": estimate_arrays([s.iia_whole for s in result.sites]),
    }
    ep.grouped_bars(
        axes[0, 0], groups, series, ylabel="interchange-intervention accuracy", title="IIA per site"
    )
    axes[0, 0].set_ylim(0, 1.22)
    axes[0, 0].set_yticks(np.linspace(0, 1, 6))
    axes[0, 0].legend(fontsize=7, loc="upper center", ncol=2)
    save_figure(fig, directory, "iia")
    captions["iia"] = (
        f"Share of interchanges after which the model's output equals the reverse program's ({conf} CI "
        "whiskers over pairs); z, attn_out and resid_mid are patched at query i (aligned with output i), "
        "resid_pre at key j (aligned with output N−1−j)."
    )

    shown = [result.site("resid_pre", 0)] if any(s.site == "resid_pre" for s in result.sites) else []
    layer = result.selector[0]
    output = [s for s in result.sites if s.site != "resid_pre" and s.layer == layer]
    shown += output[:1]
    if shown:
        fig, axes = ep.figure(2, len(shown), panel=(3.9, 3.5))
        n = result.seq_len
        ticks = np.arange(0, n, max(1, n // 8))
        for row, s in enumerate(shown):
            for col, (matrix, who) in enumerate(
                ((s.dependency, "model"), (program_dependency(s.site, n).numpy(), "program"))
            ):
                ax = axes[row, col]
                image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Greys", interpolation="nearest")
                where = "key j" if s.site == "resid_pre" else "query i"
                ax.set(xlabel="output k", ylabel=f"patched position ({where})", xticks=ticks, yticks=ticks)
                ax.set_title(f"{who}: L{s.layer} {s.site}", fontsize=10)
            fig.colorbar(image, ax=axes[row, :], shrink=0.8, label="P(output k changes)")
        save_figure(fig, directory, "dependency")
        captions["dependency"] = (
            "Dependency matrices: the share of pairs in which patching position p (rows) changes the model's "
            "output k (columns), next to the program's (1 where the program's output changes, 0 elsewhere). "
            "The reverse program changes output N−1−j when input j changes (anti-diagonal) and output i when "
            "the aggregate at i changes (diagonal)."
        )

    if len(result.heads) > 1:
        fig, axes = ep.figure(1, 1, panel=(max(5.0, 0.6 * len(result.heads) + 2), 3.6))
        labels = [f"L{s.layer}H{s.head}" for s in result.heads]
        ep.bars(
            axes[0, 0],
            labels,
            *estimate_arrays([s.iia for s in result.heads]),
            references={"selector threshold": 0.5},
            ylabel="IIA of this head's z alone",
            title="Which head carries the aggregate t[N−1−i]?",
        )
        axes[0, 0].set_ylim(0, 1.05)
        save_figure(fig, directory, "heads")
        captions["heads"] = (
            f"IIA when only one head's output is patched ({conf} CI whiskers). {result.selector_sentence}"
        )
    return captions
