"""Figures of ``analyses.qk_circuit`` (matplotlib, Agg; every figure saved as PNG + SVG and closed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from analyses.frame.figures import estimate_arrays, save_figure
from analyses.qk_circuit.result import PREDICTIONS, QKCircuitResult
from interp.circuits import SCORE_TERMS
from interp.plotting import COLOURS

PREDICTION_LABELS = {
    "positions_and_mean_tokens": "softmax(pos_pos + mean token/bias terms)",
    "positions_only": "softmax(pos_pos)",
    "pe_similarity": "softmax(β · cos(PE_N−1−i, PE_j))",
}


def _outline_flip(ax: plt.Axes, n: int, colour: str = "#ff3b30") -> None:
    for i in range(n):
        ax.add_patch(Rectangle((n - 1 - i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colour, lw=1.0))


def _errors(ests: list) -> tuple[np.ndarray, np.ndarray]:
    """Means and matplotlib's ``yerr`` ``[2, n]`` (distances to the CI bounds; 0 where undefined)."""
    mean, low, high = estimate_arrays(ests)
    return mean, np.nan_to_num(np.clip(np.array([mean - low, high - mean]), 0, None))


def position_scores(result: QKCircuitResult) -> plt.Figure:
    """Mean position–position score per layer-0 head, raw and centred per query row."""
    heads = result.heads
    n = result.seq_len
    fig, axes = plt.subplots(
        len(heads), 2, figsize=(9.2, 4.2 * len(heads)), squeeze=False, layout="constrained"
    )
    for row, h in enumerate(heads):
        raw = h.mean_terms["pos_pos"]
        centred = raw - raw.mean(-1, keepdims=True)
        for col, (matrix, title) in enumerate(
            ((raw, "score"), (centred, "score − row mean (what softmax sees)"))
        ):
            ax = axes[row, col]
            vmax = float(np.abs(matrix).max()) or 1.0
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            _outline_flip(ax, n, colour="black")
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
            ax.tick_params(labelsize=7)
            ax.set_xlabel("key position j")
            ax.set_ylabel("query position i")
            ax.set_title(f"head {h.head}: position–position {title}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(
        "Layer 0 position–position term (P W_Q)(P W_K)ᵀ/√d_head; outlined: flipped keys", fontsize=10
    )
    return fig


def variance_shares(result: QKCircuitResult) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.2, 3.8), layout="constrained")
    n_heads = len(result.heads)
    width = 0.8 / n_heads
    x = np.arange(len(SCORE_TERMS))
    for i, h in enumerate(result.heads):
        mean, err = _errors([h.variance_share[t] for t in SCORE_TERMS])
        ax.bar(
            x + (i - (n_heads - 1) / 2) * width,
            mean,
            width,
            yerr=err,
            capsize=3,
            color=COLOURS[i % len(COLOURS)],
            label=f"head {h.head}",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, SCORE_TERMS)
    ax.set_ylabel("share of within-row score variance")
    ax.set_title("Which terms shape layer 0's scores (shares sum to 1; 95% CI)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def predictions(result: QKCircuitResult) -> plt.Figure:
    h = result.heads[result.verdict.head]
    panels = [("observed mean pattern", h.observed.pattern, None)]
    panels += [
        (PREDICTION_LABELS[k], h.predictions[k].pattern, h.predictions[k].jsd_bits) for k in PREDICTIONS
    ]
    vmax = max(float(p.max()) for _, p, _ in panels)
    n = result.seq_len
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 4.0), layout="constrained")
    image = None
    for ax, (title, pattern, jsd) in zip(axes, panels):
        image = ax.imshow(pattern, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_xticks(range(0, n, 3))
        ax.set_yticks(range(0, n, 3))
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        label = title if jsd is None else f"{title}\nJSD {jsd.mean:.4f} bits"
        ax.set_title(label, fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention")
    fig.suptitle(f"Layer 0 head {h.head}: what positions alone predict", fontsize=10)
    return fig


def similarity_vs_attention(result: QKCircuitResult) -> plt.Figure:
    h = result.heads[result.verdict.head]
    n = result.seq_len
    fig, (left, right, scatter) = plt.subplots(1, 3, figsize=(16.0, 4.0), layout="constrained")
    dist = np.arange(n)
    qk = h.similarity["query_key"].by_offset
    qk_by_dist = [qk[0]] + [(qk[-d] + qk[d]) / 2 for d in range(1, n)]
    left.plot(dist, result.raw_pe_cosine_by_distance, "o-", color=COLOURS[0], label="raw encodings PE")
    left.plot(dist, result.key_cosine_by_distance[h.head], "s-", color=COLOURS[1], label="keys PE W_K")
    left.plot(dist, qk_by_dist, "^-", color=COLOURS[2], label="query i vs key N−1−i±d")
    left.set_xlabel("distance d between positions (from the flipped key)")
    left.set_ylabel("cosine similarity")
    left.set_title("Similarity by distance", fontsize=10)
    left.legend(fontsize=8)
    offsets = sorted(h.observed.offset_mass)
    mean, err = _errors([h.observed.offset_mass[d] for d in offsets])
    right.errorbar(
        offsets, mean, yerr=err, fmt="o", color="black", capsize=3, label="observed (95% CI)", zorder=3
    )
    for i, key in enumerate(("positions_and_mean_tokens", "pe_similarity")):
        values = [h.predictions[key].offset_mass[d].mean for d in offsets]
        right.plot(offsets, values, "-", color=COLOURS[i + 3], label=PREDICTION_LABELS[key])
    right.set_yscale("log")
    right.set_xlabel("offset d (key = N−1−i+d)")
    right.set_ylabel("mean attention (log scale)")
    right.set_title(f"Attention by offset, layer 0 head {h.head}", fontsize=10)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    # The tutorial's sentence as a law: log attention linear in raw similarity, slope β.
    raw = h.similarity["raw_pe"].by_offset
    x = np.array([raw[d] for d in offsets])
    scatter.scatter(x, mean, c=np.abs(offsets), cmap="viridis_r", s=22, zorder=3)
    for d, xi, yi in zip(offsets, x, mean):
        if abs(d) <= 2:  # −d and +d sit almost on one point: −d's label to its left, +d's to its right
            scatter.annotate(
                f"{d:+d}" if d else "0",
                (xi, yi),
                xytext=(-4 if d < 0 else 4, 2),
                textcoords="offset points",
                ha="right" if d < 0 else "left",
                fontsize=7,
            )
    beta = h.temperature.mean
    line = np.linspace(x.min(), x.max(), 50)
    fitted = np.array([h.predictions["pe_similarity"].offset_mass[d].mean for d in offsets])
    anchor = np.argmax(x)  # put the line through the fitted value at the flipped key
    scatter.plot(
        line,
        fitted[anchor] * np.exp(beta * (line - x[anchor])),
        "--",
        color="grey",
        label=f"∝ exp(β·cos), β = {beta:.1f}",
    )
    scatter.set_yscale("log")
    scatter.set_xlabel("cos(PE_N−1−i, PE_key) at offset d")
    scatter.set_ylabel("observed mean attention (log scale)")
    scatter.set_title("Attention vs raw encoding similarity (colour: |d|)", fontsize=10)
    scatter.legend(fontsize=8)
    return fig


def score_gaps(result: QKCircuitResult) -> plt.Figure:
    h = result.heads[result.verdict.head]
    offsets = sorted(h.score_gaps)
    names = [*SCORE_TERMS, "total"]
    fig, ax = plt.subplots(figsize=(8.0, 3.9), layout="constrained")
    width = 0.8 / len(names)
    x = np.arange(len(offsets))
    for i, name in enumerate(names):
        mean, err = _errors([h.score_gaps[o][name] for o in offsets])
        colour = "black" if name == "total" else COLOURS[i]
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width, mean, width, yerr=err, capsize=2, color=colour, label=name
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [f"{o:+d}" for o in offsets])
    ax.set_xlabel("neighbour offset d")
    ax.set_ylabel("S[i, N−1−i] − S[i, N−1−i+d] (nats)")
    ax.set_title(
        f"Score gap between the flipped key and its neighbours, by term (head {h.head}; 95% CI)", fontsize=10
    )
    ax.legend(fontsize=7, ncols=3)
    return fig


def singular_values(result: QKCircuitResult) -> plt.Figure:
    sv = result.singular_values  # [layer, head, d_head]
    fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    for i, (layer, head) in enumerate(np.ndindex(*sv.shape[:2])):
        ax.plot(
            np.arange(1, sv.shape[2] + 1),
            sv[layer, head],
            "o-",
            ms=3,
            color=COLOURS[i % len(COLOURS)],
            label=f"layer {layer} head {head}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value of W_Q W_Kᵀ")
    ax.set_title("QK circuit spectrum (transformer_lens.FactoredMatrix)", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def swap_effect(result: QKCircuitResult) -> plt.Figure:
    offsets = sorted(result.swap)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 3.8), layout="constrained")
    x = np.arange(len(offsets))
    ticks = [f"{o:+d}" if o else "0 (flipped)" for o in offsets]
    for i, key in enumerate(("follows", "changed")):
        mean, err = _errors([result.swap[o][key] for o in offsets])
        label = "prediction at i = new digit" if key == "follows" else "prediction at i changed"
        bars = left.bar(x + (i - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, color=COLOURS[i], label=label)
        left.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    left.set_xticks(x, ticks)
    left.set_xlabel("offset o of the changed key (N−1−i+o)")
    left.set_ylabel("share of swaps")
    left.set_ylim(0, 1.15)
    left.set_title("Does the prediction at i move? (95% CI)", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    mean, err = _errors([result.swap[o]["logprob_drop"] for o in offsets])
    bars = right.bar(x, mean, 0.6, yerr=err, capsize=3, color=COLOURS[2])
    right.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    right.axhline(0, color="black", lw=0.8)
    right.set_yscale("symlog", linthresh=1e-3)
    top = float(np.nanmax(mean + err[1])) if len(mean) else 1.0
    right.set_ylim(top=max(top, 1e-3) * 8)  # room for the bar labels on the log part of the axis
    right.set_xticks(x, ticks)
    right.set_xlabel("offset o of the changed key (N−1−i+o)")
    right.set_ylabel("drop of log p(t_N−1−i) at i (nats)")
    right.set_title("How much belief in the original answer is lost (95% CI)", fontsize=10)
    fig.suptitle("Output side: change one key's digit, watch position i", fontsize=10)
    return fig


def rollout(result: QKCircuitResult) -> plt.Figure:
    assert result.rollout is not None
    n = result.seq_len
    fig, ax = plt.subplots(figsize=(5.0, 4.3), layout="constrained")
    image = ax.imshow(result.rollout["mean"], cmap="viridis", vmin=0)
    _outline_flip(ax, n)
    ax.set_xlabel("input position")
    ax.set_ylabel("output position")
    ax.set_title(f"Attention rollout over {result.singular_values.shape[0]} layers (mean)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


CAPTIONS = {
    "position_scores": (
        "Layer 0's position–position score term per head (left: raw; right: centred per query row, the "
        "part the softmax responds to). Outlined cells are the flipped keys N−1−i."
    ),
    "variance_shares": (
        "Share of the within-row variance of layer 0's scores carried by each exact term (covariance "
        "with the total / total variance; the shares sum to 1), with 95% bootstrap CIs."
    ),
    "predictions": (
        "The observed mean pattern next to three predictions that ignore the tokens: the mean scores, the "
        "position term alone, and the tutorial's sentence taken literally (encoding similarity with the "
        "best temperature β)."
    ),
    "similarity_vs_attention": (
        "Left: cosine similarity by distance for the raw encodings, the keys, and query vs key. Middle: "
        "attention by offset from the flipped key (log scale) with 95% CIs, and two predictions. Right: "
        "log attention against raw encoding similarity, with the fitted exponential law."
    ),
    "score_gaps": (
        "How much higher the flipped key scores than its neighbours, split into the exact terms; "
        "exp(gap) is the attention ratio. 95% CIs."
    ),
    "qk_singular_values": (
        "Singular values of W_Q W_Kᵀ per head and layer: how many directions each head compares."
    ),
    "swap_effect": (
        "Changing the digit at key N−1−i+o: how often the prediction at i becomes the new digit or "
        "changes at all (left), and how much log-probability the original answer loses (right, symmetric "
        "log scale); 95% CIs."
    ),
    "rollout": "Attention rollout across all layers (residual weight 0.5); outlined: flipped positions.",
}


def make_figures(result: QKCircuitResult, directory: Path) -> dict[str, str]:
    """Write every figure as PNG and SVG into ``directory``; return {name: caption}."""
    makers = {
        "position_scores": position_scores,
        "variance_shares": variance_shares,
        "predictions": predictions,
        "similarity_vs_attention": similarity_vs_attention,
        "score_gaps": score_gaps,
        "qk_singular_values": singular_values,
        "swap_effect": swap_effect,
    }
    if result.rollout is not None:
        makers["rollout"] = rollout
    captions = {}
    for name, make in makers.items():
        save_figure(make(result), directory, name)
        captions[name] = CAPTIONS[name]
    return captions
