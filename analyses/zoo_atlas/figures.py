"""Figures of the zoo atlas, drawn from a :class:`ZooAtlasResult` (nothing recomputed but layout)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analyses.frame.figures import save_figure
from analyses.zoo_atlas.classes import CLASSES
from analyses.zoo_atlas.compare import served_pattern
from analyses.zoo_atlas.result import COMPARED, ZooAtlasResult

CLASS_COLOURS = {
    "single_pointer": "#0072B2",
    "split_pointer": "#E69F00",
    "no_pointer": "#CC79A7",
    "fails": "#D55E00",
}
SHORT = {"single_pointer": "single", "split_pointer": "split", "no_pointer": "no ptr", "fails": "fails"}
MAX_ROWS, MAX_COLS = 16, 10
SIMILARITY_TITLES = {
    "pattern": "head patterns\n(raw: head h ↔ h; aligned: Hungarian)",
    "qk": "positional QK, layer 0\n(row-centred cosine)",
    "ov": "token OV, layer 0\n(raw cosine; aligned: Procrustes)",
    "representation": "final residual stream\n(raw cosine; aligned: Procrustes)",
}


def make_figures(result: ZooAtlasResult, directory: Path) -> dict[str, str]:
    """Write every figure into ``directory``; return {name: caption}."""
    from interp import plotting  # lazy: matplotlib only when figures are made (sets the Agg backend)

    captions = {}
    pct = f"{result.confidence:.0%}"
    phase_diagram(result, directory)
    captions["phase_diagram"] = (
        f"Phase diagram: the share of each cell's runs (architecture × recipe, over seeds) in each mechanism "
        f"class, k/n with its {pct} {result.share_interval} interval (never of zero width, also at 0/n and "
        f"n/n). Rule: see 'Mechanism classes'."
    )
    reference_similarity(result, directory)
    captions["reference_similarity"] = (
        f"Which runs share the tutorial's circuit: every run's similarity to the reference run "
        f"{result.reference} (cosine of the served patterns, row i from the head serving query i; 1 = the "
        f"same attention), coloured by class; diamonds: mean over seeds with its {pct} t-interval."
    )
    examples(result, directory, plotting)
    captions["examples"] = (
        "Examples: per class, the run most like the reference and the run least like it; every head's mean "
        "pattern (outlined: flipped keys N−1−i) and, right, the served pattern."
    )
    mean_patterns(result, directory, plotting)
    captions["mean_patterns"] = (
        "Small multiples: the main head's mean pattern of every run (rows: cells, columns: seeds; at most "
        f"{MAX_ROWS} × {MAX_COLS}); title: seed, class, flip mass."
    )
    if result.pairs:
        alignment_effect(result, directory)
        captions["alignment_effect"] = (
            f"The alignment's effect: similarity between seeds of one cell, raw (grey) and aligned (black), "
            f"mean over pairs of seeds with a {pct} t-interval; CKA (open) beside the Procrustes similarity "
            "of the same activations. Caveat: CKA is dominated by high-variance directions and can move "
            "without a change of what the model computes."
        )
    recipe(result, directory)
    captions["recipe"] = (
        f"Flip mass of the main head by cell: every seed (dots) and the mean over seeds with its {pct} "
        "t-interval (diamonds): is the tutorial's 0.57 a property of the recipe?"
    )
    if any(c.dynamics for c in result.cells):
        dynamics(result, directory)
        captions["dynamics"] = (
            "Training dynamics over seeds: per run with snapshots, the step at which a curve crosses half "
            "its rise minus the step at which accuracy does (its bootstrap CI over evaluation sequences; "
            f"< 0: before accuracy), and the mean over seeds with a {pct} t-interval (diamonds)."
        )
    return captions


def phase_diagram(result: ZooAtlasResult, directory: Path) -> None:
    import matplotlib.pyplot as plt

    cells = result.cells
    shares = np.array([[c.classes[k].share for k in CLASSES] for c in cells])
    fig, ax = plt.subplots(figsize=(2.0 * len(CLASSES) + 3.5, 0.5 * len(cells) + 1.6), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, c in enumerate(cells):
        for j, k in enumerate(CLASSES):
            s = c.classes[k]
            ax.text(j, i, f"{s.k}/{s.n}\n[{s.ci_low:.2f}, {s.ci_high:.2f}]", ha="center", va="center",
                    fontsize=7, color="white" if s.share > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(CLASSES)), [k.replace("_", " ") for k in CLASSES], fontsize=8)
    ax.set_yticks(range(len(cells)), [c.name for c in cells], fontsize=8)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of runs")
    save_figure(fig, directory, "phase_diagram")


def _cell_rows(result: ZooAtlasResult) -> dict[str, list]:
    rows: dict[str, list] = {}
    for r in result.runs:
        rows.setdefault(r.info.cell, []).append(r)
    return rows


def reference_similarity(result: ZooAtlasResult, directory: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cells = result.cells
    rows = _cell_rows(result)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(cells) + 1.6), layout="constrained")
    for i, c in enumerate(cells):
        members = rows[c.name]
        jitter = np.linspace(-0.15, 0.15, len(members)) if len(members) > 1 else [0.0]
        named = 0
        for r, dy in zip(members, jitter):
            ax.plot(r.scalars["reference_similarity"], i + dy, "o", ms=5, alpha=0.85,
                    color=CLASS_COLOURS[r.mechanism])  # fmt: skip
            if r.outlier:  # named, one label above the next
                ax.annotate(r.info.name, (r.scalars["reference_similarity"], i + dy), fontsize=6,
                            xytext=(-4, -9 + 9 * named), textcoords="offset points", ha="right")  # fmt: skip
                named += 1
        s = c.stats["reference_similarity"]
        if s.n >= 2 and math.isfinite(s.ci_low):
            ax.errorbar(s.mean, i, xerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="D", color="black",
                        ms=4, capsize=3, lw=1)  # fmt: skip
    ax.set_yticks(range(len(cells)), [c.name for c in cells], fontsize=8)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_xlabel(f"cosine of served patterns with the reference run {result.reference}")
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    ax.legend(
        handles=[
            Line2D([], [], marker="o", ls="", color=CLASS_COLOURS[k], label=k.replace("_", " "))
            for k in CLASSES
        ],
        fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(CLASSES), frameon=False,
    )  # fmt: skip
    save_figure(fig, directory, "reference_similarity")


def _pattern(ax, pattern: np.ndarray, title: str, plotting) -> None:
    n = pattern.shape[-1]
    ax.imshow(pattern, cmap="viridis", vmin=0, vmax=1)
    plotting.outline_cells(ax, plotting.flipped_cells(n), lw=0.6)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def examples(result: ZooAtlasResult, directory: Path, plotting) -> None:
    import matplotlib.pyplot as plt

    chosen = []
    for k in CLASSES:
        members = sorted(
            (r for r in result.runs if r.mechanism == k), key=lambda r: -r.scalars["reference_similarity"]
        )
        chosen += [(k, r) for i, r in enumerate(members) if i in (0, len(members) - 1)]
    width = max(r.n_layers * r.n_heads for _, r in chosen) + 1
    fig, axes = plt.subplots(len(chosen), width, figsize=(1.9 * width + 0.6, 2.1 * len(chosen) + 0.4),
                             squeeze=False, layout="constrained")  # fmt: skip
    for row, (k, r) in zip(axes, chosen):
        for ax in row:
            ax.axis("off")
        for index in range(r.n_layers * r.n_heads):
            layer, head = divmod(index, r.n_heads)
            row[index].axis("on")
            flip = r.heads[index]["flip_mass"]
            _pattern(
                row[index], r.mean_patterns[layer, head], f"head {layer}.{head}: flip {flip:.2f}", plotting
            )
        row[-1].axis("on")
        _pattern(row[-1], served_pattern(r), f"served; sim {r.scalars['reference_similarity']:.2f}", plotting)
        row[0].set_ylabel(f"{k.replace('_', ' ')}\n{r.info.name}", fontsize=6)
    save_figure(fig, directory, "examples")


def mean_patterns(result: ZooAtlasResult, directory: Path, plotting) -> None:
    import matplotlib.pyplot as plt

    rows = list(_cell_rows(result).items())[:MAX_ROWS]
    cols = min(MAX_COLS, max(len(m) for _, m in rows))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.45 * cols + 1.6, 1.6 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")  # fmt: skip
    for (name, members), row in zip(rows, axes):
        for ax in row:
            ax.axis("off")
        for ax, r in zip(row, members[:cols]):
            ax.axis("on")
            layer, head = r.main_head
            title = f"s{r.info.seed} {SHORT[r.mechanism]} {r.scalars['flip_mass']:.2f}"
            _pattern(ax, r.mean_patterns[layer, head], title, plotting)
            ax.title.set_color(CLASS_COLOURS[r.mechanism])
        row[0].set_ylabel(name.replace(" · ", "\n"), fontsize=6)
    save_figure(fig, directory, "mean_patterns")


def alignment_effect(result: ZooAtlasResult, directory: Path) -> None:
    import matplotlib.pyplot as plt

    cells = [c for c in result.cells if c.similarities]
    fig, axes = plt.subplots(1, len(COMPARED), figsize=(3.2 * len(COMPARED) + 2.2, 0.45 * len(cells) + 1.8),
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    for ax, (raw, aligned) in zip(axes[0], COMPARED):
        for i, c in enumerate(cells):
            for key, colour, dy, marker in ((raw, "grey", -0.12, "o"), (aligned, "black", 0.12, "o"),
                                            ("representation_cka", "black", 0.3, "s")):  # fmt: skip
                if key == "representation_cka" and raw != "representation_raw":
                    continue
                s = c.similarities.get(key)
                if s is None or not math.isfinite(s.mean):
                    continue
                err = (
                    None
                    if s.n < 2 or not math.isfinite(s.ci_low)
                    else [[s.mean - s.ci_low], [s.ci_high - s.mean]]
                )
                ax.errorbar(s.mean, i + dy, xerr=err, fmt=marker, color=colour, ms=4, capsize=2, lw=1,
                            mfc="white" if marker == "s" else colour)  # fmt: skip
        ax.set_title(SIMILARITY_TITLES[raw.split("_")[0]], fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.grid(axis="x", alpha=0.3, lw=0.5)
    axes[0, 0].set_yticks(range(len(cells)), [c.name for c in cells], fontsize=8)
    axes[0, 0].set_ylim(len(cells) - 0.5, -0.5)
    fig.suptitle(
        "between seeds of one cell — grey: raw · black: aligned · open square: linear CKA", fontsize=9
    )
    save_figure(fig, directory, "alignment_effect")


def _dots(ax, result: ZooAtlasResult, values_of, interval_of) -> None:
    rows = _cell_rows(result)
    for i, c in enumerate(result.cells):
        members = rows[c.name]
        jitter = np.linspace(-0.15, 0.15, len(members)) if len(members) > 1 else [0.0]
        for r, dy in zip(members, jitter):
            for value, low, high in values_of(r):
                if value is None or not math.isfinite(value):
                    continue
                err = None if low is None or high is None else [[value - low], [high - value]]
                ax.errorbar(value, i + dy, xerr=err, fmt="o", ms=4, alpha=0.8, lw=0.8, capsize=0,
                            color=CLASS_COLOURS[r.mechanism])  # fmt: skip
        s = interval_of(c)
        if s is not None and s.n >= 2 and math.isfinite(s.ci_low):
            ax.errorbar(s.mean, i, xerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="D", color="black",
                        ms=5, capsize=3, lw=1.2)  # fmt: skip
    ax.set_yticks(range(len(result.cells)), [c.name for c in result.cells], fontsize=8)
    ax.set_ylim(len(result.cells) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3, lw=0.5)


def recipe(result: ZooAtlasResult, directory: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(result.cells) + 1.4), layout="constrained")
    _dots(ax, result, lambda r: [(r.scalars["flip_mass"], None, None)], lambda c: c.stats["flip_mass"])
    ax.set_xlabel("flip mass of the main head, mean_i Ā[i, N−1−i]")
    save_figure(fig, directory, "recipe")


def dynamics(result: ZooAtlasResult, directory: Path) -> None:
    import matplotlib.pyplot as plt

    pairs = sorted({p for c in result.cells for p in c.dynamics})
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.0 * len(pairs) + 2.0, 0.45 * len(result.cells) + 1.6),
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    for ax, pair in zip(axes[0], pairs):

        def values(r, pair=pair):
            d = (r.dynamics or {}).get("crossings", {}).get(pair)
            return [] if d is None else [(d["difference"], d["ci_low"], d["ci_high"])]

        _dots(ax, result, values, lambda c, pair=pair: c.dynamics.get(pair, {}).get("difference"))
        ax.axvline(0, color="#D55E00", lw=1)
        first, second = pair.split("−")
        ax.set_title(f"{first.replace('_', ' ')} crossing − {second} crossing (half rise)", fontsize=8)
        ax.set_xlabel("optimizer steps (< 0: before)")
    save_figure(fig, directory, "dynamics")
