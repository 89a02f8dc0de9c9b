"""Circuits compared across runs, after alignment (``interp.alignment``), raw numbers beside aligned ones.

- Against the *reference* run (default: the first seed of the tutorial's cell, ``tutorial · sinusoidal
  L1 H1``; else the first run): the *served pattern* of a run — row i taken from the head that serves
  query i — against the reference's, by pattern cosine (1: the same attention, whichever heads carry
  it). This says whether a run computes the tutorial's attention, with heads matched per query.
- Between the seeds of one cell (every pair, at most ``MAX_PAIRS``): heads matched per layer by the
  Hungarian algorithm on pattern cosine; then per pair, raw (head h against head h) and aligned (head
  h against its match) means of: the pattern cosine, the positional QK scores' row-centred cosine
  (layer 0), and the token OV maps E W_V W_O (layer 0; raw: cosine in the two runs' own residual bases;
  aligned: orthogonal Procrustes, the best rotation between the bases); and of the final residual
  stream on the same sequences: raw cosine, Procrustes (aligned) and linear CKA (with its caveat).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from analyses.zoo_atlas.result import PairComparison, RunAtlas
from interp.alignment import (
    aligned_similarity,
    linear_cka,
    match_heads,
    pattern_similarity,
    procrustes_similarity,
    raw_cosine,
    raw_similarity,
    row_centred_cosine,
)

MAX_PAIRS = 45  # 10 seeds: every pair
DEFAULT_REFERENCE_CELL = "tutorial · sinusoidal L1 H1"


def served_pattern(run: RunAtlas) -> np.ndarray:
    """[query, key]: row i of the mean pattern of the head serving query i."""
    return np.stack([run.mean_patterns[layer, head, i] for i, (layer, head) in enumerate(run.served_by)])


def choose_reference(runs: Sequence[RunAtlas], name: str | None) -> RunAtlas:
    """The run named ``name``; by default the first run of the tutorial's cell, else the first run."""
    if name is not None:
        for r in runs:
            if r.info.name == name:
                return r
        raise ValueError(f"--reference {name!r} is not a run of the zoo")
    return next((r for r in runs if r.info.cell == DEFAULT_REFERENCE_CELL), runs[0])


def reference_similarity(run: RunAtlas, reference: RunAtlas) -> float:
    """Cosine of the served patterns of ``run`` and ``reference`` (same sequence length)."""
    if run.seq_len != reference.seq_len:
        return float("nan")
    return float(pattern_similarity(served_pattern(run)[None], served_pattern(reference)[None])[0, 0])


def compare_pair(a: RunAtlas, b: RunAtlas) -> PairComparison:
    """Raw and aligned similarities of two runs of one architecture (see the module docstring)."""
    patterns_raw, patterns_aligned, perms = [], [], []
    for layer in range(a.n_layers):
        s = pattern_similarity(a.mean_patterns[layer], b.mean_patterns[layer])
        perm = match_heads(s)
        perms.append(perm.tolist())
        patterns_raw.append(raw_similarity(s))
        patterns_aligned.append(aligned_similarity(s, perm))
    perm0 = np.asarray(perms[0])
    qk_raw = qk_aligned = None
    if a.qk_positions is not None and b.qk_positions is not None:
        q = row_centred_cosine(a.qk_positions, b.qk_positions)
        qk_raw, qk_aligned = raw_similarity(q), aligned_similarity(q, perm0)
    heads = range(a.n_heads)
    ov_raw = float(np.mean([raw_cosine(a.token_ov[h], b.token_ov[h]) for h in heads]))
    ov_aligned = float(np.mean([procrustes_similarity(a.token_ov[h], b.token_ov[perm0[h]]) for h in heads]))
    x, y = a.representation, b.representation
    return PairComparison(
        cell=a.info.cell,
        first=a.info.name,
        second=b.info.name,
        matching=perms,
        pattern_raw=float(np.mean(patterns_raw)),
        pattern_aligned=float(np.mean(patterns_aligned)),
        qk_raw=qk_raw,
        qk_aligned=qk_aligned,
        ov_raw=ov_raw,
        ov_aligned=ov_aligned,
        representation_raw=raw_cosine(x, y) if x.shape == y.shape else None,
        representation_procrustes=procrustes_similarity(x, y),
        representation_cka=linear_cka(x, y),
    )


def compare_cells(runs: Sequence[RunAtlas]) -> list[PairComparison]:
    """:func:`compare_pair` for the pairs of seeds of every cell (at most ``MAX_PAIRS`` per cell)."""
    cells: dict[str, list[RunAtlas]] = {}
    for r in runs:
        cells.setdefault(r.info.cell, []).append(r)
    out = []
    for members in cells.values():
        if len({(m.seq_len, m.d_vocab) for m in members}) != 1:
            continue
        for a, b in itertools.islice(itertools.combinations(members, 2), MAX_PAIRS):
            out.append(compare_pair(a, b))
    return out
