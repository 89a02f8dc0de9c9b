"""The cheap mechanism scalars of one run, each from ``interp``'s functions, on ``num_sequences``
random sequences (the same for every run):

- accuracy and accuracy with the positional encoding zeroed (``interp.ablation``);
- per head, from its mean pattern Ā [query, key] (``interp.metrics``; each is linear in the pattern,
  so the mean of the per-sequence values): flip mass mean_i Ā[i, f(i)], neighbour mass (offsets ±1, ±2),
  spill width mean_i Σ_k Ā[i, k] |k − f(i)| (how far from the flipped key the weight sits, in keys: 0
  for a perfect pointer, ≈ N/3 uniform), and the argmax hit rate (per sequence, then averaged);
- which queries each head serves: query i is served by the head with the largest Ā[i, f(i)]; the
  *main head* serves the most queries (ties: the larger flip mass); flip coverage mean_i max_h Ā_h[i, f(i)];
- layer 0 (the PE enters there): the position share of the within-row score variance,
  Σ pos_pos̃ · S̃ / Σ S̃² (``interp.circuits`` splits the scores exactly; tildes: centred over each row's
  keys, the only variance a softmax sees), and β, the temperature of attention ≈ softmax(β ·
  cos(PE_{f(i)}, PE_j)) fitted to the mean pattern (``interp.temperature``); neither for PE "none";
- IIA of z per head (``interp.interchange.head_iia``: interchanging one head's z at position p makes
  the output at p follow the source digit at N−1−p) and the selector head (``selector_head``);
- for the circuit comparison, kept in memory: the positional QK scores of layer 0
  (``interp.circuits.positional_scores``), the token OV map E W_V W_O of layer 0, and the final
  residual stream on the first ``REPRESENTATION_SEQUENCES`` sequences.

Not measured here (too slow for hundreds of runs): the tolerance margin (a threshold search of
``analyses.tolerance``: hundreds of patched forwards per pattern family) and the certified bound
(``analyses.certificate``'s branch and bound); run those analyses on the runs the atlas names.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.cli import UserError
from analyses.frame.sequences import token_batches
from analyses.zoo_atlas.classes import CLASSES, classify
from analyses.zoo_atlas.compare import choose_reference, compare_cells, reference_similarity
from analyses.zoo_atlas.dynamics import run_dynamics
from analyses.zoo_atlas.result import (
    COMPARED,
    SCALARS,
    CellSummary,
    PairComparison,
    RecipeDifference,
    RunAtlas,
    SeedInterval,
    Share,
    ZooAtlasResult,
)
from analyses.zoo_atlas.runs import RunInfo, find_runs
from interp import metrics
from interp.ablation import ablate_positional_encoding
from interp.circuits import LAYER0_HOOKS, decompose_from_cache, positional_encodings, positional_scores
from interp.interchange import head_iia, make_sources, selector_head
from interp.populations import SHARE_INTERVALS, t_interval, welch_interval
from interp.temperature import fit_temperatures
from models.storage.checkpoints import CheckpointError, load_model, sha256_file

REPRESENTATION_SEQUENCES = 128


def spill_width(pattern: torch.Tensor) -> torch.Tensor:
    """[..., query, key] → [...]: mean_i Σ_k A[i, k] |k − (N − 1 − i)|, the mean distance in keys of the
    weight from the flipped key (0 for the perfect pointer; Σ_k |k − f(i)| / N averaged for uniform)."""
    n = pattern.shape[-1]
    distance = (torch.arange(n).view(1, n) - metrics.flipped_keys(n).view(n, 1)).abs().to(pattern.dtype)
    return (pattern * distance).sum(-1).mean(-1)


def served_by(flip: np.ndarray) -> tuple[np.ndarray, tuple[int, int], float]:
    """From Ā_h[i, f(i)] ``[layer, head, query]``: the (layer·heads + head) serving each query (largest
    value), the main head (serving most queries; ties: larger mean flip mass) and the share it serves."""
    layers, heads, n = flip.shape
    flat = flip.reshape(layers * heads, n)
    server = flat.argmax(0)
    counts = np.bincount(server, minlength=layers * heads)
    main = max(range(layers * heads), key=lambda h: (counts[h], flat[h].mean()))
    return server, (main // heads, main % heads), float(counts[main] / n)


def position_share(cache: Any, model: Any) -> np.ndarray:
    """[head] Σ pos_pos̃ · S̃ and Σ S̃² of layer 0 over the batch (tildes: centred over each row's keys)."""
    parts = decompose_from_cache(model, cache)
    s = parts.scores.double()
    s = s - s.mean(-1, keepdim=True)
    c = parts.terms["pos_pos"].double()
    c = c - c.mean(-1, keepdim=True)
    return np.stack([(c * s).sum((0, 2, 3)).cpu().numpy(), (s * s).sum((0, 2, 3)).cpu().numpy()])


@torch.inference_mode()
def _evaluate(model: Any, num_sequences: int, seed: int, batch_size: int) -> dict[str, Any]:
    cfg = model.cfg
    layers = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    final = f"blocks.{cfg.n_layers - 1}.hook_resid_post"
    has_pe = cfg.positional_embedding != "none"
    wanted = set(layers) | {final} | (set(LAYER0_HOOKS) if has_pe else set())
    pattern_sum = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.n_ctx, cfg.n_ctx, dtype=torch.float64)
    sums = {"accuracy": 0.0, "zero_pe_accuracy": 0.0}
    hits = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    share = np.zeros((2, cfg.n_heads))
    representation = []
    seen = 0
    for tokens in token_batches(num_sequences, cfg.n_ctx, cfg.d_vocab, seed, batch_size):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
        sums["accuracy"] += float(metrics.reversal_correct(logits, tokens).double().mean(-1).sum())
        if has_pe:
            with ablate_positional_encoding(model, "zero"):
                zero = metrics.reversal_correct(model(tokens), tokens)
            sums["zero_pe_accuracy"] += float(zero.double().mean(-1).sum())
            if cfg.normalization == "post":
                share += position_share(cache, model)
        patterns = torch.stack([cache[h] for h in layers], 1).double()  # [batch, layer, head, q, k]
        pattern_sum += patterns.sum(0)
        hits += metrics.argmax_hit(patterns.flatten(1, 2)).double().mean(-1).sum(0).view_as(hits)
        if seen < REPRESENTATION_SEQUENCES:
            take = min(len(tokens), REPRESENTATION_SEQUENCES - seen)
            representation.append(cache[final][:take].reshape(-1, cfg.d_model).double().numpy())
        seen += len(tokens)
    return {
        "accuracy": sums["accuracy"] / num_sequences,
        "zero_pe_accuracy": sums["zero_pe_accuracy"] / num_sequences if has_pe else float("nan"),
        "mean_patterns": (pattern_sum / num_sequences).numpy(),
        "argmax_hit_rate": (hits / num_sequences).numpy(),
        "position_share": share[0] / share[1] if has_pe and cfg.normalization == "post" else None,
        "representation": np.concatenate(representation),
    }


def _weights(model: Any) -> tuple[np.ndarray | None, np.ndarray]:
    """Layer 0's positional QK scores [head, query, key] (None without a PE or for pre-LN) and token OV
    map E W_V W_O [head, digit, d_model], E the digits' embedding rows (weight + bias)."""
    cfg = model.cfg
    qk = None
    if cfg.positional_embedding != "none" and cfg.normalization == "post":
        qk = positional_scores(model, cfg.n_ctx).double().cpu().numpy()
    attn = model.blocks[0].attn
    embed = (model.W_E + model.embed.proj.bias).detach().double()
    ov = torch.einsum("cd,hde,hef->hcf", embed, attn.W_V.detach().double(), attn.W_O.detach().double())
    return qk, ov.cpu().numpy()


def beta(model: Any, mean_pattern: np.ndarray) -> np.ndarray:
    """[head] of layer 0: β of attention ≈ softmax(β · cos(PE_{N−1−i}, PE_j)) (NaN without a PE)."""
    n = model.cfg.n_ctx
    pe = positional_encodings(model, n).double().cpu()
    pe = pe / pe.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    similarity = (pe.flip(0) @ pe.T).numpy()  # row i: cos(PE_{N−1−i}, PE_j)
    return fit_temperatures(similarity, mean_pattern)


def measure_run(
    info: RunInfo,
    num_sequences: int,
    seed: int,
    batch_size: int,
    iia_pairs: int,
    confidence: float,
    device: str = "cpu",
) -> RunAtlas:
    """Every scalar of the module docstring for one finished run folder."""
    try:
        # A run that failed to learn is measured (and classified "fails"), not refused.
        model = load_model(info.folder / "model.pt", device=device, check_accuracy=False)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    cfg = model.cfg
    found = _evaluate(model, num_sequences, seed, batch_size)
    mean = found["mean_patterns"]  # [layer, head, q, k]
    pattern = torch.from_numpy(mean)
    flip = metrics.flip_mass(pattern.flatten(0, 1)[None])[0].view(cfg.n_layers, cfg.n_heads, -1).numpy()
    neighbour = metrics.neighbour_mass(pattern.flatten(0, 1)[None])[0].mean(-1).view(cfg.n_layers, -1).numpy()
    spill = spill_width(pattern).numpy()
    server, main, share = served_by(flip)
    betas = beta(model, mean[0]) if cfg.positional_embedding != "none" else np.full(cfg.n_heads, np.nan)
    iia = np.full((cfg.n_layers, cfg.n_heads), np.nan)
    selector, holds = None, None
    if iia_pairs:
        base = next(token_batches(iia_pairs, cfg.n_ctx, cfg.d_vocab, seed + 1, iia_pairs))
        summaries = head_iia(
            model, base, make_sources(base, cfg.d_vocab, seed + 1), resamples=200, confidence=confidence
        )
        for (layer, head), s in summaries.items():
            iia[layer, head] = s.iia.mean
        selector, holds = selector_head(summaries)
    qk, ov = _weights(model)
    heads = []
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            index = layer * cfg.n_heads + head
            heads.append(
                {
                    "layer": layer,
                    "head": head,
                    "flip_mass": float(flip[layer, head].mean()),
                    "neighbour_mass": float(neighbour[layer, head]),
                    "spill_width": float(spill[layer, head]),
                    "argmax_hit_rate": float(found["argmax_hit_rate"][layer, head]),
                    "position_share": None
                    if layer or found["position_share"] is None
                    else float(found["position_share"][head]),
                    "beta": None if layer or not np.isfinite(betas[head]) else float(betas[head]),
                    "iia_z": None if not np.isfinite(iia[layer, head]) else float(iia[layer, head]),
                    "queries_served": [int(i) for i in np.flatnonzero(server == index)],
                }
            )
    m = heads[main[0] * cfg.n_heads + main[1]]
    scalars = {
        "accuracy": found["accuracy"],
        "zero_pe_accuracy": found["zero_pe_accuracy"],
        "flip_mass": m["flip_mass"],
        "neighbour_mass": m["neighbour_mass"],
        "spill_width": m["spill_width"],
        "argmax_hit_rate": m["argmax_hit_rate"],
        "position_share": np.nan if m["position_share"] is None else m["position_share"],
        "beta": np.nan if m["beta"] is None else m["beta"],
        "iia_z": np.nan if selector is None else float(iia[selector]),
        "flip_coverage": float(flip.max((0, 1)).mean()),
        "served_share": share,
    }
    n_heads = cfg.n_heads
    return RunAtlas(
        info=info,
        positional_embedding=cfg.positional_embedding,
        n_layers=cfg.n_layers,
        n_heads=n_heads,
        d_model=cfg.d_model,
        seq_len=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        scalars={k: float(v) for k, v in scalars.items()},
        heads=heads,
        main_head=main,
        served_by=[(int(s) // n_heads, int(s) % n_heads) for s in server],
        selector_head=selector,
        selector_holds=holds,
        mechanism=classify(scalars),
        mean_patterns=mean,
        sha256=sha256_file(info.folder / "model.pt"),
        qk_positions=qk,
        token_ov=ov,
        representation=found["representation"],
    )


# --- the whole zoo --------------------------------------------------------------------------------
_PE_ORDER = {"sinusoidal": 0, "learned": 1, "none": 2}
RECIPE_COMPARED = ("flip_mass", "neighbour_mass", "spill_width", "beta", "first_perfect_step")
# A seed stands out beyond a modified z = (x − median) / (1.4826 · MAD) of 3.5 (Iglewicz–Hoaglin), in
# cells of at least OUTLIER_SEEDS seeds.
OUTLIER_Z = 3.5
OUTLIER_SEEDS = 8


# The range of every bounded quantity: its interval over seeds is clipped to it (the mean cannot leave it).
BOUNDS = {
    **{
        k: (0.0, 1.0)
        for k in ("accuracy", "zero_pe_accuracy", "flip_mass", "neighbour_mass", "argmax_hit_rate")
    },
    **{k: (0.0, 1.0) for k in ("iia_z", "flip_coverage", "served_share", "reference_similarity")},
    **{k: (0.0, 1.0) for k in ("pattern_raw", "pattern_aligned", "ov_aligned", "representation_procrustes")},
    **{k: (-1.0, 1.0) for k in ("qk_raw", "qk_aligned", "ov_raw", "representation_raw")},
    "representation_cka": (0.0, 1.0),
    "spill_width": (0.0, math.inf),
    "beta": (0.0, math.inf),
    "first_perfect_step": (0.0, math.inf),
}


def seed_interval(
    values: Sequence[float], confidence: float, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> SeedInterval:
    """:func:`interp.populations.t_interval` of the finite seed-level values, clipped to ``bounds`` (the
    range of the quantity: a flip mass's interval stays inside [0, 1]); no interval (NaN bounds,
    ``all_equal``) when every seed gave the same value."""
    x = np.asarray(values, dtype=np.float64)
    mean, low, high, _ = t_interval(x, confidence)
    low, high = max(low, bounds[0]), min(high, bounds[1])  # NaN stays NaN
    finite = x[np.isfinite(x)]
    equal = len(finite) >= 2 and bool((finite == finite[0]).all())
    if equal:
        low = high = math.nan
    return SeedInterval(mean, low, high, len(finite), [float(v) for v in x], equal)


def share(k: int, n: int, confidence: float, kind: str) -> Share:
    low, high = SHARE_INTERVALS[kind](k, n, confidence)
    return Share(k, n, k / n, low, high)


def outlier_reason(run: RunAtlas, members: Sequence[RunAtlas]) -> str | None:
    """Why ``run`` stands out of its cell: another class than most of its seeds, or a flip mass or a
    similarity to the reference beyond ``OUTLIER_Z`` robust z (cells of at least ``OUTLIER_SEEDS`` seeds:
    a median absolute deviation of fewer seeds is too noisy to call one seed an outlier)."""
    classes = [m.mechanism for m in members]
    modal = max(CLASSES, key=classes.count)
    if run.mechanism != modal and classes.count(modal) > len(members) / 2:
        return f"{run.mechanism} while {classes.count(modal)}/{len(members)} seeds are {modal}"
    if len(members) >= OUTLIER_SEEDS:
        for name in ("flip_mass", "reference_similarity"):
            x = np.array([m.scalars[name] for m in members])
            median = float(np.median(x))
            mad = 1.4826 * float(np.median(np.abs(x - median)))
            z = (run.scalars[name] - median) / mad if mad > 0 else 0.0
            if abs(z) > OUTLIER_Z:
                value = run.scalars[name]
                return f"{name} {value:.3f} against the cell's median {median:.3f} (robust z {z:+.1f})"
    return None


def _cell_order(r: RunAtlas) -> tuple:
    return (
        r.info.recipe,
        r.info.role == "control",
        _PE_ORDER.get(r.positional_embedding, 9),
        r.n_layers,
        r.n_heads,
        r.d_model,
        r.info.seed,
    )


def summarise_cell(
    members: list[RunAtlas], pairs: list[PairComparison], confidence: float, kind: str
) -> CellSummary:
    first = members[0]
    names = (*SCALARS, "first_perfect_step")
    stats = {
        k: seed_interval([m.value(k) for m in members], confidence, BOUNDS.get(k, (-math.inf, math.inf)))
        for k in names
    }
    similarities = {}
    for key in [k for pair in COMPARED for k in pair] + ["representation_cka"]:
        values = [getattr(p, key) for p in pairs if getattr(p, key) is not None]
        if values:
            similarities[key] = seed_interval(values, confidence, BOUNDS[key])
    dynamics: dict[str, Any] = {}
    finals = [m.dynamics["final"] for m in members if m.dynamics]
    measured = [m.dynamics["crossings"] for m in members if m.dynamics]
    for pair in {k for d in measured for k in d}:
        rows = [d[pair] for d in measured if pair in d]
        diffs = [r["difference"] for r in rows if r["difference"] is not None]
        before = sum(r["verdict"] == "before" for r in rows)
        dynamics[pair] = {
            "difference": seed_interval(diffs, confidence),
            "before": share(before, len(rows), confidence, kind),
            "verdicts": [r["verdict"] for r in rows],
        }
    final = None
    if finals:
        final = {
            "steps": sorted({f["step"] for f in finals}),
            "flip_mass": seed_interval([f["flip_mass"] for f in finals], confidence, BOUNDS["flip_mass"]),
        }
    return CellSummary(
        name=first.info.cell,
        recipe=first.info.recipe,
        positional_embedding=first.positional_embedding,
        n_layers=first.n_layers,
        n_heads=first.n_heads,
        d_model=first.d_model,
        runs=[m.info.name for m in members],
        classes={
            c: share(sum(m.mechanism == c for m in members), len(members), confidence, kind) for c in CLASSES
        },
        stats=stats,
        similarities=similarities,
        dynamics=dynamics,
        final_flip_mass=final,
    )


def recipe_differences(cells: dict[str, list[RunAtlas]], confidence: float) -> list[RecipeDifference]:
    """For every architecture trained with several recipes: each other recipe minus the first (in name
    order; "fast" before "tutorial"), Welch interval over seeds, for ``RECIPE_COMPARED``."""
    by_architecture: dict[str, list[list[RunAtlas]]] = {}
    for members in cells.values():
        architecture = members[0].info.cell.split(" · ", 1)[1]
        by_architecture.setdefault(architecture, []).append(members)
    out = []
    for architecture, groups in by_architecture.items():
        groups.sort(key=lambda g: g[0].info.recipe)
        for other in groups[1:]:
            for metric in RECIPE_COMPARED:
                b = np.array([m.value(metric) for m in other])
                a = np.array([m.value(metric) for m in groups[0]])
                d, low, high = welch_interval(b, a, confidence)
                if math.isfinite(d):
                    out.append(
                        RecipeDifference(
                            architecture, groups[0][0].info.recipe, other[0].info.recipe, metric, d, low, high
                        )
                    )
    return out


def run(
    zoos: Sequence[str | Path],
    num_sequences: int = 1000,
    seed: int = 0,
    batch_size: int = 1000,
    iia_pairs: int = 256,
    confidence: float = 0.95,
    share_interval: str = "wilson",
    reference: str | None = None,
    dynamics: bool = False,
    dynamics_sequences: int = 500,
    workdir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> ZooAtlasResult:
    """Measure every finished run of the zoo folders, classify, compare and summarise (module docstring
    and :mod:`analyses.zoo_atlas.compare`). ``dynamics`` runs ``analyses.training_dynamics`` on every
    run with snapshots, writing into ``workdir`` (default: a temporary folder)."""
    arguments.positive_ints(num_sequences=num_sequences, batch_size=batch_size)
    arguments.non_negative_ints(iia_pairs=iia_pairs)
    arguments.check_confidence(confidence)
    if share_interval not in SHARE_INTERVALS:
        raise UserError(f"share interval {share_interval!r}: choose from {', '.join(SHARE_INTERVALS)}")
    if not zoos:
        raise UserError("no zoo folder given")
    infos, missing = find_runs([Path(z) for z in zoos])
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
    runs = []
    started = time.monotonic()
    for i, info in enumerate(infos, 1):
        runs.append(measure_run(info, num_sequences, seed, batch_size, iia_pairs, confidence, device))
        say(f"[{i}/{len(infos)} runs, {time.monotonic() - started:.0f} s] {info.name}: {runs[-1].mechanism}")
    runs.sort(key=_cell_order)
    try:
        ref = choose_reference(runs, reference)
    except ValueError as e:
        raise UserError(str(e)) from None
    for r in runs:
        r.scalars["reference_similarity"] = reference_similarity(r, ref)
    if dynamics:
        with tempfile.TemporaryDirectory(prefix="zoo-atlas-") as scratch:
            base = Path(workdir) if workdir is not None else Path(scratch)
            for r in runs:
                if r.info.snapshots >= 2:
                    say(f"training dynamics of {r.info.name} ({r.info.snapshots} snapshots)")
                    r.dynamics = run_dynamics(
                        r.info.folder, base / r.info.name.replace("/", "__"), dynamics_sequences, seed, 200
                    )
    cells: dict[str, list[RunAtlas]] = {}
    for r in runs:
        cells.setdefault(r.info.cell, []).append(r)
    pairs = compare_cells(runs)
    for members in cells.values():
        for r in members:
            r.outlier = outlier_reason(r, members)
    summaries = [
        summarise_cell(members, [p for p in pairs if p.cell == name], confidence, share_interval)
        for name, members in cells.items()
    ]
    return ZooAtlasResult(
        zoos=[str(Path(z).absolute()) for z in zoos],
        num_sequences=num_sequences,
        seed=seed,
        confidence=confidence,
        share_interval=share_interval,
        iia_pairs=iia_pairs,
        reference=ref.info.name,
        runs=runs,
        cells=summaries,
        pairs=pairs,
        recipe_differences=recipe_differences(cells, confidence),
        missing=missing,
        dynamics_sequences=dynamics_sequences if dynamics else None,
    )
