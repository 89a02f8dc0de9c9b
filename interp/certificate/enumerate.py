"""Exact enumeration of all C^N inputs: the ground truth of the proof, and the cheaper method when C^N
is small.

Every input is run through the model's own float32 forward in batches of ``batch_size`` (constant
memory), and every count is an exact integer: position i is right iff the target digit's logit is
strictly above every other logit (an argmax tie is wrong).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from interp.certificate.census import compress
from interp.certificate.model_parts import check_supported, flops_per_position
from interp.certificate.result import Cell, Certificate, cell_status, fraction

ENUMERATION_ARITHMETIC = (
    "exhaustive: every one of the C^N inputs evaluated by the model's own float32 forward on this machine "
    "(this CPU's kernels and summation order); position i right iff logit[t_(N-1-i)] > every other logit "
    "(ties wrong); counts are exact integers"
)


def all_inputs(start: int, stop: int, seq_len: int, num_categories: int) -> torch.Tensor:
    """Inputs number ``start..stop−1`` in base C, position 0 the most significant digit: [stop−start, N]."""
    index = torch.arange(start, stop, dtype=torch.int64)
    powers = num_categories ** torch.arange(seq_len - 1, -1, -1, dtype=torch.int64)
    return (index.unsqueeze(1) // powers) % num_categories


def right_positions(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos] bool: the target t_{N−1−i}'s logit strictly above every other digit's (ties wrong)."""
    target = tokens.flip(-1)
    right_logit = logits.gather(-1, target.unsqueeze(-1))
    others = logits.scatter(-1, target.unsqueeze(-1), float("-inf"))
    return right_logit.squeeze(-1) > others.amax(-1)


def cell_index(tokens: torch.Tensor, num_categories: int) -> torch.Tensor:
    """[batch, pos] index of the (i, a = t_i, b = t_{N−1−i}) cell: (i·C + a)·C + b."""
    seq_len = tokens.shape[1]
    positions = torch.arange(seq_len).unsqueeze(0)
    return (positions * num_categories + tokens) * num_categories + tokens.flip(-1)


def cell_sizes(seq_len: int, num_categories: int) -> dict[tuple[int, int, int], int]:
    """Inputs of each existing cell: C^(N−2), or C^(N−1) for the middle query of an odd N (a = b only)."""
    sizes = {}
    for i in range(seq_len):
        j = seq_len - 1 - i
        for a in range(num_categories):
            for b in range(num_categories):
                if i == j and a != b:
                    continue
                sizes[(i, a, b)] = num_categories ** (seq_len - (1 if i == j else 2))
    return sizes


def enumerate_certificate(
    model: Any,
    seq_len: int | None = None,
    *,
    batch_size: int = 8192,
    max_examples: int = 20,
    max_census: int = 200_000,
    max_regions: int = 10_000,
) -> Certificate:
    """The exact accuracy of ``model`` over all C^N inputs by running every one of them.

    Args:
        seq_len: N (default: the model's ``n_ctx``).
        batch_size: inputs per forward (memory is constant in C^N).
        max_examples: wrong (input, position) pairs listed in ``wrong_examples`` (the first ones).
        max_census: wrong pairs kept to build ``wrong_regions``; above it, the census lists none and
            ``regions_complete`` is False (the counts stay exact).
        max_regions: regions listed at most (``regions_complete`` False when cut).
    """
    start_time = time.perf_counter()
    n = check_supported(model, seq_len)
    cfg = model.cfg
    c = cfg.d_vocab
    total = c**n
    wrong_per_cell = torch.zeros(n * c * c, dtype=torch.int64)
    sequences_right = 0
    examples: list[dict[str, Any]] = []
    kept: list[np.ndarray] = []  # rows: input code digits + [position]
    kept_count = 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            tokens = all_inputs(start, min(start + batch_size, total), n, c)
            logits = model(tokens.to(device)).float().cpu()
            right = right_positions(logits, tokens)
            sequences_right += int(right.all(-1).sum())
            wrong = ~right
            if not wrong.any():
                continue
            wrong_per_cell += torch.bincount(cell_index(tokens, c)[wrong], minlength=n * c * c)
            rows, positions = wrong.nonzero(as_tuple=True)
            for r, p in zip(rows[: max(0, max_examples - len(examples))].tolist(), positions.tolist()):
                examples.append({"tokens": tokens[r].tolist(), "position": int(p)})
            if kept_count <= max_census:
                kept.append(torch.cat([tokens[rows], positions.unsqueeze(1)], 1).numpy())
                kept_count += len(rows)
    wrong_total = int(wrong_per_cell.sum())
    cells = []
    for (i, a, b), size in cell_sizes(n, c).items():
        wrong_count = int(wrong_per_cell[(i * c + a) * c + b])
        cells.append(
            Cell(
                i,
                a,
                b,
                size,
                size - wrong_count,
                wrong_count,
                cell_status(size, size - wrong_count, wrong_count),
            )
        )
    regions, complete = [], kept_count <= max_census
    if complete and kept:
        census = np.concatenate(kept)
        for i in range(n):
            regions.extend(compress(i, census[census[:, -1] == i, :-1], c))
        if len(regions) > max_regions:
            regions, complete = regions[:max_regions], False
    elif not complete:
        regions = []
    right_pairs = n * total - wrong_total
    return Certificate(
        method="enumeration",
        seq_len=n,
        num_categories=c,
        inputs=total,
        per_digit_lower=fraction(right_pairs, n * total, "down"),
        per_digit_upper=fraction(right_pairs, n * total, "up"),
        sequence_lower=fraction(sequences_right, total, "down"),
        sequence_upper=fraction(sequences_right, total, "up"),
        wrong_count_lower=wrong_total,
        wrong_count_upper=wrong_total,
        wrong_regions=tuple(regions),
        regions_complete=complete,
        wrong_examples=tuple(examples),
        cells=tuple(cells),
        unsupported=None,
        seconds=time.perf_counter() - start_time,
        boxes=total,
        flops=n * total * flops_per_position(cfg, n),
        brute_force_flops=n * total * flops_per_position(cfg, n),
        arithmetic=ENUMERATION_ARITHMETIC,
        sequence_right_lower=sequences_right,
        sequence_right_upper=sequences_right,
    )
