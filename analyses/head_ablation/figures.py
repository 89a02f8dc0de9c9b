"""Figures of the head-ablation analysis: heads × methods grid, pattern interventions, the permutation
distribution and the activation-patching sweeps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from analyses.frame.figures import estimate_arrays, save_figure
from interp import effect_plots as ep
from interp.ablation import HEAD_METHODS

PATTERN_ORDER = ("flip", "flip+1", "flip-1", "uniform", "permuted")


def _fmt(e: Any, star: bool) -> str:
    return f"{e.mean:+.3f}{'*' if star else ''}\n[{e.ci_low:+.3f}, {e.ci_high:+.3f}]"


def make_figures(result: Any, directory: Path) -> dict[str, str]:
    """Write every figure (PNG + SVG) into ``directory``; return {name: caption}."""
    conf = f"{result.confidence:.0%}"
    heads = result.heads
    head_labels = [f"L{layer}H{head}" for layer, head in heads]
    captions = {}
    clean = result.conditions["none"]

    # 1. heads × methods
    panels = (
        ("delta_accuracy", "Δ accuracy"),
        ("delta_loss", "Δ loss (nats)"),
        ("delta_logit_diff", "Δ logit diff"),
    )
    if len(heads) <= 2:  # a row or two of cells per panel: stack the panels so each keeps a sane aspect
        fig, axes = ep.figure(1, 3, panel=(6.4, 1.4 + 0.7 * len(heads)))
    else:
        fig, axes = ep.figure(3, 1, panel=(5.6, 1.3 + 0.7 * len(heads)))
    for ax, (attr, label) in zip(axes.flat, panels):
        cells = [[result.conditions[f"{m}/L{layer}H{head}"] for m in HEAD_METHODS] for layer, head in heads]
        values = np.array([[getattr(c, attr).mean for c in row] for row in cells])
        # The test is on per-sequence loss, so its star goes on the loss panel only.
        notes = [
            [
                _fmt(getattr(c, attr), attr == "delta_loss" and c.p_holm is not None and c.p_holm < 0.05)
                for c in row
            ]
            for row in cells
        ]
        ep.grid(
            ax,
            values,
            head_labels,
            list(HEAD_METHODS),
            annotations=notes,
            title=label,
            colorbar_label=label,
            xlabel="ablation of hook_z",
            ylabel="head",
        )
    fig.suptitle(
        f"Head ablations vs clean (accuracy {clean.accuracy.mean:.3f})\n{conf} CIs; "
        "* (on Δ loss): Holm-corrected Wilcoxon p < 0.05",
        fontsize=9,
    )
    save_figure(fig, directory, "head_method_grid")
    captions["head_method_grid"] = (
        f"Change from the clean run for every head and ablation method, with {conf} paired bootstrap CIs; "
        "* marks a Holm-corrected Wilcoxon signed-rank p < 0.05 on per-sequence loss."
    )

    # 2. pattern interventions
    refs = {"chance 1/C": result.chance, "no-position ceiling": result.no_position_accuracy}
    rows_by_head = []
    for layer, head in heads:
        prefix = f"pattern/L{layer}H{head}/"
        names = [n for n in result.conditions if n.startswith(prefix)]
        order = sorted(names, key=lambda n: (PATTERN_ORDER + (n[len(prefix) :],)).index(n[len(prefix) :]))
        rows_by_head.append([clean] + [result.conditions[n] for n in order])
        labels = ["clean"] + [n[len(prefix) :].replace("tau_", "τ = ") for n in order]
    if len(heads) <= 2:
        fig, axes = ep.figure(2, len(heads), panel=(6.2, 3.9))
        loss_refs = {"chance log C": math.log(result.num_categories)}
        for row, ((layer, head), picked) in enumerate(zip(heads, rows_by_head)):
            for col, (attr, label, r) in enumerate(
                (("accuracy", "accuracy", refs), ("loss", "cross entropy (nats)", loss_refs))
            ):
                ep.bars(
                    axes[row, col],
                    labels,
                    *estimate_arrays(getattr(c, attr) for c in picked),
                    references=r,
                    ylabel=label,
                    title=f"L{layer}H{head}: {label}",
                    colours=[ep.COLOURS[0 if i else 7] for i in range(len(picked))],
                )
            axes[row, 0].set_ylim(0, 1.05)
    else:  # many heads: heads × interventions grids (CIs are in metrics.json and the report)
        fig, axes = ep.figure(1, 2, panel=(min(1.5 + 0.8 * len(labels), 12.0), 1.3 + 0.45 * len(heads)))
        for ax, (attr, label) in zip(
            axes[:, 0], (("accuracy", "accuracy"), ("loss", "cross entropy (nats)"))
        ):
            values = np.array([[getattr(c, attr).mean for c in row] for row in rows_by_head])
            ep.grid(
                ax,
                values,
                head_labels,
                labels,
                annotations=[[f"{v:.2f}" for v in r] for r in values],
                title=f"{label} with the head's pattern replaced (chance {result.chance:.2g}, no-position "
                f"ceiling {result.no_position_accuracy:.3f})"
                if attr == "accuracy"
                else label,
                colorbar_label=label,
                centre=None,
                xlabel="pattern",
                ylabel="head",
            )
    save_figure(fig, directory, "pattern_interventions")
    captions["pattern_interventions"] = (
        "The head's attention pattern replaced by the perfect flip, the flip shifted by ±1, uniform "
        "attention, random row permutations (mean over permutations) and tempered versions of its own "
        f"pattern; {conf} CI whiskers."
    )

    # 3. permutation distribution
    if any(result.permutation_accuracy.values()):
        n_cols = min(4, len(heads))
        n_rows = -(-len(heads) // n_cols)
        fig, axes = ep.figure(n_cols, n_rows, panel=(4.6, 3.4))
        for ax in axes.flat[len(heads) :]:
            ax.set_visible(False)
        for ax, (layer, head) in zip(axes.flat, heads):
            accuracy = np.array(result.permutation_accuracy[f"{layer}.{head}"])
            ax.hist(accuracy, bins=np.linspace(0, 1, 51), color=ep.COLOURS[0], alpha=0.8)
            lines = {
                "clean": clean.accuracy.mean,
                "perfect flip": result.conditions[f"pattern/L{layer}H{head}/flip"].accuracy.mean,
                "chance 1/C": result.chance,
            }
            ep.reference_lines(ax, lines, horizontal=False)
            ax.set_xlim(0, 1.02)
            ax.set_xlabel("accuracy with a permuted pattern")
            ax.set_ylabel("permutations")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
            ax.set_title(f"L{layer}H{head}: {len(accuracy)} row permutations", fontsize=10)
            ax.legend(fontsize=7)
        save_figure(fig, directory, "permutation_distribution")
        captions["permutation_distribution"] = (
            "Accuracy when each attention row's weights are moved to randomly permuted keys (same weights, "
            "other keys): if the pattern explains the computation, permuting it must destroy accuracy."
        )

    # 4. patching
    sweep = result.patching
    rows = np.array(sweep.heads_by_position["mean"]).transpose(0, 2, 1).reshape(len(heads), -1)  # [L·H, pos]
    fig, axes = ep.figure(1, 1, panel=(min(0.55 * result.seq_len + 2, 12), 1.2 + 0.45 * len(heads)))
    ep.grid(
        axes[0, 0],
        rows,
        head_labels,
        [str(i) for i in range(rows.shape[1])],
        annotations=[[f"{v:.2f}" if abs(v) >= 0.05 else "" for v in r] for r in rows],
        title=f"Patching hook_z: input {sweep.position} corrupted, metric at output {sweep.output_position}",
        colorbar_label="recovery",
        xlabel="query position",
        ylabel="head",
    )
    save_figure(fig, directory, "patching_heads_by_position")
    captions["patching_heads_by_position"] = (
        f"transformer_lens.patching heads × positions sweep on {sweep.num_sequences} sequences: recovery of "
        f"the logit difference at output {sweep.output_position} when one head's clean output at one query "
        f"position is patched into a run whose input {sweep.position} was changed (0 = nothing, 1 = fully "
        "restored)."
    )
    resid = np.array(sweep.resid_pre["mean"])
    fig, axes = ep.figure(1, 1, panel=(min(0.55 * result.seq_len + 2, 12), 1.2 + 0.45 * resid.shape[0]))
    ep.grid(
        axes[0, 0],
        resid,
        [f"layer {i}" for i in range(resid.shape[0])],
        [str(i) for i in range(resid.shape[1])],
        annotations=[[f"{v:.2f}" if abs(v) >= 0.05 else "" for v in r] for r in resid],
        title="Patching resid_pre",
        colorbar_label="recovery",
        xlabel="position",
        ylabel="",
    )
    save_figure(fig, directory, "patching_resid_pre")
    captions["patching_resid_pre"] = "The same corruption, patching the residual stream before each layer."
    return captions
