"""Which evaluation lengths N′ a model can run, and the one-line messages about those it cannot.

A learned positional encoding is a table of N_train rows: there is no encoding for position N_train or
beyond. The sinusoidal encoding is defined everywhere, but the model adds rows of a ``pe_max_len``
table; a model without positional encoding runs at any length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analyses.length_generalisation.result import SkippedLength


def check_lengths(lengths: Sequence[int]) -> list[int]:
    """Validate the requested lengths (positive integers, each once); return them sorted."""
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must list at least one sequence length")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"lengths must be positive integers, got {n!r}")
    repeated = sorted({int(n) for n in lengths if lengths.count(n) > 1})
    if repeated:
        raise ValueError(f"lengths lists {', '.join(map(str, repeated))} more than once")
    return sorted(int(n) for n in lengths)


def plan_lengths(cfg: Any, lengths: Sequence[int]) -> tuple[list[int], list[SkippedLength]]:
    """Split the requested lengths into those the model can run and those it cannot (with a reason).

    A learned encoding is a table of N_train rows: there is no encoding for position N_train or beyond.
    The sinusoidal encoding is defined everywhere, but the model adds rows of a ``pe_max_len`` table.
    """
    usable, skipped = [], []
    limit = cfg.max_positions
    for n in check_lengths(lengths):
        if limit is None or n <= limit:
            usable.append(n)
        elif cfg.positional_embedding == "learned":
            skipped.append(
                SkippedLength(
                    n,
                    f"the learned positional encoding has {limit} rows (positions 0..{limit - 1}); "
                    f"length {n} needs positions up to {n - 1}, which have no encoding",
                )
            )
        else:
            skipped.append(
                SkippedLength(
                    n, f"the {cfg.positional_embedding} encoding table has {limit} rows (pe_max_len)"
                )
            )
    return usable, skipped


def nothing_to_run_message(cfg: Any, lengths: Sequence[int]) -> str:
    """The one line for a request in which no length can run."""
    return (
        f"lengths {', '.join(map(str, check_lengths(lengths)))}: every one exceeds the {cfg.max_positions} "
        f"positions the model's {cfg.positional_embedding} positional encoding supports"
    )


def skipped_message(cfg: Any, skipped: Sequence[SkippedLength]) -> str:
    """The one line the CLI prints about the lengths it skips (the full reasons go to metrics.json)."""
    which = ", ".join(str(s.length) for s in skipped)
    return (
        f"skipping length{'s' if len(skipped) > 1 else ''} {which}: the model's {cfg.positional_embedding} "
        f"positional encoding has rows for positions 0..{cfg.max_positions - 1} only, so it cannot run them"
    )
